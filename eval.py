"""Evaluate a checkpoint: ``python eval.py ckpt_path=<run dir>/checkpoints/best.ckpt`` (see README.md)."""

from hsvae.cli.evaluate import main

if __name__ == "__main__":
    main()
