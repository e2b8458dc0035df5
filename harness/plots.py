"""Figures (matplotlib/seaborn, headless): sample grids and metric comparisons."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def save_grids_panel(named_images: dict[str, torch.Tensor], path: Path, nrow: int = 8) -> None:
    """One panel per model, side by side."""
    n = len(named_images)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.3))
    for ax, (name, images) in zip(axes if n > 1 else [axes], named_images.items()):
        ax.imshow(image_grid(images, nrow).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def save_metric_bars(table, path: Path, metrics=("kid", "fid", "precision", "recall", "density", "coverage"), title=""):
    """Point plot per metric with error bars from the ``<metric>_std`` columns."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2))
    for ax, m in zip(axes, metrics):
        err = table.get(f"{m}_std")
        ax.errorbar(table[m], range(len(table)), xerr=err, fmt="o", capsize=3)
        ax.set_yticks(range(len(table)), table["model"] if m == metrics[0] else [""] * len(table), fontsize=8)
        ax.set_title(m)
        ax.invert_yaxis()
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
