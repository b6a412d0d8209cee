"""Figures: image grids (samples, reconstructions) and training curves, written with matplotlib."""

from __future__ import annotations

import json
import pathlib

import numpy as np

__all__ = ["image_grid", "save_image_grid", "plot_training_curves"]


def image_grid(images, num_columns: int = 10, padding: int = 1) -> np.ndarray:
    """Tile ``(n, H, W, C)`` images in [0, 1] into one ``(rows*(H+p), cols*(W+p), C)`` array."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    n, h, w, c = images.shape
    rows = -(-n // num_columns)
    grid = np.ones((rows * (h + padding) + padding, num_columns * (w + padding) + padding, c), np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, num_columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = image
    return grid


def save_image_grid(images, path, num_columns: int = 10, title: str | None = None) -> pathlib.Path:
    """Write an image grid as a PNG; grey images are drawn in grey scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = image_grid(images, num_columns)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = grid.shape[:2]
    fig = plt.figure(figsize=(width / 40 + 0.2, height / 40 + (0.4 if title else 0.2)), dpi=100)
    ax = fig.add_axes((0, 0, 1, 0.92 if title else 1))
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_training_curves(metrics_path, path, keys=("loss", "acceptance_rate", "beta", "step_size", "log_abs_det")):
    """Plot per-epoch metrics from a run's ``metrics.jsonl`` (those of ``keys`` it holds) into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in pathlib.Path(metrics_path).read_text().splitlines() if line.strip()]
    present = [k for k in keys if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(3.2 * max(1, len(present)), 2.6), squeeze=False)
    for ax, key in zip(axes[0], present):
        xs = [r["global_epoch"] for r in rows if key in r]
        ax.plot(xs, [r[key] for r in rows if key in r], marker=".")
        ax.set_xlabel("epoch")
        ax.set_title(key)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
