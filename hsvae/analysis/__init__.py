"""Tools over finished runs: tables of a multirun (``hsvae-tables``, scripts/make_tables.py), the summary of a
hyperparameter search (scripts/summarize_search.py), and the reading of the files a run leaves. No Hydra here:
these read results.json and the jobs' overrides."""
