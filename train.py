"""Train a hyperspherical VAE: ``python train.py latent=vmf dataset=mnist`` (see README.md)."""

from hsvae.cli.train import main

if __name__ == "__main__":
    main()
