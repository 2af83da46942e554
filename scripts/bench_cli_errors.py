"""Benchmark: how long a config error takes to reach the user (``python train.py latent=vfm``, ``foo=3``).

The entry points compose and check the config before they import torch and Lightning (hsvae/cli/entry_points.py),
so a typo is one line at once. Each command runs ``--repeats`` times as a user runs it (a fresh interpreter);
printed: the median wall time of each, beside the time to import torch and Lightning alone (what an error used to
wait for), and their ratio. Target: under 1 s on an idle core.

    python scripts/bench_cli_errors.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "train.py latent=vfm": [sys.executable, "train.py", "latent=vfm"],
    "train.py foo=3": [sys.executable, "train.py", "foo=3"],
    "eval.py (no ckpt_path) trainer=nope": [sys.executable, "eval.py", "trainer=nope"],
    "import torch, pytorch_lightning": [sys.executable, "-c", "import torch, pytorch_lightning"],
}


def wall_time(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return elapsed, (lines[0] if lines else f"exit {proc.returncode}")[:100]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    medians, messages = {}, {}
    for _ in range(args.repeats):  # interleaved, so that a busy moment of the machine hits every command alike
        for name, command in COMMANDS.items():
            elapsed, message = wall_time(command)
            medians.setdefault(name, []).append(elapsed)
            messages[name] = message
    baseline = statistics.median(medians["import torch, pytorch_lightning"])
    print(f"{'command':40s} {'median s':>9s} {'vs import':>10s}  first line")
    for name, times in medians.items():
        median = statistics.median(times)
        print(f"{name:40s} {median:9.2f} {median / baseline:9.2f}x  {messages[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
