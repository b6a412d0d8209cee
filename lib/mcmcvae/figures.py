"""Figures: image grids (samples, reconstructions, latent traversals) and training curves, written with matplotlib."""

from __future__ import annotations

import math
import pathlib

import numpy as np

__all__ = ["image_grid", "save_image_grid", "plot_training_curves", "latent_traversal"]


def image_grid(images, num_columns: int = 10, padding: int = 1) -> np.ndarray:
    """Tile ``(n, H, W, C)`` images in [0, 1] into one ``(rows*(H+p), cols*(W+p), C)`` array.

    Examples
    --------
    >>> import numpy as np
    >>> from mcmcvae.figures import image_grid
    >>> image_grid(np.zeros((12, 28, 28, 1)), num_columns=10).shape  # 2 rows of 10, 1-pixel white borders
    (59, 291, 1)
    """
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

    from mcmcvae.train import read_metrics

    rows = read_metrics(pathlib.Path(metrics_path).parent)
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


def latent_traversal(model, params, z_center, *, num_steps: int = 9, radius: float = 3.0,
                     dimensions=None) -> np.ndarray:
    r"""Decoded means along straight lines through ``z_center``, one latent coordinate at a time.

    Row ``r`` moves coordinate ``u = dimensions[r]`` over ``num_steps`` evenly spaced offsets in
    ``[-radius, radius]`` while the others stay at ``z_center``,

    .. math:: z^{(r, j)} = z_\text{center} + t_j e_u, \qquad
              t_j = -\text{radius} + \frac{2 \, \text{radius} \, j}{\text{num\_steps} - 1},

    and shows ``model.mean_image(params, z)`` (Bernoulli probabilities, or the clipped mean). A unit the model
    does not use (an inactive unit, :func:`mcmcvae.evaluate.active_units`) gives a row of identical images.
    With a standard normal prior, ``radius = 3`` spans three prior standard deviations. All
    ``len(dimensions) * num_steps`` latents are decoded by one jitted call.

    Parameters
    ----------
    model
        Any model with ``latent_dim`` and ``mean_image(params, z)`` (:class:`mcmcvae.models.VAE`,
        :class:`mcmcvae.hierarchical.TopDownHVAE`).
    params
        Its parameters.
    z_center
        ``(d,)``, the point traversed through: zeros (the prior's mean) or an image's encoded mean.
    num_steps
        Images per row, at least 2; odd numbers put ``z_center`` itself in the middle column.
    radius
        Largest offset, positive.
    dimensions
        The latent coordinates to traverse, in row order (default: all ``d``), e.g. the active units sorted by
        activity.

    Returns
    -------
    np.ndarray
        ``(len(dimensions) * num_steps, H, W, C)`` in ``[0, 1]``, row by row; draw it with
        ``save_image_grid(images, path, num_columns=num_steps)``.

    Raises
    ------
    ValueError
        If ``z_center`` is not ``(d,)``, ``num_steps < 2``, ``radius`` is not positive and finite, or a dimension
        is out of range.

    Examples
    --------
    >>> import jax, numpy as np
    >>> import mcmcvae as mv
    >>> from mcmcvae.figures import latent_traversal, save_image_grid
    >>> model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=2, hidden_sizes=(32,))
    >>> params = model.init(jax.random.key(0))  # a trained model's parameters in practice
    >>> images = latent_traversal(model, params, np.zeros(model.latent_dim), num_steps=9, radius=3.0)
    >>> images.shape  # 2 rows (one per latent unit) of 9 images
    (18, 28, 28, 1)
    >>> save_image_grid(images, "traversal.png", num_columns=9, title="latent traversals")
    PosixPath('traversal.png')
    """
    import jax
    import jax.numpy as jnp

    latent_dim = int(model.latent_dim)
    z_center = np.asarray(z_center, np.float32)
    if z_center.shape != (latent_dim,):
        raise ValueError(f"z_center must have shape ({latent_dim},), the model's latent_dim, got {z_center.shape}")
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    if not (isinstance(radius, int | float | np.number) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    dimensions = np.arange(latent_dim) if dimensions is None else np.asarray(dimensions, np.int64).reshape(-1)
    if dimensions.size == 0 or dimensions.min() < 0 or dimensions.max() >= latent_dim:
        raise ValueError(f"dimensions must be a non-empty list of latent coordinates in 0..{latent_dim - 1}, "
                         f"got {dimensions.tolist()}")
    offsets = np.linspace(-radius, radius, int(num_steps), dtype=np.float32)
    latents = np.repeat(z_center[None, None], len(dimensions), axis=0).repeat(int(num_steps), axis=1)
    latents[np.arange(len(dimensions)), :, dimensions] += offsets  # (rows, steps, d)
    images = jax.jit(model.mean_image)(params, jnp.asarray(latents.reshape(-1, latent_dim)))
    return np.asarray(images, np.float32)
