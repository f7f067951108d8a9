"""bfloat16 inference on CPUs: the same model rebuilt under Keras' `mixed_bfloat16` policy.

On CPUs with AVX-512 BF16 or AMX (`grep -o 'avx512_bf16\\|amx_bf16' /proc/cpuinfo`), oneDNN runs
bfloat16 matmuls natively: the transformer's matmuls go faster while the variables stay float32
and the head computes in float32, as under `keras-vit train --precision mixed_bfloat16`.
Measured in `benchmarks/bfloat16.py`; the parity report's `SavedModel bfloat16` row shows what
it costs in logits. Without those instructions bfloat16 is emulated and slower: keep float32.
"""

import platform
import re

import keras

from keras_vit.model import build_model, model_config

PRECISIONS = ("float32", "bfloat16")


def bfloat16_copy(model):
    """`model` rebuilt under `mixed_bfloat16` with the same (float32) weights; its logits stay float32."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        copy = build_model(model_config(model))
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def with_precision(model, precision):
    """`model` itself for `"float32"`, its bfloat16 copy for `"bfloat16"`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}.")
    return model if precision == "float32" else bfloat16_copy(model)


def cpu_flags():
    """`(CPU model name, its bfloat16 / int8 matmul instructions)` from /proc/cpuinfo (none elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return platform.processor(), []
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = sorted(set(re.findall(r"\b(avx512_bf16|amx_bf16|amx_int8|avx512_vnni|avx_vnni)\b", text)))
    return (name.group(1) if name else platform.processor()), flags
