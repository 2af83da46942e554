"""Train a hyperspherical VAE: ``python train.py latent=vmf dataset=mnist`` (see README.md)."""

from hsvae.cli.entry_points import train_main

if __name__ == "__main__":
    train_main()
