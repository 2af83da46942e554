"""The GPU runbook (scripts/gpu_check.sh) runs through on the CPU at toy sizes (--smoke): every step exits 0,
and the stacked Table 1 sweep ends in a table, so that the first GPU lease spends its minutes measuring."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.data
def test_the_runbook_runs_through_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--smoke", str(out)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = (out / "steps.txt").read_text().splitlines()
    names = ["environment", "cuda_tests", "bench_distributions", "bench_stacked",
             "mnist_table", "make_tables"]
    assert [line.split(":")[0] for line in steps[:-1]] == names, steps
    assert all(": exit 0 after" in line for line in steps[:-1]), steps
    table = (out / "table.md").read_text()
    assert "| gaussian | 2 |" in table and "| vmf | 2 |" in table, table
    assert len(list((out / "mnist_table").glob("*/seed_*/results.json"))) == 4
