"""Decode latent paths (slerp on the sphere, a straight line in R^d) between pairs of test images of a trained
VAE into a PNG grid.

    python scripts/interpolate.py <run>/checkpoints/best.ckpt --pairs 8 --steps 10 --out interpolation.png

See ``hsvae/cli/interpolate.py`` for the options.
"""

import sys

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.cli.interpolate import main

if __name__ == "__main__":
    sys.exit(main())
