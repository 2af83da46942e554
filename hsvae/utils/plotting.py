"""Matplotlib figures of latent spaces and images (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _pca2(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean of ``points``, the first two principal axes (rows) and the fraction of the variance each explains."""
    mean = points.mean(0, keepdims=True)
    _, sv, vt = np.linalg.svd(points - mean, full_matrices=False)
    variance = sv**2
    explained = variance[:2] / max(float(variance.sum()), 1e-30)
    return mean, vt[:2], explained


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


def plot_latent(points: torch.Tensor, labels: torch.Tensor | None, spherical: bool, title: str = "",
                prior_samples: torch.Tensor | None = None) -> Figure:
    """Scatter of latent means coloured by class, in a figure of its own (see :func:`draw_latent`).

    S^2 (3 coordinates, spherical) uses the Hammer equal-area projection of the sphere, as in the S-VAE
    paper's figures.
    """
    if spherical and points.shape[1] == 3:
        # (taller with a learnt prior: its note takes a second title line above the projection's labels)
        fig = plt.figure(figsize=(6.4, 3.8 if prior_samples is None else 4.3), layout="constrained")
        ax = fig.add_subplot(projection="hammer")
    else:
        fig, ax = plt.subplots(figsize=(5.2, 5.0), layout="constrained")
    draw_latent(ax, points, labels, spherical, title, prior_samples)
    return fig


def draw_latent(ax, points: torch.Tensor, labels: torch.Tensor | None, spherical: bool, title: str = "",
                prior_samples: torch.Tensor | None = None) -> None:
    """Draw latent means on ``ax``: S^1 (2 coordinates, spherical) on the unit circle; S^2 in longitude and
    latitude (``ax`` should have the "hammer" projection); R^1 on a line; R^2 as is; higher dimensions as
    their first two principal components (the axis labels say so, with the variance each explains).
    ``prior_samples`` (a learnt prior's draws) are drawn beneath in grey, in the same coordinates."""
    p = points.detach().float().cpu().numpy()
    c = None if labels is None else labels.detach().cpu().numpy()
    prior = None if prior_samples is None else prior_samples.detach().float().cpu().numpy()
    k = p.shape[1]
    kwargs = dict(s=4, alpha=0.7, linewidths=0)
    prior_kwargs = dict(s=3, alpha=0.35, linewidths=0, color="0.3", zorder=0)
    if prior is not None:
        title = f"{title}\n(grey: samples of the learnt prior)"
    if spherical and k == 3:
        def lon_lat(a):
            return np.arctan2(a[:, 1], a[:, 0]), np.arcsin(np.clip(a[:, 2], -1, 1))
        if prior is not None:
            ax.scatter(*lon_lat(prior), **prior_kwargs)
        _scatter(ax, *lon_lat(p), c, **kwargs)
        ax.grid(True, alpha=0.3)
        ax.set_xticklabels([])
        ax.set_xlabel("longitude atan2(z2, z1) (Hammer projection)", labelpad=16)
        ax.set_ylabel("latitude asin(z3)")
        ax.set_title(title, pad=20)  # clear of the projection's latitude labels
        return
    xlabel, ylabel = "z1", "z2"
    if spherical and k == 2:
        t = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(t), np.sin(t), color="0.8", lw=1, zorder=0)
        ax.set_xlim(-1.15, 1.15)
        ax.set_ylim(-1.15, 1.15)
    elif k == 1:
        p = np.concatenate([p, np.zeros_like(p)], 1)
        prior = None if prior is None else np.concatenate([prior, np.zeros_like(prior)], 1)
        ylabel = ""
        ax.set_yticks([])
    elif k > 2:
        mean, axes, explained = _pca2(p)
        p = (p - mean) @ axes.T
        prior = None if prior is None else (prior - mean) @ axes.T  # the means' principal plane
        xlabel = f"PC 1 of {k} coordinates ({explained[0]:.0%} of variance)"
        ylabel = f"PC 2 ({explained[1]:.0%} of variance)"
    if prior is not None:
        ax.scatter(prior[:, 0], prior[:, 1], **prior_kwargs)
    _scatter(ax, p[:, 0], p[:, 1], c, **kwargs)
    # the circle has fixed limits: keep them and size the box instead
    ax.set_aspect("equal", adjustable="box" if spherical and k == 2 else "datalim")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def image_grid(images: torch.Tensor, nrow: int = 8, title: str = "") -> Figure:
    """A grid of single-channel images ``(N, 1, H, W)`` or ``(N, H, W)`` with values in [0, 1]."""
    return image_rows([("", images)], nrow=nrow, title=title)


def image_rows(groups, nrow: int = 8, title: str = "") -> Figure:
    """Groups of images, each ``(label, images)`` with images ``(N, 1, H, W)`` or ``(N, H, W)`` in [0, 1], one
    below the other: every group starts on a new row (so the i-th image of equal-sized groups lines up, e.g.
    originals above their reconstructions) and is labelled on the left."""
    blocks, labels = [], []
    for label, images in groups:
        x = images.detach().float().cpu()
        if x.dim() == 4:
            x = x[:, 0]
        blocks.append(x)
        labels.append(label)
    h, w = blocks[0].shape[1:]
    cols = max(1, min(nrow, max(len(b) for b in blocks)))
    rows_of = [max(1, -(-len(b) // cols)) for b in blocks]
    canvas = torch.ones(sum(rows_of) * (h + 1), cols * (w + 1))
    ticks, top = [], 0
    for x, rows in zip(blocks, rows_of):
        for i in range(len(x)):
            r, col = divmod(i, cols)
            y0 = (top + r) * (h + 1)
            canvas[y0 : y0 + h, col * (w + 1) : col * (w + 1) + w] = x[i]
        ticks.append((top + rows / 2) * (h + 1) - 1)
        top += rows
    fig, ax = plt.subplots(figsize=(cols * 0.6 + (1.2 if any(labels) else 0.0), top * 0.6 + 0.4),
                           layout="constrained")
    ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    if any(labels):
        ax.set_yticks(ticks, labels)
        ax.tick_params(axis="y", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    else:
        ax.axis("off")
    ax.set_title(title)
    return fig


def save_figure(fig: Figure, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
