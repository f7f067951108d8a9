"""The four layers of the Vision Transformer (Dosovitskiy et al. 2020).

image -> `PatchEmbedding` -> `ClassToken` -> `AddPositionEmbedding`
      -> `TransformerBlock` x L

Shapes use one legend: `B` batch, `H, W` image height and width, `p` patch
size, `N` patches (H/p * W/p), `D` hidden_dim.

Every layer takes its sizes in `__init__`, creates all its weights in `build`
with the layer's dtype policy, and returns exactly its constructor arguments
from `get_config`. Only `keras` and `keras.ops` are used, no TensorFlow.
"""

import keras
from keras import ops

from keras_vit.config import ACTIVATIONS, positive_int, rate, to_pair

_register = keras.saving.register_keras_serializable(package="keras_vit")


# --- two hand-written gradients --------------------------------------------------------
# Autodiff of LayerNorm and exact GELU, written as elementwise graphs, runs about twice the
# memory passes a hand-derived gradient needs, and on a CPU those passes, not the matmuls, are
# what a small ViT's training step waits on. Ti/16 training step at batch 32: +7.9% images/s
# (benchmarks/ablation.py; per part in benchmarks/ladder.py: LayerNorm ~100 -> ~75 ms per step,
# GELU ~150 -> ~95 ms). The functions are the same (tests check values and gradients against Keras').


def layer_norm(x, gamma, beta, epsilon):
    """LayerNorm over the last axis, `(x - mean) / sqrt(var + eps) * gamma + beta`.

    The backward pass is the closed form (Ba et al. 2016) over the saved
    normalised input: three reductions and a few elementwise products, instead
    of differentiating the mean and variance graph op by op.
    """
    reduce_axes = tuple(range(len(x.shape) - 1))

    @ops.custom_gradient
    def norm(x, gamma, beta):
        mean = ops.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        inv_std = ops.rsqrt(ops.mean(ops.square(centered), axis=-1, keepdims=True) + epsilon)
        normalized = centered * inv_std

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            scaled = upstream * gamma
            d_x = inv_std * (
                scaled
                - ops.mean(scaled, axis=-1, keepdims=True)
                - normalized * ops.mean(scaled * normalized, axis=-1, keepdims=True)
            )
            return d_x, ops.sum(upstream * normalized, axis=reduce_axes), ops.sum(upstream, axis=reduce_axes)

        return normalized * gamma + beta, grad

    return norm(x, gamma, beta)


@ops.custom_gradient
def gelu_for_training(x):
    """Exact GELU, `x * Phi(x)`, whose backward pass is one multiply.

    The derivative `Phi(x) + x * phi(x)` is computed in the forward pass and
    saved in place of `x` (the same memory), so the backward pass does not redo
    `erf` and `exp`. `Phi` is written with `erf`, several times cheaper than
    the `erfc` TensorFlow's own `gelu` uses, on this CPU.
    """
    cdf = 0.5 + 0.5 * ops.erf(x * 0.7071067811865476)  # Phi(x), 1/sqrt(2)
    derivative = cdf + x * ops.exp(-0.5 * ops.square(x)) * 0.3989422804014327  # + x * phi(x), 1/sqrt(2 pi)

    def grad(*args, upstream=None):
        return (args[0] if upstream is None else upstream) * derivative

    return x * cdf, grad


def gelu(x):
    """Exact GELU, `x * Phi(x)`, written with `erf` as `0.5 * x * (1 + erf(x / sqrt(2)))`.

    TensorFlow's remapper fuses this pattern into the matmul (`_FusedMatMul`
    with `GeluExact`), the same kernel as its own `erfc`-based `gelu`; and
    ONNX has `Erf` but no `Erfc`, so `model.export(format="onnx")` then works.
    """
    return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))


def activate(x, activation, training=None):
    """The MLP's activation by name (`keras_vit.config.ACTIVATIONS`).

    Exact GELU trains with the cheaper gradient above and infers with `gelu`,
    which TensorFlow fuses into the preceding matmul.
    """
    if activation == "gelu":
        return gelu_for_training(x) if training else gelu(x)
    if activation == "gelu_tanh":
        return keras.activations.gelu(x, approximate=True)
    if activation == "quick_gelu":  # OpenAI CLIP's approximation, which its weights were trained with
        return x * ops.sigmoid(1.702 * x)
    raise ValueError(f"Unknown activation={activation!r}; expected 'gelu', 'gelu_tanh' or 'quick_gelu'.")


@_register
class LayerNorm(keras.layers.LayerNormalization):
    """Keras' `LayerNormalization` with the faster gradient of `layer_norm`.

    Same arguments, weights (`gamma`, `beta`) and outputs; the hand-written
    gradient is used for the usual case (last axis, centred and scaled), Keras'
    own code for every other configuration. Computes in at least float32, as
    Keras does.
    """

    def call(self, inputs):
        if self.axis not in ([-1], [len(inputs.shape) - 1]) or not (self.center and self.scale) or self.rms_scaling:
            return super().call(inputs)
        dtype = "float32" if self.compute_dtype in ("float16", "bfloat16") else self.compute_dtype
        x = ops.cast(inputs, dtype)
        outputs = layer_norm(x, ops.cast(self.gamma, dtype), ops.cast(self.beta, dtype), self.epsilon)
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        if not config.get("rms_scaling"):  # deprecated in Keras and not an `__init__` argument
            config.pop("rms_scaling", None)
        return config


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
class ClassTokenPooling(keras.layers.Layer):
    """Takes one token's final state: `(B, T, D) -> (B, D)`.

    A layer rather than a slice in the model so that `.keras` files load in
    safe mode (a `Lambda` would not).

    Args:
        index: which token: `0` the class token, `1` DeiT's distillation
            token. Defaults to `0`.
    """

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"index={index!r} must be a non-negative integer.")
        self.index = index

    def call(self, tokens):
        return tokens[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


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
class SelfAttention(keras.layers.Layer):
    """Multi-head self-attention with one fused query/key/value projection.

    Computes the same function as Keras' `MultiHeadAttention(q=k=v)` but with
    the layout a CPU runs fastest (measured in `benchmarks/README.md`): the
    tokens are flattened to `(B*T, D)` so each projection is one plain 2-D
    matmul, query/key/value come from one `(D, 3D)` matmul, and the heads are
    split by one transpose into `(B, heads, T, d)`, where both attention
    products are contiguous batched matmuls. The `1/sqrt(d)` scale is folded
    into the queries (`T x d` multiplies instead of `T x T`).

    Written out rather than calling `ops.dot_product_attention`, which wants
    `(B, T, heads, d)` and so two more transposes per product: for B/16 at
    batch 16 its attention core took 26 ms against 15 ms here, same process
    (about 10% of the whole forward). The test suite checks this layer against
    Keras' `MultiHeadAttention` holding the same weights.

    Args:
        num_heads: attention heads; must divide `D`.
        dropout_rate: dropout on the attention weights. Defaults to `0.0`.

    Call arguments:
        tokens: `(B, T, D)`.
        attention_bias: optional logits bias broadcastable to
            `(B, heads, T, T)` (token merging adds `log(size)` of the keys).
        training: whether dropout is active.
        return_attention_scores: also return the `(B, heads, T, T)` weights.
        return_keys: also return the keys, `(B, heads, T, d)`.

    Returns:
        `(B, T, D)`, followed by the weights and keys when asked.
    """

    def __init__(self, num_heads, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = positive_int(num_heads, "num_heads")
        self.dropout_rate = rate(dropout_rate, "dropout_rate")

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={self.num_heads}.")
        # Columns of `qkv` are (query | key | value), each head-major (heads, d), as timm's `qkv`.
        # Each part is initialised as the original code's own (D, D) xavier-uniform projection:
        # fan_avg over the fused (D, 3D) kernel is 2D, so scale 2 gives the limit sqrt(3 / D).
        qkv_init = keras.initializers.VarianceScaling(2.0, mode="fan_avg", distribution="uniform")
        self.qkv = keras.layers.Dense(3 * hidden_dim, kernel_initializer=qkv_init, dtype=self.dtype_policy, name="qkv")
        self.output_dense = keras.layers.Dense(
            hidden_dim, kernel_initializer="glorot_uniform", dtype=self.dtype_policy, name="output"
        )
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy, name="dropout")
        self.qkv.build((None, hidden_dim))
        self.output_dense.build((None, hidden_dim))

    def call(self, tokens, attention_bias=None, training=None, return_attention_scores=False, return_keys=False):
        batch, length, dim = ops.shape(tokens)[0], ops.shape(tokens)[1], tokens.shape[-1]
        heads = self.num_heads
        qkv = self.qkv(ops.reshape(tokens, (-1, dim)))  # (B*T, 3D)
        qkv = ops.transpose(ops.reshape(qkv, (batch, length, 3, heads, dim // heads)), (2, 0, 3, 1, 4))
        # unstack, not qkv[i]: the gradient of a slice writes a zero-filled copy of all of qkv, per slice.
        query, key, value = ops.unstack(qkv, 3, axis=0)  # (B, heads, T, d) each
        query = query * ((dim // heads) ** -0.5)
        logits = ops.matmul(query, ops.swapaxes(key, -1, -2))  # (B, heads, T, T)
        if attention_bias is not None:
            logits = logits + ops.cast(attention_bias, logits.dtype)
        # Softmax in float32 under mixed precision (the casts vanish in float32).
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), logits.dtype)
        y = ops.matmul(self.dropout(weights, training=training), value)  # (B, heads, T, d)
        y = self.output_dense(ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (-1, dim)))  # (B*T, D)
        outputs = (ops.reshape(y, (batch, length, dim)),)
        outputs += (weights,) if return_attention_scores else ()
        outputs += (key,) if return_keys else ()
        return outputs if len(outputs) > 1 else outputs[0]

    def compute_output_spec(
        self, tokens, attention_bias=None, training=None, return_attention_scores=False, return_keys=False
    ):
        # Symbolic calls see the flags here (`compute_output_shape` does not), so they return the
        # same tuple as eager ones: tokens, then weights, then keys.
        batch, length, dim = tokens.shape
        heads, dtype = self.num_heads, self.compute_dtype
        outputs = (keras.KerasTensor(tokens.shape, dtype=dtype),)
        if return_attention_scores:
            outputs += (keras.KerasTensor((batch, heads, length, length), dtype=dtype),)
        if return_keys:
            outputs += (keras.KerasTensor((batch, heads, length, dim // heads), dtype=dtype),)
        return outputs if len(outputs) > 1 else outputs[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "dropout_rate": self.dropout_rate}


@_register
class LayerScale(keras.layers.Layer):
    """Multiplies each channel by a learned scale (Touvron et al. 2021, CaiT).

    On a residual branch, a small `init_value` lets a deep model start close
    to the identity; DeiT III and DINOv2 train with it.

    Args:
        init_value: the scale every channel starts at.

    Call arguments:
        x: `(..., D)`.

    Returns:
        `x * scale`, the same shape.
    """

    def __init__(self, init_value, **kwargs):
        super().__init__(**kwargs)
        if isinstance(init_value, bool) or not isinstance(init_value, (int, float)) or not init_value > 0:
            raise ValueError(f"init_value={init_value!r} must be a positive number.")
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init_value)
        )

    def call(self, x):
        return x * ops.cast(self.scale, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@_register
class TransformerBlock(keras.layers.Layer):
    """One pre-LayerNorm encoder block (paper, eqs. 2-3).

        x = x + DropPath(Dropout(MSA(LN(x))))
        x = x + DropPath(Dropout(Dense(Dropout(GELU(Dense(LN(x)))))))

    Attention is `SelfAttention` (fused query/key/value). The MLP runs on the
    tokens flattened to `(B*T, D)`: a 2-D matmul lets TensorFlow fuse its bias
    and exact GELU into the matmul, which a 3-D one does not. Stochastic depth
    (drop path) is Keras' `Dropout` with one mask value per sample.

    GELU is the exact `x * Phi(x)`, as timm and Hugging Face use. The original
    JAX code (google-research/vision_transformer's `MlpBlock`, and big_vision)
    calls flax's `nn.gelu`, whose default is the tanh approximation, so with
    the same weights the two differ slightly: on a randomly initialised B/16 at
    224 (random head), 9.5e-4 in the logits at most (logits up to 3.6), the
    same top-1.

    Args:
        num_heads: attention heads; must divide `D`.
        mlp_dim: hidden size of the MLP.
        dropout_rate: dropout after attention and in the MLP. Defaults to `0.0`.
        attention_dropout_rate: dropout on attention weights. Defaults to `0.0`.
        drop_path_rate: probability of skipping the block's branches for a
            sample (stochastic depth). Defaults to `0.0`.
        layer_norm_epsilon: Defaults to `1e-6`, as the original code.
        activation: of the MLP, `"gelu"`, `"gelu_tanh"` or `"quick_gelu"`
            (see `keras_vit.ViTConfig`). Defaults to `"gelu"`.
        layer_scale_init: with a value, each branch's output is multiplied
            by a learned per-channel `LayerScale` starting there (DeiT III,
            DINOv2): `x = x + DropPath(gamma * branch(x))`. Defaults to `None`.

    Call arguments:
        tokens: `(B, T, D)`.
        training: whether dropout and drop path are active.
        return_attention_scores: also return the `(B, heads, T, T)` weights.
        attention_bias: optional logits bias broadcastable to
            `(B, heads, T, T)` (adaptive tokens mask halted keys with it).

    Returns:
        `(B, T, D)` (and the attention weights when asked).
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        activation="gelu",
        layer_scale_init=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = positive_int(num_heads, "num_heads")
        self.mlp_dim = positive_int(mlp_dim, "mlp_dim")
        self.dropout_rate = rate(dropout_rate, "dropout_rate")
        self.attention_dropout_rate = rate(attention_dropout_rate, "attention_dropout_rate")
        self.drop_path_rate = rate(drop_path_rate, "drop_path_rate")
        self.layer_norm_epsilon = layer_norm_epsilon
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation={activation!r}; expected one of {ACTIVATIONS}.")
        self.activation = activation
        if layer_scale_init is not None and not (isinstance(layer_scale_init, (int, float)) and layer_scale_init > 0):
            raise ValueError(f"layer_scale_init={layer_scale_init!r} must be a positive number or None.")
        self.layer_scale_init = layer_scale_init

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={self.num_heads}.")
        # The original code's initialisers: xavier-uniform kernels, tiny normal MLP biases.
        dense = dict(
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            dtype=self.dtype_policy,
        )
        norm = dict(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy)
        self.norm_1 = LayerNorm(name="norm_1", **norm)
        self.attention = SelfAttention(
            self.num_heads, self.attention_dropout_rate, dtype=self.dtype_policy, name="attention"
        )
        self.norm_2 = LayerNorm(name="norm_2", **norm)
        self.mlp_dense_1 = keras.layers.Dense(self.mlp_dim, name="mlp_dense_1", **dense)  # GELU in `mlp`
        self.mlp_dense_2 = keras.layers.Dense(hidden_dim, name="mlp_dense_2", **dense)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy, name="dropout")
        self.drop_path = keras.layers.Dropout(
            self.drop_path_rate, noise_shape=(None, 1, 1), dtype=self.dtype_policy, name="drop_path"
        )
        self.layer_scale_1 = self.layer_scale_2 = None
        if self.layer_scale_init is not None:
            scale = dict(init_value=self.layer_scale_init, dtype=self.dtype_policy)
            self.layer_scale_1 = LayerScale(name="layer_scale_1", **scale)
            self.layer_scale_2 = LayerScale(name="layer_scale_2", **scale)
            self.layer_scale_1.build(input_shape)
            self.layer_scale_2.build(input_shape)
        flat = (None, hidden_dim)
        self.norm_1.build(flat)
        self.attention.build(input_shape)
        self.norm_2.build(flat)
        self.mlp_dense_1.build(flat)
        self.mlp_dense_2.build((None, self.mlp_dim))

    def call(self, tokens, training=None, return_attention_scores=False, attention_bias=None):
        x, *scores = self.attend(
            tokens, training=training, attention_bias=attention_bias, return_attention_scores=return_attention_scores
        )
        x = self.feed_forward(x, training=training)
        return (x, *scores) if return_attention_scores else x

    def attend(self, tokens, training=None, attention_bias=None, return_attention_scores=False, return_keys=False):
        """The first half of the block, `x + DropPath(Dropout(MSA(LN(x))))`.

        Token merging and attention maps call the halves themselves, so the
        block is written once. Returns `(x, [attention weights], [keys])`, the
        optional parts when asked (see `SelfAttention`).
        """
        outputs = self.attention(
            self.norm_1(tokens),
            attention_bias=attention_bias,
            training=training,
            return_attention_scores=return_attention_scores,
            return_keys=return_keys,
        )
        y, extras = (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (outputs, ())
        return (self.residual(tokens, y, training, self.layer_scale_1), *extras)

    def feed_forward(self, tokens, training=None):
        """The second half of the block, `x + DropPath(Dropout(MLP(LN(x))))`."""
        return self.residual(tokens, self.mlp(tokens, training), training, self.layer_scale_2)

    def compute_output_spec(self, tokens, training=None, return_attention_scores=False, attention_bias=None):
        # Symbolic calls see the flag here (`compute_output_shape` does not): tokens, then weights.
        out = keras.KerasTensor(tokens.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return out
        batch, length, _ = tokens.shape
        return out, keras.KerasTensor((batch, self.num_heads, length, length), dtype=self.compute_dtype)

    def residual(self, x, y, training, layer_scale=None):
        """`x + DropPath(Dropout(y))`, `y` scaled by `layer_scale` when the block has one."""
        y = self.dropout(y, training=training)
        if layer_scale is not None:
            y = layer_scale(y)
        return x + self.drop_path(y, training=training)

    def mlp(self, tokens, training=None):
        """`Dense(Dropout(GELU(Dense(LN(tokens)))))` on the flattened tokens: `(B, T, D)`."""
        dim = tokens.shape[-1]
        y = self.mlp_dense_1(self.norm_2(ops.reshape(tokens, (-1, dim))))  # (B*T, mlp_dim)
        y = activate(y, self.activation, training)
        y = self.mlp_dense_2(self.dropout(y, training=training))  # (B*T, D)
        return ops.reshape(y, ops.shape(tokens))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation": self.activation,
            "layer_scale_init": self.layer_scale_init,
        }
