"""Hydra's side of a multirun: the Optuna search (its space, its study, its ask-and-tell loop; the sweeper in
hydra_plugins/hsvae_search runs it), the Hydra callbacks of a sweep (conf/hydra/default.yaml) and the time budget.
Only entry points and Hydra import this; a training job imports the light ``errors`` module alone."""
