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

    Call arguments:
        images: `(B, H, W, C)`, with `H` and `W` multiples of the patch size.

    Returns:
        `(B, N, D)` tokens, patches in row-major order.

    Example:

    >>> layer = PatchEmbedding(patch_size=16, hidden_dim=768)
    >>> tuple(layer(keras.ops.zeros((2, 224, 224, 3))).shape)
    (2, 196, 768)
    """

    def __init__(self, patch_size, hidden_dim, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = to_pair(patch_size, "patch_size")
        self.hidden_dim = positive_int(hidden_dim, "hidden_dim")
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
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

    def call(self, images):
        x = self.projection(images)  # (B, H/p, W/p, D)
        _, rows, cols, _ = ops.shape(x)
        return ops.reshape(x, (-1, rows * cols, self.hidden_dim))  # (B, N, D)

    def compute_output_shape(self, input_shape):
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
