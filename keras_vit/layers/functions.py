"""The numerics under every layer: LayerNorm and GELU with hand-written gradients, the MLP's activation.

Only `keras` and `keras.ops`, no TensorFlow, as in every module of `keras_vit.layers`.
"""

import keras
from keras import ops

_register = keras.saving.register_keras_serializable(package="keras_vit")


# --- two hand-written gradients --------------------------------------------------------
# Autodiff of LayerNorm and exact GELU, written as elementwise graphs, runs about twice the
# memory passes a hand-derived gradient needs, and on a CPU those passes, not the matmuls, are
# what a small ViT's training step waits on: measured whole by benchmarks/ablation.py and per
# part by benchmarks/ladder.py (figures in benchmarks/README.md). The functions are the same
# (tests check values and gradients against Keras').


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


# --- the norm of a model, by name ------------------------------------------------------


def norm_kind(value):
    """`value` if it names a norm (`keras_vit.config.NORMS`), else a `ValueError`."""
    if value not in ("layernorm", "rmsnorm"):
        raise ValueError(f"Unknown norm={value!r}; expected 'layernorm' or 'rmsnorm'.")
    return value


def make_norm(kind, epsilon, name, dtype=None):
    """A new norm layer over the last axis: our `LayerNorm`, or Keras' own `RMSNormalization`.

    Keras' `RMSNormalization` computes `x * rsqrt(mean(x^2) + eps) * scale` in
    at least float32, as timm's `RmsNorm` and transformers' RMS norms do;
    its weight is `scale`.
    """
    if norm_kind(kind) == "rmsnorm":
        return keras.layers.RMSNormalization(epsilon=epsilon, dtype=dtype, name=name)
    return LayerNorm(epsilon=epsilon, dtype=dtype, name=name)


def boolean(value, name):
    """`value` if it is `True` or `False`, else a `ValueError` naming it."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False.")
    return value
