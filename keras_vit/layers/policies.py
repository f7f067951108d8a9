"""Quantized sublayers in `.keras` files: the dtype policies of the layers a layer builds itself.

`model.quantize("int8" | "int4" | "float8")` gives each Dense a quantized dtype policy
(`int8_from_float32`, ...) and other variables (an int8 kernel and its scale). The Dense layers
that `SelfAttention`, `TransformerBlock` and `AttentionPooling` create in `build` are not in the
saved config, so a reloaded model built them float32 again and refused the saved variables
("Layer 'output' expected 2 variables, but received 3").

Keras' own answer, which keras-hub's backbones use (and `keras.dtype_policies.DTypePolicyMap`'s
docstring shows for `MultiHeadAttention`): the parent saves its quantized sublayers' policies,
by layer path, as a `DTypePolicyMap` in its `dtype`, and builds every sublayer with
`dtype=self.dtype_policy`; each sublayer then reads its own policy from the map by its path, and
a quantized Dense builds its quantized variables. A layer with nothing quantized saves its plain
policy, as before, so earlier `.keras` files and configs are unchanged.
"""

import keras


def dtype_config(layer):
    """`layer`'s `dtype` for `get_config`: its policy, or a map with its quantized sublayers' policies."""
    policy = layer.dtype_policy
    if isinstance(policy, keras.dtype_policies.DTypePolicyMap):  # loaded quantized: the map holds them
        return keras.dtype_policies.serialize(policy)
    quantized = {
        sublayer.path: sublayer.dtype_policy
        for sublayer in layer._flatten_layers(include_self=False)
        if sublayer.quantization_mode is not None
    }
    if not quantized:
        return keras.dtype_policies.serialize(policy)
    return keras.dtype_policies.serialize(keras.dtype_policies.DTypePolicyMap(policy, quantized))
