"""Matplotlib figures of latent spaces and images (Agg backend: no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _pca2(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def _scatter(ax, u: np.ndarray, v: np.ndarray, labels: np.ndarray | None, **kwargs) -> None:
    """One colour per class with a legend (tab10 colours), or a single colour without labels."""
    if labels is None:
        ax.scatter(u, v, **kwargs)
        return
    cmap = plt.get_cmap("tab10" if labels.max() < 10 else "tab20")
    for k in np.unique(labels):
        sel = labels == k
        ax.scatter(u[sel], v[sel], color=cmap(int(k) % cmap.N), label=str(int(k)), **kwargs)
    ax.legend(markerscale=3, fontsize="small", loc="upper right", framealpha=0.6, title="class")


def plot_latent(points: torch.Tensor, labels: torch.Tensor | None, spherical: bool, title: str = "") -> Figure:
    """Scatter of latent means coloured by class, in a figure of its own (see :func:`draw_latent`).

    S^2 (3 coordinates, spherical) uses the Hammer equal-area projection of the sphere, as in the S-VAE
    paper's figures.
    """
    if spherical and points.shape[1] == 3:
        fig = plt.figure(figsize=(6.4, 3.8))
        ax = fig.add_subplot(projection="hammer")
    else:
        fig, ax = plt.subplots(figsize=(4.8, 4.8))
    draw_latent(ax, points, labels, spherical, title)
    fig.tight_layout()
    return fig


def draw_latent(ax, points: torch.Tensor, labels: torch.Tensor | None, spherical: bool, title: str = "") -> None:
    """Draw latent means on ``ax``: S^1 (2 coordinates, spherical) on the unit circle; S^2 in longitude and
    latitude (``ax`` should have the "hammer" projection); R^1 on a line; R^2 as is; higher dimensions as
    their first two principal components (the title says so)."""
    p = points.detach().float().cpu().numpy()
    c = None if labels is None else labels.detach().cpu().numpy()
    k = p.shape[1]
    kwargs = dict(s=4, alpha=0.7, linewidths=0)
    if spherical and k == 3:
        lon, lat = np.arctan2(p[:, 1], p[:, 0]), np.arcsin(np.clip(p[:, 2], -1, 1))
        _scatter(ax, lon, lat, c, **kwargs)
        ax.grid(True, alpha=0.3)
        ax.set_xticklabels([])
        ax.set_title(title, pad=16)  # clear of the projection's latitude labels
        return
    else:
        if spherical and k == 2:
            t = np.linspace(0, 2 * np.pi, 200)
            ax.plot(np.cos(t), np.sin(t), color="0.8", lw=1, zorder=0)
            ax.set_xlim(-1.15, 1.15)
            ax.set_ylim(-1.15, 1.15)
        elif k == 1:
            p = np.concatenate([p, np.zeros_like(p)], 1)
        elif k > 2:
            p = _pca2(p)
            title = f"{title} (PCA of {k} coordinates)".strip()
        _scatter(ax, p[:, 0], p[:, 1], c, **kwargs)
        # the circle has fixed limits: keep them and size the box instead
        ax.set_aspect("equal", adjustable="box" if spherical and k == 2 else "datalim")
    ax.set_title(title)


def image_grid(images: torch.Tensor, nrow: int = 8, title: str = "") -> Figure:
    """A grid of single-channel images ``(N, 1, H, W)`` or ``(N, H, W)`` with values in [0, 1]."""
    x = images.detach().float().cpu()
    if x.dim() == 4:
        x = x[:, 0]
    n, h, w = x.shape
    rows = -(-n // nrow)
    canvas = torch.ones(rows * (h + 1), nrow * (w + 1))
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = x[i]
    fig, ax = plt.subplots(figsize=(nrow * 0.6, rows * 0.6 + 0.3))
    ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
