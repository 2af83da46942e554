"""hsvae: hyperspherical variational auto-encoders.

Layers, from the bottom up (each knows nothing of the ones above it):

* :mod:`hsvae.special` -- special functions in pure PyTorch (log-Bessel functions).
* :mod:`hsvae.distributions` -- latent distributions as ``torch.distributions``.
* :mod:`hsvae.latents` -- latent families: raw network outputs -> posterior, prior, KL.
* :mod:`hsvae.models` -- plain ``nn.Module`` networks (MLP VAE, VGAE, ...).
* :mod:`hsvae.data` -- datasets and Lightning data modules.
* :mod:`hsvae.training` -- Lightning modules and callbacks.
* :mod:`hsvae.cli` -- the Hydra entry points that wire configs to all of the above.
"""

__version__ = "0.1.0"
