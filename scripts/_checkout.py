"""Put this checkout first on ``sys.path``: ``python scripts/<name>.py`` uses the hsvae beside it, as
``python train.py`` does from the repository root, whatever hsvae (if any) the environment has installed.
Each script imports this module before hsvae."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
