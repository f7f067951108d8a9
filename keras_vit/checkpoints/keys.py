"""Which checkpoint tensor each weight of a `build_vit` model holds.

The one place that maps Keras variable paths (`block_3/attention/qkv/kernel`)
to the keys of the original google-research/vision_transformer checkpoints
(`Transformer/encoderblock_3/MultiHeadDotProductAttention_1/query/kernel`).
Change a layer's weight layout here and loading, saving and every checkpoint
format follow.
"""

import numpy as np

from keras_vit.checkpoints.adapt import CLS, POSEMB

_NORM = {"gamma": "scale", "beta": "bias"}
_LEAVES = ("kernel", "bias")
# Our layer name -> {weight path inside the layer: key in the original checkpoints}.
_LAYER_KEYS = {
    "patch_embedding": {f"projection/{leaf}": f"embedding/{leaf}" for leaf in _LEAVES},
    "class_token": {"token": CLS},
    "position_embedding": {"embedding": POSEMB},
    "encoder_norm": {ours: f"Transformer/encoder_norm/{theirs}" for ours, theirs in _NORM.items()},
    "pre_logits": {leaf: f"pre_logits/{leaf}" for leaf in _LEAVES},
    "head": {leaf: f"head/{leaf}" for leaf in _LEAVES},
    # The descendants' parts, named where the original code has no name for them (big_vision's where it has).
    "pooled_norm": {ours: f"Transformer/encoder_norm/{theirs}" for ours, theirs in _NORM.items()},
    "distillation_token": {"token": "dist"},
    "register_tokens": {"tokens": "reg"},
    "pre_norm": {ours: f"Transformer/pre_norm/{theirs}" for ours, theirs in _NORM.items()},
    "head_dist": {leaf: f"head_dist/{leaf}" for leaf in _LEAVES},
}
_BLOCK_KEYS = {
    **{f"norm_1/{ours}": f"LayerNorm_0/{theirs}" for ours, theirs in _NORM.items()},
    **{f"norm_2/{ours}": f"LayerNorm_2/{theirs}" for ours, theirs in _NORM.items()},
    "attention/output/kernel": "MultiHeadDotProductAttention_1/out/kernel",
    "attention/output/bias": "MultiHeadDotProductAttention_1/out/bias",
    **{f"mlp_dense_{i + 1}/{leaf}": f"MlpBlock_3/Dense_{i}/{leaf}" for i in range(2) for leaf in _LEAVES},
    "layer_scale_1/scale": "LayerScale_0/scale",
    "layer_scale_2/scale": "LayerScale_1/scale",
}
# big_vision's MAPHead (SigLIP): our `AttentionPooling` weights -> its keys. The attention projections are
# per head as in the blocks; keys and values share one fused `(D, 2D)` kernel, as timm's `kv`.
_MAP = "MAPHead_0/"
_MAP_ATTENTION = _MAP + "MultiHeadDotProductAttention_0/"
_MAP_KEYS = {
    "probe": _MAP + "probe",
    **{f"norm/{ours}": f"{_MAP}LayerNorm_0/{theirs}" for ours, theirs in _NORM.items()},
    **{f"mlp_dense_{i + 1}/{leaf}": f"{_MAP}MlpBlock_0/Dense_{i}/{leaf}" for i in range(2) for leaf in _LEAVES},
}
# Our fused `(D, 3D)` query/key/value projection holds three checkpoint tensors, side by side.
_FUSED_QKV = {f"attention/qkv/{leaf}": f"MultiHeadDotProductAttention_1/{{}}/{leaf}" for leaf in _LEAVES}
_QKV_PARTS = ("query", "key", "value")


class _View:
    """One checkpoint tensor seen in a model variable: a column block of it, in the checkpoint's shape.

    The checkpoints keep attention projections per head (`(D, heads, d)`,
    `(heads, d, D)`); our layers keep them as plain matrices, with query,
    key and value fused into one. A view reads and writes its part.
    """

    def __init__(self, variable, shape, part=0, parts=1):
        self.variable, self.shape, self.part, self.parts = variable, tuple(shape), part, parts
        self.dtype, self.path = variable.dtype, variable.path

    def numpy(self):
        return np.split(np.asarray(self.variable.numpy()), self.parts, axis=-1)[self.part].reshape(self.shape)

    def assign(self, value):
        blocks = np.split(np.asarray(self.variable.numpy()), self.parts, axis=-1)
        blocks[self.part] = np.asarray(value, blocks[self.part].dtype).reshape(blocks[self.part].shape)
        self.variable.assign(np.concatenate(blocks, axis=-1))


def _block_variables(layer):
    """`{original key: variable or _View}` of one `TransformerBlock`."""
    prefix = f"Transformer/encoderblock_{layer.name[6:]}/"
    heads = layer.num_heads
    out = {}
    for variable in layer.weights:
        inner = variable.path.partition(f"{layer.name}/")[2]
        dim = variable.shape[-1]
        if inner in _FUSED_QKV:
            dim //= 3
            shape = (dim, heads, dim // heads) if inner.endswith("kernel") else (heads, dim // heads)
            for i, part in enumerate(_QKV_PARTS):
                out[prefix + _FUSED_QKV[inner].format(part)] = _View(variable, shape, i, 3)
        elif inner == "attention/output/kernel":
            out[prefix + _BLOCK_KEYS[inner]] = _View(variable, (heads, dim // heads, dim))
        else:
            out[prefix + _BLOCK_KEYS[inner] if inner in _BLOCK_KEYS else f"keras:{variable.path}"] = variable
    return out


def _map_variables(layer):
    """`{big_vision key: variable or _View}` of an `AttentionPooling` layer."""
    heads = layer.num_heads
    out = {}
    for variable in layer.weights:
        inner = variable.path.partition(f"{layer.name}/")[2]
        dim = variable.shape[-1]
        kernel = inner.endswith("kernel")
        if inner.startswith(("query/", "key_value/")):
            parts = ("query",) if inner.startswith("query/") else ("key", "value")
            dim //= len(parts)
            shape = (variable.shape[0], heads, dim // heads) if kernel else (heads, dim // heads)
            for i, part in enumerate(parts):
                out[f"{_MAP_ATTENTION}{part}/{inner.rpartition('/')[2]}"] = _View(variable, shape, i, len(parts))
        elif inner == "output/kernel":
            out[_MAP_ATTENTION + "out/kernel"] = _View(variable, (heads, dim // heads, dim))
        elif inner == "output/bias":
            out[_MAP_ATTENTION + "out/bias"] = variable
        else:
            out[_MAP_KEYS.get(inner, f"keras:{variable.path}")] = variable
    return out


def model_variables(model):
    """`{original checkpoint key: variable}` for every weight of a `build_vit` model.

    Weights of layers this module does not know are keyed `keras:<path>`, so
    a load reports them as missing instead of ignoring them.
    """
    out = {}
    for layer in model.layers:
        if layer.name.startswith("block_"):
            out.update(_block_variables(layer))
            continue
        if layer.name == "map_pooling":
            out.update(_map_variables(layer))
            continue
        table = _LAYER_KEYS.get(layer.name, {})
        for variable in layer.weights:
            inner = variable.path.partition(f"{layer.name}/")[2]
            out[table.get(inner, f"keras:{variable.path}")] = variable
    return out
