"""Resampling a position embedding to another patch grid, exactly as PyTorch does.

A checkpoint trained at 224 (a 14x14 grid at patch 16) fine-tunes at 384 (24x24)
once its position embedding is resized like an image. The ports people compare
against (timm, Hugging Face) resize with `torch.nn.functional.interpolate`, so
this module reproduces its arithmetic in NumPy: an image resize is separable,
so each axis is one `(out, in)` matrix and the whole resize is
`rows @ grid @ cols.T`.

Why not `keras.ops.image.resize`: TensorFlow's bicubic (half-pixel centres)
uses the Keys kernel with `a = -0.5`, while `F.interpolate(mode="bicubic",
align_corners=False)` uses `a = -0.75` (and clamps indices at the border), so
the two differ by a few percent of the signal. With `antialias=True` torch
switches to Pillow's filters (`a = -0.5`, weights renormalised at the border,
support widened when shrinking), which is timm's default for state dicts.

Shapes: `T` tokens, `D` hidden_dim, `h, w` the grid.
"""

import math

import numpy as np

from keras_vit.config import to_pair

INTERPOLATIONS = ("bilinear", "bicubic")


def _cubic(x, a):
    """The cubic convolution kernel (Keys 1981) at offsets `x`."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _triangle(x):
    return np.maximum(0.0, 1.0 - np.abs(x))


def _plain_matrix(in_size, out_size, interpolation):
    """`F.interpolate(size=out, align_corners=False, antialias=False)` along one axis."""
    scale = in_size / out_size
    src = (np.arange(out_size) + 0.5) * scale - 0.5
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    if interpolation == "bilinear":
        src = np.maximum(src, 0.0)  # torch clamps the source coordinate for linear modes only
        low = np.floor(src).astype(int)
        frac = src - low
        np.add.at(matrix, (rows, np.minimum(low, in_size - 1)), 1 - frac)
        np.add.at(matrix, (rows, np.minimum(low + 1, in_size - 1)), frac)
        return matrix
    low = np.floor(src).astype(int)
    frac = src - low
    for offset in (-1, 0, 1, 2):  # four taps, indices clamped to the border (edge replication)
        index = np.clip(low + offset, 0, in_size - 1)
        np.add.at(matrix, (rows, index), _cubic(frac - offset, a=-0.75))
    return matrix


def _antialiased_matrix(in_size, out_size, interpolation):
    """`F.interpolate(..., antialias=True)`: Pillow's separable filters."""
    scale = in_size / out_size
    support = (1.0 if interpolation == "bilinear" else 2.0) * max(scale, 1.0)
    stretch = 1.0 / scale if scale >= 1.0 else 1.0
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        # int() truncates toward zero, as the C++ static_cast does.
        start = max(int(center - support + 0.5), 0)
        stop = min(int(center + support + 0.5), in_size)
        offsets = (np.arange(start, stop) - center + 0.5) * stretch
        taps = _triangle(offsets) if interpolation == "bilinear" else _cubic(offsets, a=-0.5)
        matrix[i, start:stop] = taps / taps.sum()
    return matrix


def interpolation_matrix(in_size, out_size, interpolation="bicubic", antialias=False):
    """The `(out_size, in_size)` matrix that resizes one axis as torch does."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"Unknown interpolation={interpolation!r}; expected one of {INTERPOLATIONS}.")
    if antialias:
        return _antialiased_matrix(in_size, out_size, interpolation)
    return _plain_matrix(in_size, out_size, interpolation)


def square_grid(grid_length, what="position embedding"):
    """`(s, s)` when `grid_length == s * s`, else a `ValueError` asking for the grid."""
    side = math.isqrt(grid_length)
    if side * side != grid_length:
        raise ValueError(f"The {what} has {grid_length} grid tokens, not a square grid: pass source_grid=(rows, cols).")
    return side, side


def resample_position_embedding(
    embedding,
    target_grid,
    source_grid=None,
    num_prefix_tokens=1,
    interpolation="bicubic",
    antialias=False,
):
    """Resizes a `(1, prefix + h*w, D)` position embedding to another grid, in NumPy.

    The prefix slots (the class token's) are kept; the grid part is resized
    as a `(h, w)` image with `D` channels, the same numbers as timm's
    `resample_abs_pos_embed` with the same `interpolation` and `antialias`
    (to float32 rounding; computed in float64).

    Args:
        embedding: array `(1, T, D)` or `(T, D)`.
        target_grid: `(rows, cols)` of the new grid, or an int.
        source_grid: `(rows, cols)` of the embedding's grid; inferred as square
            when `None`.
        num_prefix_tokens: leading non-grid tokens. Defaults to `1`.
        interpolation: `"bicubic"` or `"bilinear"`. Defaults to `"bicubic"`.
        antialias: torch's antialiased (Pillow) filters; they differ from the
            plain ones only when shrinking, and in the bicubic kernel.
            Defaults to `False`.

    Returns:
        A `(1, prefix + rows*cols, D)` array in the embedding's dtype.

    Example:

    >>> resample_position_embedding(np.zeros((1, 1 + 14 * 14, 8)), (24, 24)).shape
    (1, 577, 8)
    """
    embedding = np.asarray(embedding)
    if embedding.ndim == 2:
        embedding = embedding[None]
    prefix, grid = embedding[:, :num_prefix_tokens], embedding[:, num_prefix_tokens:]
    grid_length, dim = grid.shape[1], grid.shape[2]
    source_grid = square_grid(grid_length) if source_grid is None else to_pair(source_grid, "source_grid")
    target_grid = to_pair(target_grid, "target_grid")
    if source_grid[0] * source_grid[1] != grid_length:
        raise ValueError(
            f"source_grid={source_grid} has {source_grid[0] * source_grid[1]} tokens but the "
            f"embedding has {grid_length} after {num_prefix_tokens} prefix token(s)."
        )
    if source_grid == target_grid:
        return embedding
    rows = interpolation_matrix(source_grid[0], target_grid[0], interpolation, antialias)
    cols = interpolation_matrix(source_grid[1], target_grid[1], interpolation, antialias)
    image = grid[0].reshape(*source_grid, dim).astype("float64")  # (h, w, D)
    image = np.einsum("ih,hwd,jw->ijd", rows, image, cols)  # (rows, cols, D)
    grid = image.reshape(1, -1, dim).astype(embedding.dtype)
    return np.concatenate([prefix, grid], axis=1)
