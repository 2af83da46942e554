"""Evaluate a checkpoint: ``python eval.py ckpt_path=<run dir>/checkpoints/best.ckpt`` (see README.md)."""

from hsvae.cli.entry_points import eval_main

if __name__ == "__main__":
    eval_main()
