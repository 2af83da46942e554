"""Every script in ``scripts/`` imports against this checkout's package: a renamed or moved name of hsvae breaks
the benchmark or tool that uses it here, not on the next user who runs it (bench_link_prediction once imported
``link_metrics`` from a module that no longer had it, and nothing noticed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "scripts").glob("*.py") if not p.name.startswith("_"))

#: imports each script as a module (its ``__main__`` block does not run), all in one interpreter
IMPORT_ALL = """
import importlib.util, sys
failed = []
for path in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location("script_under_test", path)
    try:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    except Exception as err:
        failed.append(f"{path}: {type(err).__name__}: {err}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_script_imports():
    assert len(SCRIPTS) >= 8, SCRIPTS  # the glob found the scripts
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL, *map(str, SCRIPTS)], cwd=ROOT / "scripts",
                          env={**os.environ, "PYTHONPATH": str(ROOT / "scripts")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
