"""Sample images and the one figure writer (matplotlib, headless).

This is the one place that picks matplotlib's backend: Agg, which needs no display (workers, CI, lent machines);
modules that draw import ``plt`` and ``save_figure`` from here. A run writes its sample grids and strip with these.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def save_figure(fig, path: Path, dpi: int, tight_layout: bool = True) -> None:
    """Lay the figure out (unless told not to), write it to ``path`` (making its folder) and free it."""
    if tight_layout:
        fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> torch.Tensor:
    """(B, 1, H, W) in [-1, 1] -> one (H', W') array in [0, 1] (no torchvision needed)."""
    images = images[: nrow * nrow].clamp(-1, 1).add(1).div(2)
    b, _, h, w = images.shape
    rows = (b + nrow - 1) // nrow
    grid = torch.ones(rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(b):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = images[i, 0]
    return grid


def save_grid(images: torch.Tensor, path: Path, title: str | None = None, nrow: int = 8) -> None:
    grid = image_grid(images, nrow)
    fig, ax = plt.subplots(figsize=(4, 4 * grid.shape[0] / grid.shape[1]))
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=150, tight_layout=False)


def save_points(points: torch.Tensor, path: Path, title: str, modes: torch.Tensor | None = None) -> None:
    """2-D samples (N, 2) as a scatter on [-2, 2]^2, with the target's modes as red crosses (the toy)."""
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.scatter(*points.T.numpy(), s=2, alpha=0.5, label="generator")
    if modes is not None:
        ax.scatter(*modes.T.numpy(), marker="x", color="red", label="modes")
    ax.set_xlim(-2, 2)
    ax.set_ylim(-2, 2)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=120, tight_layout=False)


def save_grids_panel(named_images: dict[str, torch.Tensor], path: Path, nrow: int = 8) -> None:
    """One panel per model, side by side."""
    n = len(named_images)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.3))
    for ax, (name, images) in zip(axes if n > 1 else [axes], named_images.items()):
        ax.imshow(image_grid(images, nrow).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    save_figure(fig, path, dpi=150, tight_layout=False)


def grid_strip(grids: list[Path], path: Path, title: str) -> None:
    """A run's sample grids over training, left to right (the same latents at every evaluation)."""
    if not grids:
        return
    fig, axes = plt.subplots(1, len(grids), figsize=(2.4 * len(grids), 2.8), squeeze=False)
    for ax, g in zip(axes[0], grids):
        ax.imshow(plt.imread(g))
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=110)
