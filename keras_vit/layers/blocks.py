"""The Transformer encoder block: pre-LayerNorm self-attention and MLP, each a residual branch.

    tokens (B, T, D) -> TransformerBlock x L -> (B, T, D)
    x + LayerScale(SelfAttention(LayerNorm(x))), then x + LayerScale(MLP(LayerNorm(x)))

Legend: `B` batch, `T` tokens, `D` hidden_dim, `h` heads, `d = D / h`.
"""

import keras
from keras import ops

from keras_vit.config import ACTIVATIONS, MLPS, positive_int, rate
from keras_vit.layers.functions import activate, boolean, make_norm, norm_kind
from keras_vit.layers.policies import dtype_config
from keras_vit.layers.rotary import apply_rotary

_register = keras.saving.register_keras_serializable(package="keras_vit")


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
    `(B, T, heads, d)` and so two more transposes per product; the attention
    core is measured both ways in `benchmarks/README.md` (the `keras_mha`
    rung of the ladder). The test suite checks this layer against Keras'
    `MultiHeadAttention` holding the same weights.

    The options of the newer families (`keras_vit.ViTConfig` has each):
    bias flags per projection, a norm on each head's queries and keys
    (`qk_norm`), a norm before the output projection (`attention_norm`), and
    a rotary embedding applied to the queries and keys after their norms.

    Args:
        num_heads: attention heads; must divide `D`.
        dropout_rate: dropout on the attention weights. Defaults to `0.0`.
        qkv_bias: the query/key/value projection has a bias. Defaults to `True`.
        key_bias: with `qkv_bias`, `False` leaves the keys without one (the
            projection is then bias-free and the query and value biases are
            the weights `query_bias` and `value_bias`). Defaults to `True`.
        proj_bias: the output projection has a bias. Defaults to `True`.
        qk_norm: norms `query_norm` and `key_norm` over each head's `d`
            channels. Defaults to `False`.
        attention_norm: a norm `attention_norm` over `D` before the output
            projection. Defaults to `False`.
        norm: `"layernorm"` or `"rmsnorm"`, for those norms. Defaults to `"layernorm"`.
        layer_norm_epsilon: their epsilon. Defaults to `1e-6`.
        rotate_half: how a rotary table pairs channels (see
            `keras_vit.config.Rotary`); read only with `rotary`. Defaults to `True`.

    Call arguments:
        tokens: `(B, T, D)`.
        attention_bias: optional logits bias broadcastable to
            `(B, heads, T, T)` (token merging adds `log(size)` of the keys).
        positions: optional `(B, T)` int32, each token's index in the
            embedded sequence (`keras_vit.model.TokenState`): which row of
            `rotary` each token takes. `None`: token `i` is at `i`.
        rotary: optional `(T0, 2d)` table of a `RotaryEmbedding`, rotating
            the queries and keys (`keras_vit.layers.rotary`).
        training: whether dropout is active.
        return_attention_scores: also return the `(B, heads, T, T)` weights.
        return_keys: also return the keys, `(B, heads, T, d)`.

    Returns:
        `(B, T, D)`, followed by the weights and keys when asked.
    """

    def __init__(
        self,
        num_heads,
        dropout_rate=0.0,
        qkv_bias=True,
        key_bias=True,
        proj_bias=True,
        qk_norm=False,
        attention_norm=False,
        norm="layernorm",
        layer_norm_epsilon=1e-6,
        rotate_half=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = positive_int(num_heads, "num_heads")
        self.dropout_rate = rate(dropout_rate, "dropout_rate")
        for key, value in (("qkv_bias", qkv_bias), ("key_bias", key_bias), ("proj_bias", proj_bias),
                           ("qk_norm", qk_norm), ("attention_norm", attention_norm), ("rotate_half", rotate_half)):  # fmt: skip
            setattr(self, key, boolean(value, key))
        self.norm = norm_kind(norm)
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={self.num_heads}.")
        head_dim = hidden_dim // self.num_heads
        # Columns of `qkv` are (query | key | value), each head-major (heads, d), as timm's `qkv`.
        # Each part is initialised as the original code's own (D, D) xavier-uniform projection:
        # fan_avg over the fused (D, 3D) kernel is 2D, so scale 2 gives the limit sqrt(3 / D).
        qkv_init = keras.initializers.VarianceScaling(2.0, mode="fan_avg", distribution="uniform")
        fused_bias = self.qkv_bias and self.key_bias
        self.qkv = keras.layers.Dense(
            3 * hidden_dim, use_bias=fused_bias, kernel_initializer=qkv_init, dtype=self.dtype_policy, name="qkv"
        )
        self.query_bias = self.value_bias = None
        if self.qkv_bias and not self.key_bias:  # a key bias would cancel in the softmax anyway: EVA fixes it at 0
            self.query_bias = self.add_weight(name="query_bias", shape=(hidden_dim,), initializer="zeros")
            self.value_bias = self.add_weight(name="value_bias", shape=(hidden_dim,), initializer="zeros")
        self.output_dense = keras.layers.Dense(
            hidden_dim,
            use_bias=self.proj_bias,
            kernel_initializer="glorot_uniform",
            dtype=self.dtype_policy,
            name="output",
        )
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy, name="dropout")
        norm = dict(kind=self.norm, epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy)
        self.query_norm = make_norm(name="query_norm", **norm) if self.qk_norm else None
        self.key_norm = make_norm(name="key_norm", **norm) if self.qk_norm else None
        self.attention_norm_layer = make_norm(name="attention_norm", **norm) if self.attention_norm else None
        self.qkv.build((None, hidden_dim))
        self.output_dense.build((None, hidden_dim))
        for layer, width in ((self.query_norm, head_dim), (self.key_norm, head_dim),
                             (self.attention_norm_layer, hidden_dim)):  # fmt: skip
            if layer is not None:
                layer.build((None, width))

    def call(
        self,
        tokens,
        attention_bias=None,
        training=None,
        return_attention_scores=False,
        return_keys=False,
        positions=None,
        rotary=None,
    ):
        batch, length, dim = ops.shape(tokens)[0], ops.shape(tokens)[1], tokens.shape[-1]
        heads = self.num_heads
        qkv = self.qkv(ops.reshape(tokens, (-1, dim)))  # (B*T, 3D)
        if self.query_bias is not None:
            query_bias, value_bias = (ops.cast(bias, qkv.dtype) for bias in (self.query_bias, self.value_bias))
            qkv = qkv + ops.concatenate([query_bias, ops.zeros_like(query_bias), value_bias], axis=0)
        qkv = ops.transpose(ops.reshape(qkv, (batch, length, 3, heads, dim // heads)), (2, 0, 3, 1, 4))
        # unstack, not qkv[i]: the gradient of a slice writes a zero-filled copy of all of qkv, per slice.
        query, key, value = ops.unstack(qkv, 3, axis=0)  # (B, heads, T, d) each
        if self.query_norm is not None:
            query, key = self.query_norm(query), self.key_norm(key)
        if rotary is not None:  # after the norms, as timm
            query = apply_rotary(query, rotary, self.rotate_half, positions)
            key = apply_rotary(key, rotary, self.rotate_half, positions)
        query = query * ((dim // heads) ** -0.5)
        logits = ops.matmul(query, ops.swapaxes(key, -1, -2))  # (B, heads, T, T)
        if attention_bias is not None:
            logits = logits + ops.cast(attention_bias, logits.dtype)
        # Softmax in float32 under mixed precision (the casts vanish in float32).
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), logits.dtype)
        y = ops.matmul(self.dropout(weights, training=training), value)  # (B, heads, T, d)
        y = ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (-1, dim))  # (B*T, D)
        if self.attention_norm_layer is not None:
            y = self.attention_norm_layer(y)
        y = self.output_dense(y)
        outputs = (ops.reshape(y, (batch, length, dim)),)
        outputs += (weights,) if return_attention_scores else ()
        outputs += (key,) if return_keys else ()
        return outputs if len(outputs) > 1 else outputs[0]

    def compute_output_spec(
        self,
        tokens,
        attention_bias=None,
        training=None,
        return_attention_scores=False,
        return_keys=False,
        positions=None,
        rotary=None,
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
        return {
            **super().get_config(),
            "dtype": dtype_config(self),
            "num_heads": self.num_heads,
            "dropout_rate": self.dropout_rate,
            "qkv_bias": self.qkv_bias,
            "key_bias": self.key_bias,
            "proj_bias": self.proj_bias,
            "qk_norm": self.qk_norm,
            "attention_norm": self.attention_norm,
            "norm": self.norm,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "rotate_half": self.rotate_half,
        }


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
        norm: `"layernorm"` or `"rmsnorm"`, every norm of the block.
            Defaults to `"layernorm"`.
        mlp: `"mlp"` or `"swiglu"`: `mlp_dense_1` then holds the gate and
            value halves side by side (`2 * mlp_dim` outputs, one matmul),
            `silu(gate) * value` feeds `mlp_dense_2`. Defaults to `"mlp"`.
        mlp_norm: a norm `mlp_norm` over `mlp_dim` before `mlp_dense_2`
            (EVA's `scale_mlp`). Defaults to `False`.
        mlp_bias: the MLP's Dense layers have biases. Defaults to `True`.
        qkv_bias, key_bias, proj_bias, qk_norm, attention_norm, rotate_half:
            the attention's (see `SelfAttention`).

    Call arguments:
        tokens: `(B, T, D)`.
        training: whether dropout and drop path are active.
        return_attention_scores: also return the `(B, heads, T, T)` weights.
        attention_bias: optional logits bias broadcastable to
            `(B, heads, T, T)` (adaptive tokens mask halted keys with it).
        positions: optional `(B, T)` int32 token positions, passed to the
            attention (see `SelfAttention`).
        rotary: optional rotary table, passed to the attention.

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
        norm="layernorm",
        mlp="mlp",
        mlp_norm=False,
        qkv_bias=True,
        key_bias=True,
        proj_bias=True,
        mlp_bias=True,
        qk_norm=False,
        attention_norm=False,
        rotate_half=True,
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
        self.norm = norm_kind(norm)
        if mlp not in MLPS:
            raise ValueError(f"Unknown mlp={mlp!r}; expected one of {MLPS}.")
        self.mlp_kind = mlp
        for key, value in (("mlp_norm", mlp_norm), ("qkv_bias", qkv_bias), ("key_bias", key_bias),
                           ("proj_bias", proj_bias), ("mlp_bias", mlp_bias), ("qk_norm", qk_norm),
                           ("attention_norm", attention_norm), ("rotate_half", rotate_half)):  # fmt: skip
            setattr(self, key, boolean(value, key))

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={self.num_heads}.")
        # The original code's initialisers: xavier-uniform kernels, tiny normal MLP biases.
        dense = dict(
            use_bias=self.mlp_bias,
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            dtype=self.dtype_policy,
        )
        norm = dict(kind=self.norm, epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy)
        self.norm_1 = make_norm(name="norm_1", **norm)
        self.attention = SelfAttention(
            self.num_heads,
            self.attention_dropout_rate,
            qkv_bias=self.qkv_bias,
            key_bias=self.key_bias,
            proj_bias=self.proj_bias,
            qk_norm=self.qk_norm,
            attention_norm=self.attention_norm,
            norm=self.norm,
            layer_norm_epsilon=self.layer_norm_epsilon,
            rotate_half=self.rotate_half,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.norm_2 = make_norm(name="norm_2", **norm)
        halves = 2 if self.mlp_kind == "swiglu" else 1  # SwiGLU: (gate | value), one matmul
        self.mlp_dense_1 = keras.layers.Dense(halves * self.mlp_dim, name="mlp_dense_1", **dense)  # activation in `mlp`
        self.mlp_norm_layer = make_norm(name="mlp_norm", **norm) if self.mlp_norm else None
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
        if self.mlp_norm_layer is not None:
            self.mlp_norm_layer.build((None, self.mlp_dim))
        self.mlp_dense_2.build((None, self.mlp_dim))

    def call(
        self, tokens, training=None, return_attention_scores=False, attention_bias=None, positions=None, rotary=None
    ):
        x, *scores = self.attend(
            tokens,
            training=training,
            attention_bias=attention_bias,
            return_attention_scores=return_attention_scores,
            positions=positions,
            rotary=rotary,
        )
        x = self.feed_forward(x, training=training)
        return (x, *scores) if return_attention_scores else x

    def attend(
        self,
        tokens,
        training=None,
        attention_bias=None,
        return_attention_scores=False,
        return_keys=False,
        positions=None,
        rotary=None,
    ):
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
            positions=positions,
            rotary=rotary,
        )
        y, extras = (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (outputs, ())
        return (self.residual(tokens, y, training, self.layer_scale_1), *extras)

    def feed_forward(self, tokens, training=None):
        """The second half of the block, `x + DropPath(Dropout(MLP(LN(x))))`."""
        return self.residual(tokens, self.mlp(tokens, training), training, self.layer_scale_2)

    def compute_output_spec(
        self, tokens, training=None, return_attention_scores=False, attention_bias=None, positions=None, rotary=None
    ):
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
        """`Dense(Dropout(GELU(Dense(LN(tokens)))))` on the flattened tokens: `(B, T, D)`.

        SwiGLU in place of GELU(Dense) with `mlp="swiglu"`; the `mlp_norm` before the last Dense when asked.
        """
        dim = tokens.shape[-1]
        y = self.mlp_dense_1(self.norm_2(ops.reshape(tokens, (-1, dim))))  # (B*T, mlp_dim), SwiGLU 2 * mlp_dim
        if self.mlp_kind == "swiglu":
            gate, value = y[:, : self.mlp_dim], y[:, self.mlp_dim :]  # timm's packed fc1: gate first
            y = ops.silu(gate) * value
        else:
            y = activate(y, self.activation, training)
        y = self.dropout(y, training=training)
        if self.mlp_norm_layer is not None:
            y = self.mlp_norm_layer(y)
        y = self.mlp_dense_2(y)  # (B*T, D)
        return ops.reshape(y, ops.shape(tokens))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dtype": dtype_config(self),
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation": self.activation,
            "layer_scale_init": self.layer_scale_init,
            "norm": self.norm,
            "mlp": self.mlp_kind,
            "mlp_norm": self.mlp_norm,
            "qkv_bias": self.qkv_bias,
            "key_bias": self.key_bias,
            "proj_bias": self.proj_bias,
            "mlp_bias": self.mlp_bias,
            "qk_norm": self.qk_norm,
            "attention_norm": self.attention_norm,
            "rotate_half": self.rotate_half,
        }
