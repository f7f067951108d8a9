"""From pixels to tokens: `PatchEmbedding`, the prefix tokens, `AddPositionEmbedding`.

    image (B, H, W, C) -> PatchEmbedding -> (B, N, D)
      -> ClassToken -> RegisterTokens -> (B, T, D)   (T = N + prefix tokens)
      -> AddPositionEmbedding (resampled in the graph for another grid)

Legend: `B` batch, `H, W` image height and width, `p` patch size, `N`
patches (H/p * W/p), `D` hidden_dim, `T` tokens.
"""

import keras
from keras import ops

from keras_vit.config import positive_int, to_pair

_register = keras.saving.register_keras_serializable(package="keras_vit")


@_register
class PatchEmbedding(keras.layers.Layer):
    """Cuts an image into patches and projects each one to `hidden_dim`.

    A Conv2D whose kernel and stride are both the patch size is exactly "cut
    into non-overlapping patches, flatten each, multiply by one matrix"
    (paper, eq. 1), and one fused op instead of a gather and a matmul.

    Args:
        patch_size: int or `(height, width)` of a patch.
        hidden_dim: size `D` of each token.
        use_bias: whether the projection has a bias (CLIP's has none).
            Defaults to `True`.
        patchified: the input is already cut into patches, `(B, N, p*p*C)`,
            each flattened in `(row, column, channel)` order (SigLIP 2's
            NaFlex input): the same kernel, applied as one matmul. Defaults
            to `False`.

    Call arguments:
        images: `(B, H, W, C)`, with `H` and `W` multiples of the patch size;
            with `patchified`, the patches `(B, N, p*p*C)`.

    Returns:
        `(B, N, D)` tokens, patches in row-major order.

    Example:

    >>> layer = PatchEmbedding(patch_size=16, hidden_dim=768)
    >>> tuple(layer(keras.ops.zeros((2, 224, 224, 3))).shape)
    (2, 196, 768)
    """

    def __init__(self, patch_size, hidden_dim, use_bias=True, patchified=False, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = to_pair(patch_size, "patch_size")
        self.hidden_dim = positive_int(hidden_dim, "hidden_dim")
        self.use_bias = bool(use_bias)
        self.patchified = bool(patchified)

    def build(self, input_shape):
        if self.patchified:
            input_shape = self._patch_shape(input_shape)
        if len(input_shape) != 4:
            raise ValueError(f"PatchEmbedding expects images of shape (B, H, W, C); got {tuple(input_shape)}.")
        if input_shape[-1] is None or input_shape[-1] < 1:
            raise ValueError(f"Images need at least 1 channel; got shape {tuple(input_shape)}.")
        for size, patch, axis in zip(input_shape[1:3], self.patch_size, ("height", "width")):
            if size is not None and size % patch:
                raise ValueError(f"Image {axis} {size} is not divisible by patch_size={self.patch_size}.")
        self.projection = keras.layers.Conv2D(
            self.hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            use_bias=self.use_bias,
            kernel_initializer="lecun_normal",  # flax's nn.Conv default, as the original code
            dtype=self.dtype_policy,
            name="projection",
        )
        self.projection.build(input_shape)

    def _patch_shape(self, input_shape):
        """`(B, N, p*p*C)` -> the `(None, p, p, C)` one patch is, as an image, for the kernel."""
        area = self.patch_size[0] * self.patch_size[1]
        if len(input_shape) != 3 or input_shape[-1] is None or input_shape[-1] % area:
            raise ValueError(
                f"PatchEmbedding(patchified=True) expects patches of shape (B, N, p*p*C) with "
                f"patch_size={self.patch_size}; got {tuple(input_shape)}."
            )
        return (None, *self.patch_size, input_shape[-1] // area)

    def call(self, images):
        if self.patchified:  # (B, N, p*p*C) @ (p*p*C, D): the conv's kernel, flattened as the patches are
            kernel = ops.reshape(ops.cast(self.projection.kernel, images.dtype), (-1, self.hidden_dim))
            x = ops.matmul(images, kernel)
            return x + ops.cast(self.projection.bias, x.dtype) if self.use_bias else x  # (B, N, D)
        x = self.projection(images)  # (B, H/p, W/p, D)
        _, rows, cols, _ = ops.shape(x)
        return ops.reshape(x, (-1, rows * cols, self.hidden_dim))  # (B, N, D)

    def compute_output_shape(self, input_shape):
        if self.patchified:
            return (*input_shape[:2], self.hidden_dim)
        batch, height, width, _ = input_shape
        if height is None or width is None:
            return (batch, None, self.hidden_dim)
        rows, cols = height // self.patch_size[0], width // self.patch_size[1]
        return (batch, rows * cols, self.hidden_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "use_bias": self.use_bias,
            "patchified": self.patchified,
        }


@_register
class ClassToken(keras.layers.Layer):
    """Prepends one learned token, whose final state is the image's summary.

    The token starts at zeros, as in the original code.

    Call arguments:
        tokens: `(B, N, D)`.

    Returns:
        `(B, N + 1, D)`, the class token at index 0.

    Example:

    >>> tuple(ClassToken()(keras.ops.ones((2, 196, 768))).shape)
    (2, 197, 768)
    """

    def build(self, input_shape):
        self.token = self.add_weight(name="token", shape=(1, 1, input_shape[-1]), initializer="zeros")

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        token = ops.broadcast_to(ops.cast(self.token, tokens.dtype), (batch, 1, tokens.shape[-1]))
        return ops.concatenate([token, tokens], axis=1)  # (B, N + 1, D)

    def compute_output_shape(self, input_shape):
        batch, length, dim = input_shape
        return (batch, None if length is None else length + 1, dim)


@_register
class RegisterTokens(keras.layers.Layer):
    """Prepends `num_tokens` learned tokens that no output reads (Darcet et al. 2024).

    "Vision Transformers Need Registers": without them, large ViTs repurpose
    background patches as scratch space, which shows as artefacts in their
    attention and dense features (DINOv2 with registers).

    Args:
        num_tokens: how many register tokens.

    Call arguments:
        tokens: `(B, N, D)`.

    Returns:
        `(B, num_tokens + N, D)`.
    """

    def __init__(self, num_tokens, **kwargs):
        super().__init__(**kwargs)
        self.num_tokens = positive_int(num_tokens, "num_tokens")

    def build(self, input_shape):
        self.tokens = self.add_weight(
            name="tokens",
            shape=(1, self.num_tokens, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=1e-6),  # timm's
        )

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        registers = ops.broadcast_to(ops.cast(self.tokens, tokens.dtype), (batch, self.num_tokens, tokens.shape[-1]))
        return ops.concatenate([registers, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        batch, length, dim = input_shape
        return (batch, None if length is None else length + self.num_tokens, dim)

    def get_config(self):
        return {**super().get_config(), "num_tokens": self.num_tokens}


@_register
class AddPositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding, one vector per token.

    Args:
        num_prefix_tokens: how many leading tokens are not patches (1 with a
            class token, 0 without). They keep their slots when the embedding
            is resized to another patch grid
            (`keras_vit.resample_position_embedding`).
            Defaults to `1`.
        grid: `(rows, cols)` of the patch grid the embedding is learned at,
            for a model whose input size is not fixed; `None` takes the
            number of tokens from the first call. Defaults to `None`.
        patch_size: with `grid`, the patch size: a call with `images`
            resamples the embedding to their patch grid, as timm's
            `dynamic_img_size` does (bicubic, antialiased). Defaults to `None`.

    Call arguments:
        tokens: `(B, T, D)`; `T` is fixed by the first call unless `grid` is given.
        images: the `(B, H, W, C)` images the tokens come from, with `grid`
            and `patch_size` set: their patch grid decides the resampling.

    Returns:
        `(B, T, D)`, the tokens plus the `(1, T, D)` embedding.
    """

    def __init__(self, num_prefix_tokens=1, grid=None, patch_size=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens={num_prefix_tokens!r} must be a non-negative integer.")
        self.num_prefix_tokens = num_prefix_tokens
        self.grid = None if grid is None else to_pair(grid, "grid")
        self.patch_size = None if patch_size is None else to_pair(patch_size, "patch_size")
        if self.patch_size is not None and self.grid is None:
            raise ValueError(
                "AddPositionEmbedding(patch_size=...) resamples from a known grid: pass grid=(rows, cols)."
            )

    def build(self, input_shape):  # the tokens' shape (Keras passes the first argument's alone)
        if self.grid is not None:
            length = self.num_prefix_tokens + self.grid[0] * self.grid[1]
        elif input_shape[1] is None:
            raise ValueError("AddPositionEmbedding needs a known number of tokens; fix the image size or pass grid.")
        else:
            length = input_shape[1]
        self.embedding = self.add_weight(
            name="embedding",
            shape=(1, length, input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, tokens, images=None):
        embedding = ops.cast(self.embedding, tokens.dtype)
        if images is not None and self.patch_size is not None:
            embedding = self.resampled(embedding, images)
        return tokens + embedding

    def resampled(self, embedding, images):
        """The embedding at the patch grid of `images`; the very tensor when the grid is the learned one."""
        target = [
            static // patch if static is not None else ops.shape(images)[axis] // patch
            for axis, static, patch in zip((1, 2), images.shape[1:3], self.patch_size)
        ]
        # Known statically: no resampling ops in the graph (LiteRT, ONNX). A size known only at run
        # time is a tensor, which a traced graph (SavedModel) cannot compare in Python: resample always.
        if all(isinstance(n, int) for n in target) and tuple(target) == self.grid:
            return embedding
        prefix, grid = embedding[:, : self.num_prefix_tokens], embedding[0, self.num_prefix_tokens :]
        image = ops.reshape(ops.cast(grid, "float32"), (*self.grid, -1))  # (h, w, D)
        rows = antialiased_bicubic_matrix(self.grid[0], target[0])
        cols = antialiased_bicubic_matrix(self.grid[1], target[1])
        image = ops.einsum("ih,hwd,jw->ijd", rows, image, cols)  # (rows, cols, D)
        grid = ops.cast(ops.reshape(image, (1, -1, embedding.shape[-1])), embedding.dtype)
        return ops.concatenate([prefix, grid], axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_prefix_tokens": self.num_prefix_tokens,
            "grid": self.grid,
            "patch_size": self.patch_size,
        }


def antialiased_bicubic_matrix(in_size, out_size):
    """The `(out_size, in_size)` matrix of `F.interpolate(mode="bicubic", antialias=True)` along one axis.

    What timm's `resample_abs_pos_embed` computes at run time for
    `dynamic_img_size`: Pillow's separable filter (cubic kernel `a = -0.5`,
    support widened by the scale when shrinking, weights renormalised at the
    border). `keras.ops.image.resize` would not give the same numbers
    (`keras_vit.checkpoints.resample` explains why), so the matrix is built
    here, in `keras.ops`, for an `out_size` known only at run time.
    (The NumPy twin for checkpoints is `checkpoints.resample.interpolation_matrix`.)
    """
    out = ops.cast(out_size, "float32")
    scale = in_size / out
    support = 2.0 * ops.maximum(scale, 1.0)
    stretch = ops.where(scale >= 1.0, 1.0 / scale, 1.0)
    center = scale * (ops.cast(ops.arange(out_size), "float32") + 0.5)[:, None]  # (out, 1)
    source = ops.cast(ops.arange(in_size), "float32")[None, :]  # (1, in)
    # The C++ truncates `center -/+ support + 0.5` toward zero; both are clamped to [0, in], where floor agrees.
    inside = (source >= ops.floor(center - support + 0.5)) & (source < ops.floor(center + support + 0.5))
    x = ops.abs((source - center + 0.5) * stretch)
    a = -0.5
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    taps = ops.where(inside, ops.where(x <= 1, near, ops.where(x < 2, far, 0.0)), 0.0)
    return taps / ops.sum(taps, axis=1, keepdims=True)


@_register
class NaFlexPositionEmbedding(keras.layers.Layer):
    """Adds a learned position table resized to each image's own patch grid (SigLIP 2's NaFlex).

    The table is learned on one `grid`; an image cut into an `h x w` grid
    of patches (`spatial_shapes`) gets the table resized to `h x w`
    (bilinear, antialiased, as transformers' `Siglip2VisionEmbeddings`), in
    row-major order, padded to the `N` tokens of the batch. The resize is
    linear, so each image's is two interpolation matrices built from its
    grid size (`naflex_resize_weights`), `Rh @ table @ Rw^T`: ops every
    backend and exporter has, for sizes known only at run time. Padding
    tokens get the table's first position, as transformers gives them.

    Args:
        grid: `(rows, cols)` of the table.

    Call arguments:
        tokens: `(B, N, D)` patch tokens, padded to `N`.
        spatial_shapes: `(B, 2)` int, each image's patch rows and columns
            (`rows * cols <= N`).

    Returns:
        `(B, N, D)`.
    """

    num_prefix_tokens = 0  # the table covers the patches only (as `AddPositionEmbedding`'s attribute says)

    def __init__(self, grid, **kwargs):
        super().__init__(**kwargs)
        self.grid = to_pair(grid, "grid")

    def build(self, input_shape):  # the tokens' shape
        self.embedding = self.add_weight(
            name="embedding",
            shape=(1, self.grid[0] * self.grid[1], input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, tokens, spatial_shapes):
        weights = naflex_resize_weights(self.grid, spatial_shapes, ops.shape(tokens)[1])  # (B, N, G)
        table = ops.cast(self.embedding[0], "float32")  # (G, D), G = rows * cols of the table
        return tokens + ops.cast(ops.matmul(weights, table), tokens.dtype)

    def compute_output_spec(self, tokens, spatial_shapes):
        return keras.KerasTensor(tokens.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "grid": self.grid}


def naflex_resize_weights(grid, spatial_shapes, length):
    """`(B, length, rows * cols)`: each token's weights over the `grid` table, resized to its image's grid.

    Token `n` of an image of `h x w` patches sits at row `n // w`, column
    `n % w` (padding, `n >= h * w`, at `(0, 0)`); its weight on table entry
    `(i, j)` is `Rh[row, i] * Rw[col, j]`, the rows of
    `F.interpolate(mode="bilinear", align_corners=False, antialias=True)`'s
    matrices along each axis: the triangle filter widened by the scale when
    shrinking, renormalised (transformers' `resize_positional_embeddings`,
    written with `keras.ops`).
    """
    sizes = ops.cast(spatial_shapes, "float32")[:, None, :]  # (B, 1, 2): rows, cols
    n = ops.cast(ops.arange(length), "float32")[None, :, None]  # (1, N, 1)
    rows = ops.floor(n / sizes[..., 1:])
    index = ops.concatenate([rows, n - rows * sizes[..., 1:]], axis=-1)  # (B, N, 2)
    index = index * ops.cast(n < sizes[..., :1] * sizes[..., 1:], "float32")

    def axis_weights(axis):
        scale = grid[axis] / sizes[..., axis]  # (B, 1)
        support = ops.maximum(scale, 1.0)
        center = (index[..., axis] + 0.5) * scale - 0.5  # (B, N)
        source = ops.cast(ops.arange(grid[axis]), "float32")
        taps = ops.maximum(1.0 - ops.abs(source - center[..., None]) / support[..., None], 0.0)  # (B, N, g)
        return taps / ops.sum(taps, axis=-1, keepdims=True)

    weights = axis_weights(0)[..., :, None] * axis_weights(1)[..., None, :]  # (B, N, rows, cols)
    return ops.reshape(weights, (ops.shape(weights)[0], length, grid[0] * grid[1]))


@_register
class PaddingBias(keras.layers.Layer):
    """A padding mask -> the attention logits' bias that hides padding keys: `(B, N) -> (B, 1, 1, N)`.

    What `SelfAttention` and `AttentionPooling` take as `attention_bias`:
    `0` for a real token, `-1e9` for padding, whose softmax weight is then
    exactly zero (in float32, and as `-inf` under float16).

    Call arguments:
        padding_mask: `(B, N)`, nonzero (or `True`) for real tokens.

    Returns:
        `(B, 1, 1, N)` float.
    """

    def call(self, padding_mask):  # not `mask`: Keras reserves that name for its own masking
        # `where`, not `(1 - mask) * -1e9`: under float16 the constant is -inf, and 0 * -inf is NaN.
        zeros = ops.zeros(ops.shape(padding_mask), self.compute_dtype)
        bias = ops.where(ops.not_equal(padding_mask, 0), zeros, ops.cast(-1e9, self.compute_dtype))
        return bias[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, input_shape[1])
