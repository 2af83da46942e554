"""Summarise a finished (or interrupted) hyperparameter search: the best trial, its parameters, every
trial's metric, and a plot of the metric against each parameter (written into the sweep directory).

    python scripts/summarize_search.py logs/search_synthetic/multiruns/<date>

See ``hsvae/analysis/search_summary.py`` for what it reads.
"""

import sys

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.analysis.search_summary import main

if __name__ == "__main__":
    sys.exit(main())
