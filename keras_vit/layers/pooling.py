"""From tokens to one vector per image, and back to a patch grid.

    tokens (B, T, D) -> ClassTokenPooling | PatchAveragePooling | AttentionPooling -> (B, D)
    tokens (B, T, D) -> PatchGrid -> (B, H/p, W/p, D)   (dense features)
    tokens (B, T, D) -> TokenSlice -> (B, P, D)         (the prefix tokens)

Legend: `B` batch, `T` tokens
(prefix tokens, then `N` patches), `D` hidden_dim, `h` heads, `d = D / h`.
"""

import keras
from keras import ops

from keras_vit.config import ACTIVATIONS, positive_int, to_pair
from keras_vit.layers.functions import activate, make_norm, norm_kind
from keras_vit.layers.policies import dtype_config

_register = keras.saving.register_keras_serializable(package="keras_vit")


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
class PatchAveragePooling(keras.layers.Layer):
    """The mean of the patch tokens, leaving out the prefix (class, registers): `(B, T, D) -> (B, D)`.

    timm's `global_pool="avg"`. With no prefix tokens it is Keras'
    `GlobalAveragePooling1D`, which 0.1.0's `gap` models use.

    Args:
        num_prefix_tokens: leading tokens to leave out. Defaults to `0`.
    """

    def __init__(self, num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens={num_prefix_tokens!r} must be a non-negative integer.")
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, tokens):
        return ops.mean(tokens[:, self.num_prefix_tokens :], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "num_prefix_tokens": self.num_prefix_tokens}


@_register
class AttentionPooling(keras.layers.Layer):
    """Multi-head attention pooling: a learned probe attends to the tokens (big_vision's MAP head).

        x = MHA(query=probe, keys=values=tokens)      # (B, 1, D)
        x = x + MLP(LN(x))
        return x[:, 0]                                # (B, D)

    SigLIP pools its image tower this way (Zhai et al. 2023); the layout
    follows big_vision's `MAPHead` and timm's `AttentionPoolLatent` (one
    probe). Keys and values come from one fused `(D, 2D)` projection, as
    timm's `kv`; the MLP is the blocks' (Dense, activation, Dense).

    Args:
        num_heads: attention heads; must divide `D`.
        mlp_dim: hidden size of the MLP.
        layer_norm_epsilon: Defaults to `1e-6`.
        activation: of the MLP (see `keras_vit.ViTConfig`). Defaults to `"gelu"`.
        norm: `"layernorm"` or `"rmsnorm"`, the norm before the MLP.
            Defaults to `"layernorm"`.

    Call arguments:
        tokens: `(B, T, D)`.
        attention_bias: optional logits bias broadcastable to `(B, h, 1, T)`:
            a padding mask's (`PaddingBias`, SigLIP 2's NaFlex), so padding
            tokens get no weight.

    Returns:
        `(B, D)`.
    """

    def __init__(self, num_heads, mlp_dim, layer_norm_epsilon=1e-6, activation="gelu", norm="layernorm", **kwargs):
        super().__init__(**kwargs)
        self.norm_kind = norm_kind(norm)
        self.num_heads = positive_int(num_heads, "num_heads")
        self.mlp_dim = positive_int(mlp_dim, "mlp_dim")
        self.layer_norm_epsilon = layer_norm_epsilon
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation={activation!r}; expected one of {ACTIVATIONS}.")
        self.activation = activation

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(f"hidden_dim={dim} is not divisible by num_heads={self.num_heads}.")
        self.probe = self.add_weight(
            name="probe", shape=(1, 1, dim), initializer=keras.initializers.GlorotUniform()
        )  # big_vision: xavier_uniform
        dense = dict(kernel_initializer="glorot_uniform", dtype=self.dtype_policy)
        self.query = keras.layers.Dense(dim, name="query", **dense)
        self.key_value = keras.layers.Dense(2 * dim, name="key_value", **dense)
        self.output_dense = keras.layers.Dense(dim, name="output", **dense)
        self.norm = make_norm(self.norm_kind, self.layer_norm_epsilon, "norm", dtype=self.dtype_policy)
        self.mlp_dense_1 = keras.layers.Dense(self.mlp_dim, name="mlp_dense_1", **dense)
        self.mlp_dense_2 = keras.layers.Dense(dim, name="mlp_dense_2", **dense)
        for layer, width in ((self.query, dim), (self.key_value, dim), (self.output_dense, dim), (self.norm, dim),
                             (self.mlp_dense_1, dim), (self.mlp_dense_2, self.mlp_dim)):  # fmt: skip
            layer.build((None, width))

    def call(self, tokens, attention_bias=None):
        batch, length, dim = ops.shape(tokens)[0], ops.shape(tokens)[1], tokens.shape[-1]
        heads, head_dim = self.num_heads, dim // self.num_heads
        query = self.query(ops.cast(self.probe[0], tokens.dtype))  # (1, D): the same for every image
        query = ops.transpose(ops.reshape(query, (1, 1, heads, head_dim)), (0, 2, 1, 3)) * head_dim**-0.5
        query = ops.broadcast_to(query, (batch, heads, 1, head_dim))  # (B, h, 1, d)
        kv = self.key_value(ops.reshape(tokens, (-1, dim)))  # (B*T, 2D)
        key, value = ops.unstack(ops.transpose(ops.reshape(kv, (batch, length, 2, heads, head_dim)), (2, 0, 3, 1, 4)))
        logits = ops.matmul(query, ops.swapaxes(key, -1, -2))  # (B, h, 1, T)
        if attention_bias is not None:
            logits = logits + ops.cast(attention_bias, logits.dtype)
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), logits.dtype)
        x = ops.reshape(ops.matmul(weights, value), (-1, dim))  # (B, h, 1, d) -> (B, D)
        x = self.output_dense(x)
        return x + self.mlp_dense_2(activate(self.mlp_dense_1(self.norm(x)), self.activation))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def compute_output_spec(self, tokens, attention_bias=None):
        return keras.KerasTensor((tokens.shape[0], tokens.shape[2]), dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "dtype": dtype_config(self),
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation": self.activation,
            "norm": self.norm_kind,
        }


@_register
class PatchGrid(keras.layers.Layer):
    """The patch tokens as an image of features: `(B, T, D) -> (B, H/p, W/p, D)`, prefix dropped.

    What dense tasks (segmentation, depth) read from a backbone such as
    DINOv2; timm's `forward_intermediates` in NHWC, Keras' layout.

    Args:
        num_prefix_tokens: leading tokens that are not patches.
        patch_size: int or `(height, width)`.

    Call arguments:
        tokens: `(B, T, D)`.
        images: the `(B, H, W, C)` images the tokens come from (for the grid).
    """

    def __init__(self, num_prefix_tokens, patch_size, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens={num_prefix_tokens!r} must be a non-negative integer.")
        self.num_prefix_tokens = num_prefix_tokens
        self.patch_size = to_pair(patch_size, "patch_size")

    def call(self, tokens, images):
        rows, cols = (
            static // patch if static is not None else ops.shape(images)[axis] // patch
            for axis, static, patch in zip((1, 2), images.shape[1:3], self.patch_size)
        )
        return ops.reshape(tokens[:, self.num_prefix_tokens :], (-1, rows, cols, tokens.shape[-1]))

    def compute_output_spec(self, tokens, images):
        rows, cols = (
            None if size is None else size // patch for size, patch in zip(images.shape[1:3], self.patch_size)
        )
        return keras.KerasTensor((tokens.shape[0], rows, cols, tokens.shape[-1]), dtype=tokens.dtype)

    def get_config(self):
        return {**super().get_config(), "num_prefix_tokens": self.num_prefix_tokens, "patch_size": self.patch_size}


@_register
class TokenSlice(keras.layers.Layer):
    """`tokens[:, start:stop]`, as a layer so that `.keras` files load in safe mode.

    Args:
        start: first token kept.
        stop: one past the last token kept.
    """

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop):
            raise ValueError(f"TokenSlice(start={start!r}, stop={stop!r}) needs integers 0 <= start < stop.")
        self.start, self.stop = start, stop

    def call(self, tokens):
        return tokens[:, self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.stop - self.start, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}
