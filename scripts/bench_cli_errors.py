"""Benchmark: how long a config error takes to reach the user (``python train.py latent=vfm``, ``foo=3``).

The entry points compose and check the config before they import torch and Lightning (hsvae/cli/entry_points.py),
so a typo is one line at once. Each command runs ``--repeats`` times as a user runs it (a fresh interpreter);
printed: the median wall and CPU time of each, beside the time to import torch and Lightning alone (what an error
used to wait for), and their ratio. Target: under 1 s on an idle core (the CPU time is what an idle core takes).

    python scripts/bench_cli_errors.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
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


def timed(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, its first error line)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return elapsed, cpu, (lines[0] if lines else f"exit {proc.returncode}")[:90]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    walls, cpus, messages = {}, {}, {}
    for _ in range(args.repeats):  # interleaved, so that a busy moment of the machine hits every command alike
        for name, command in COMMANDS.items():
            elapsed, cpu, message = timed(command)
            walls.setdefault(name, []).append(elapsed)
            cpus.setdefault(name, []).append(cpu)
            messages[name] = message
    baseline = statistics.median(walls["import torch, pytorch_lightning"])
    print(f"{'command':38s} {'wall s':>7s} {'CPU s':>6s} {'vs import':>9s}  first line")
    for name in COMMANDS:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"{name:38s} {wall:7.2f} {cpu:6.2f} {wall / baseline:8.2f}x  {messages[name]}")
    print("(medians of", args.repeats, "runs; CPU s is the process's own CPU time, which a busy machine does not inflate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
