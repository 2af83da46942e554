"""Hydra's side of a multirun: the Optuna search sweeper's checks (hydra_plugins/hsvae_search wraps them) and the
Hydra callbacks of a sweep (conf/hydra/default.yaml). Only entry points and Hydra import this."""
