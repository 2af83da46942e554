"""Aggregate a multirun's results.json files into a Markdown table beside the paper's numbers.

See ``hsvae/analysis/tables.py`` (also installed as ``hsvae-tables``) for the options.
"""

import sys

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.analysis.tables import main

if __name__ == "__main__":
    sys.exit(main())
