"""The 2-D rotary position embedding (RoPE) of the patch tokens: `RotaryEmbedding` and `apply_rotary`.

    images (B, H, W, C) -> RotaryEmbedding -> table (T, 2d): [sin | cos] of every token's angles
    query, key (B, h, T, d) + table -> apply_rotary -> rotated, prefix tokens unchanged

The table is computed once per forward pass, from the images' patch grid (so
any size, square or not, when the model takes any size), and handed to every
block with the tokens (`keras_vit.model.TokenState`). Its prefix rows are the
identity (sine 0, cosine 1): the class and register tokens are not rotated,
exactly as timm leaves them out. A hook that moves tokens (token merging,
A-ViT's gather) passes their `positions`, and each token's row is taken from
the table by its position. The layer has no weights; the settings are a
`keras_vit.config.Rotary` record's (its docstring gives the formula and each
family's settings).

Legend: `B` batch, `H, W` image size, `p` patch size, `P` prefix tokens, `N`
patches, `T = P + N` tokens, `h` heads, `d` head width.
"""

import math

import keras
from keras import ops

from keras_vit.config import Rotary, positive_int, to_pair

_register = keras.saving.register_keras_serializable(package="keras_vit")


@_register
class RotaryEmbedding(keras.layers.Layer):
    """The sine and cosine table of a 2-D rotary embedding, for the images' patch grid.

    Args:
        head_dim: `d`, the width of one attention head; a multiple of 4.
        patch_size: int or `(height, width)` of a patch.
        num_prefix_tokens: leading tokens that are not patches, left
            unrotated. Defaults to `0`.
        grid: `(rows, cols)` of the patch grid the model was built for, or
            `None`. Not used by the arithmetic (the images decide the grid);
            kept so that a model taking any size knows its native one.
            Defaults to `None`.
        coordinates, temperature, reference_grid, grid_offset, grid_indexing,
            rotate_half: the fields of `keras_vit.config.Rotary`, with its
            defaults (DINOv3's).

    Call arguments:
        images: `(B, H, W, C)`; only their height and width are read.

    Returns:
        `(T, 2d)`: the sines then the cosines of each token's `d` angles,
        in the layout `apply_rotary` pairs channels in (`rotate_half`).

    Example:

    >>> layer = RotaryEmbedding(head_dim=8, patch_size=4, num_prefix_tokens=1)
    >>> tuple(layer(keras.ops.zeros((1, 8, 12, 3))).shape)
    (7, 16)
    """

    def __init__(
        self,
        head_dim,
        patch_size,
        num_prefix_tokens=0,
        grid=None,
        coordinates="normalized",
        temperature=100.0,
        reference_grid=None,
        grid_offset=0.0,
        grid_indexing="ij",
        rotate_half=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.head_dim = positive_int(head_dim, "head_dim")
        if head_dim % 4:
            raise ValueError(f"head_dim={head_dim} must be a multiple of 4 for a 2-D rotary embedding.")
        self.patch_size = to_pair(patch_size, "patch_size")
        if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens={num_prefix_tokens!r} must be a non-negative integer.")
        self.num_prefix_tokens = num_prefix_tokens
        self.grid = None if grid is None else to_pair(grid, "grid")
        settings = Rotary(coordinates, temperature, reference_grid, grid_offset, grid_indexing, rotate_half)
        self.coordinates, self.temperature = settings.coordinates, settings.temperature
        self.reference_grid, self.grid_offset = settings.reference_grid, settings.grid_offset
        self.grid_indexing, self.rotate_half = settings.grid_indexing, settings.rotate_half
        self.built = True  # no weights

    @property
    def settings(self):
        """The `keras_vit.config.Rotary` record of this layer."""
        return Rotary(
            self.coordinates, self.temperature, self.reference_grid, self.grid_offset, self.grid_indexing,
            self.rotate_half,
        )  # fmt: skip

    def call(self, images):
        rows, cols = (
            static // patch if static is not None else ops.shape(images)[axis] // patch
            for axis, static, patch in zip((1, 2), images.shape[1:3], self.patch_size)
        )
        angles = rotary_angles(self.settings, self.head_dim, rows, cols)  # (N, d)
        prefix = self.num_prefix_tokens
        sin = ops.concatenate([ops.zeros((prefix, self.head_dim)), ops.sin(angles)], axis=0)  # (T, d)
        cos = ops.concatenate([ops.ones((prefix, self.head_dim)), ops.cos(angles)], axis=0)
        return ops.cast(ops.concatenate([sin, cos], axis=-1), self.compute_dtype)  # (T, 2d)

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1:3]
        if height is None or width is None:
            return (None, 2 * self.head_dim)
        return (
            self.num_prefix_tokens + (height // self.patch_size[0]) * (width // self.patch_size[1]),
            2 * self.head_dim,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "head_dim": self.head_dim,
            "patch_size": self.patch_size,
            "num_prefix_tokens": self.num_prefix_tokens,
            "grid": self.grid,
            "coordinates": self.coordinates,
            "temperature": self.temperature,
            "reference_grid": self.reference_grid,
            "grid_offset": self.grid_offset,
            "grid_indexing": self.grid_indexing,
            "rotate_half": self.rotate_half,
        }


def _axis_coordinates(settings, size, reference):
    """One axis' float32 coordinates `(size,)`, in timm's order of operations (`_build_grid`)."""
    n = ops.cast(size, "float32")
    if settings.coordinates == "normalized":  # patch centres in [0, 1], then [-1, 1]
        t = (ops.cast(ops.arange(size), "float32") + 0.5 + settings.grid_offset) / n
        return 2.0 * t - 1.0
    t = ops.cast(ops.arange(size), "float32") + settings.grid_offset
    return t if reference is None else t / n * float(reference)


def rotary_angles(settings, head_dim, rows, cols):
    """The `(N, d)` angles of a `rows x cols` patch grid (row-major), in `settings.rotate_half`'s layout.

    Args:
        settings: a `keras_vit.config.Rotary`.
        head_dim: `d`, a multiple of 4.
        rows, cols: the patch grid, ints or scalar tensors.
    """
    bands = head_dim // 4
    reference = settings.reference_grid or (None, None)
    row = _axis_coordinates(settings, rows, reference[0])  # (rows,)
    col = _axis_coordinates(settings, cols, reference[1])  # (cols,)
    row = ops.reshape(ops.broadcast_to(row[:, None], (rows, cols)), (-1,))  # (N,)
    col = ops.reshape(ops.broadcast_to(col[None, :], (rows, cols)), (-1,))
    first, second = (row, col) if settings.grid_indexing == "ij" else (col, row)
    exponents = ops.cast(ops.arange(bands), "float32")
    if settings.coordinates == "normalized":  # DINOv3: 2 pi * coordinate / period
        periods = settings.temperature ** (2.0 * exponents / (head_dim // 2))
        angles = [2.0 * math.pi * c[:, None] / periods[None] for c in (first, second)]
    else:  # timm's freq_bands: coordinate * temperature ** (-k / bands)
        frequencies = 1.0 / settings.temperature ** (exponents / bands)
        angles = [c[:, None] * frequencies[None] for c in (first, second)]
    angles = ops.concatenate(angles, axis=-1)  # (N, d/2): the first coordinate's bands, then the second's
    if settings.rotate_half:
        return ops.concatenate([angles, angles], axis=-1)  # channel j pairs with j + d/2
    return ops.repeat(angles, 2, axis=-1)  # channels 2j and 2j + 1 pair up


def apply_rotary(x, table, rotate_half=True, positions=None):
    """Rotates `x` `(B, h, T, d)` by `table` `(T, 2d)` (a `RotaryEmbedding`'s output); returns `x`'s shape and dtype.

    `x * cos + partner(x) * sin`, the partner of each channel being its pair's
    other channel with a sign (timm's `apply_rot_embed_cat`: `rope_rotate_half`
    or `rot`). Computed in the table's dtype (float32 under a mixed policy:
    the angles of far patches need it), then cast back.

    Args:
        x: queries or keys, `(B, h, T, d)`.
        table: `(T0, 2d)`, sines then cosines.
        rotate_half: how channels pair (see `keras_vit.config.Rotary`).
            Defaults to `True`.
        positions: optional `(B, T)` int32 rows of `table` for the tokens of
            `x` (where a hook moved tokens); `None`: row `i` for token `i`.
    """
    dim = x.shape[-1]
    if positions is not None:
        table = ops.expand_dims(ops.take(table, positions, axis=0), 1)  # (B, 1, T, 2d)
    sin, cos = table[..., :dim], table[..., dim:]
    y = ops.cast(x, table.dtype)
    if rotate_half:
        first, second = y[..., : dim // 2], y[..., dim // 2 :]
        partner = ops.concatenate([-second, first], axis=-1)
    else:
        pairs = ops.reshape(y, (-1, dim // 2, 2))
        partner = ops.reshape(ops.stack([-pairs[..., 1], pairs[..., 0]], axis=-1), ops.shape(y))
    return ops.cast(y * cos + partner * sin, x.dtype)
