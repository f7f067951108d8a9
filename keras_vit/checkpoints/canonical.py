"""The canonical checkpoint layout: every key, the prefix slots, and which model variable holds each tensor.

Every source (`timm.py`, `transformers.py`, `big_vision.py`) is translated to and from one
layout: the flat key -> array dict of the original google-research/vision_transformer `.npz`
files, in Flax's shapes. Those are Keras' shapes too (a Conv2D kernel is `(p, p, C, D)`, the
attention projections `(D, H, d)` and `(H, d, D)`), so a model reads and writes it without
arithmetic. This module holds:

- the keys (`CLS`, `POSEMB`, the block keys ...), named once;
- the position embedding's prefix slots: `fold_prefix_slots` and `insert_prefix_slots`, the one
  definition every source and `adapt` use (a slot folded into its token gives the same sums);
- `from_pytorch`: a PyTorch state dict -> this layout by a table of regexes (timm's and
  transformers' tables live in their modules);
- `model_variables`: which tensor each weight of a `build_vit` model holds. Change a layer's
  weight layout here and loading, saving and every format follow.

Legend: `D` hidden_dim, `H` heads, `d` head_dim, `C` channels, `p` patch, `R` registers.
"""

import re

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model; says every reason."""


POSEMB, CLS = "Transformer/posembed_input/pos_embedding", "cls"
DIST, REGISTERS = "dist", "reg"  # DeiT's distillation token, DINOv2's registers: (1, 1, D), (1, R, D)
PRE_NORM = "Transformer/pre_norm/scale"  # CLIP's LayerNorm before the blocks
PROBE = "MAPHead_0/probe"  # SigLIP's attention pooling (big_vision's MAPHead)
PREFIX_TOKENS = (CLS, DIST, REGISTERS)  # in the order the model prepends them
HEAD, PRE_LOGITS, EMBEDDING = ("head/kernel", "head/bias"), ("pre_logits/kernel", "pre_logits/bias"), "embedding/kernel"
ORIGINAL_BLOCK = "Transformer/encoderblock_{}/"
BLOCK_ATTENTION = "MultiHeadDotProductAttention_1/"
MAP_ATTENTION = "MAPHead_0/MultiHeadDotProductAttention_0/"
QUERY = ORIGINAL_BLOCK.format(0) + BLOCK_ATTENTION + "query/kernel"  # (D, H, d): the width and the heads
MLP_IN = ORIGINAL_BLOCK.format(0) + "MlpBlock_3/Dense_0/kernel"  # (D, mlp_dim)
SWIGLU_IN = ORIGINAL_BLOCK.format(0) + "MlpBlock_3/Dense_0_gate/kernel"  # (D, mlp_dim): a SwiGLU MLP's gate
LAYER_SCALE = ORIGINAL_BLOCK.format(0) + "LayerScale_0/scale"
# The newer blocks' parts (EVA-02, Perception Encoder; `model_variables` below): SwiGLU's two halves
# (`silu(gate) * value`), the norm inside the MLP before its output projection (EVA's `scale_mlp`), the norm
# before the attention's output projection (EVA-CLIP's `scale_attn_inner`).
MLP_GATE, MLP_VALUE = "MlpBlock_3/Dense_0_gate/", "MlpBlock_3/Dense_0_value/"
MLP_NORM = "MlpBlock_3/LayerNorm_0/"
ATTENTION_NORM = BLOCK_ATTENTION + "attention_norm/"
KEY_BIAS = ORIGINAL_BLOCK.format(0) + BLOCK_ATTENTION + "key/bias"
QUERY_BIAS = ORIGINAL_BLOCK.format(0) + BLOCK_ATTENTION + "query/bias"
ENCODER_NORM = "Transformer/encoder_norm/scale"
MAP_MLP_IN = "MAPHead_0/MlpBlock_0/Dense_0/kernel"  # (D, the MAP head's MLP width)
PATCH_NORM = "embedding_norm/scale"  # AIMv2's RMSNorm on the patch embedding, before the position embedding
# A SwiGLU MLP's first layer, `silu(x W_gate) * (x W_value)` (see `SWIGLU_PARTS`): its gate and value kernels.
SWIGLU_GATE, SWIGLU_VALUE = "MlpBlock_3/Dense_0_gate/", "MlpBlock_3/Dense_0_value/"


# --- the prefix tokens' position slots ---------------------------------------------------


def prefix_count(arrays):
    """Prefix tokens (class, distillation, registers) that a dict of arrays or variables holds."""
    registers = arrays[REGISTERS].shape[1] if REGISTERS in arrays else 0
    return int(CLS in arrays) + int(DIST in arrays) + registers


def _slots(arrays, tokens):
    """`(key, start, stop)` of each prefix token's slots, in the model's token order."""
    start = 0
    for key in PREFIX_TOKENS:
        if key in arrays and key in tokens:
            stop = start + arrays[key].shape[1]
            yield key, start, stop
            start = stop


def fold_prefix_slots(arrays, tokens=PREFIX_TOKENS):
    """Adds each slot of `tokens` (in the model's order, first in the embedding) to its token, and drops it.

    `token + slot` is what the first block sees either way, so the sums are the same with the
    embedding added to the patches alone (timm's `no_embed_class`, big_vision's layout).
    """
    embedding, count = arrays[POSEMB], 0
    for key, start, stop in _slots(arrays, tokens):
        arrays[key] = arrays[key] + embedding[:, start:stop]
        count = stop
    arrays[POSEMB] = embedding[:, count:]
    return count


def insert_prefix_slots(arrays, tokens=PREFIX_TOKENS):
    """Zero slots for `tokens` at the front of the position embedding: the same sums as none."""
    count = sum(arrays[key].shape[1] for key in tokens if key in arrays)
    embedding = arrays[POSEMB]
    zeros = np.zeros_like(embedding[:, :1]).repeat(count, axis=1)
    arrays[POSEMB] = np.concatenate([zeros, embedding], axis=1)
    return count


# --- PyTorch state dicts, by a table of regexes -------------------------------------------

# A table row is (regex on the PyTorch key, canonical key template, transform). Named groups:
# `block` the block index (the key then goes under `Transformer/encoderblock_{block}/`); `leaf`
# weight/bias, giving `{kind}` kernel/bias and `{norm}` scale/bias; `qkv` the projection (`{qkv}`
# query/key/value); `n` 1 or 2, giving `{n}` 0 or 1 (MLP layers, LayerScale).
LEAF = r"\.(?P<leaf>weight|bias)"
N = r"(?P<n>[12])"
QKV_GROUP = r"(?P<qkv>query|key|value|q|k|v)"
# Tensors of PyTorch files that are no part of an image model (text towers, the contrastive loss' scale,
# DINOv2's mask token): dropped on reading, and said so.
IGNORED = re.compile(
    r"(?:.*\.)?(?:text_model\..*|text_projection\.weight|logit_scale|logit_bias|position_ids"
    r"|embeddings\.mask_token)"
)
_QKV = {"q": "query", "k": "key", "v": "value", "query": "query", "key": "key", "value": "value"}


def from_pytorch(state, table, num_heads, fused=()):
    """A PyTorch state dict -> the canonical layout, by `table`.

    `fused` lists `(compiled regex, parts)` of fused projections (timm's `qkv`), split first;
    `IGNORED` tensors are dropped. Keys without a row are kept under their own names: loading
    reports them as unexpected.
    """
    state = {k: v for k, v in state.items() if not IGNORED.fullmatch(k)}
    state = _split_fused(state, fused, _width(state, table))
    out = {}
    for key, value in state.items():
        for pattern, template, transform in table:
            match = re.fullmatch(pattern, key)
            if match:
                name, value = _convert(match, template, transform, value, num_heads)
                out[name] = value
                break
        else:
            out[key] = value  # no place in a ViT: reported as unexpected when loading
    if HEAD[0] in out and HEAD[1] not in out:
        out[HEAD[1]] = np.zeros(out[HEAD[0]].shape[-1:], out[HEAD[0]].dtype)  # CLIP's projection has no bias
    return out


def split_packed_swiglu(arrays):
    """A packed SwiGLU (timm's `SwiGLUPacked`, transformers' `weights_in`: DINOv2 giant): one first layer of `2 * mlp_dim` outputs, gate first -> gate and value.

    The shapes tell it, no name: a plain MLP's first layer has as many outputs as its second has
    inputs, a packed SwiGLU's twice as many.
    """
    for key in [k for k in arrays if k.endswith("MlpBlock_3/Dense_0/kernel")]:
        block = key[: -len("MlpBlock_3/Dense_0/kernel")]
        out = arrays.get(block + "MlpBlock_3/Dense_1/kernel")
        if out is None or arrays[key].shape[-1] != 2 * out.shape[0]:
            continue
        for leaf in ("kernel", "bias"):
            packed = arrays.pop(block + f"MlpBlock_3/Dense_0/{leaf}", None)
            if packed is not None:
                arrays[block + SWIGLU_GATE + leaf], arrays[block + SWIGLU_VALUE + leaf] = np.split(packed, 2, axis=-1)
    return arrays


def _width(state, table):
    """D, from the patch embedding's `(D, C, p, p)` weight (the table's `conv` row); `None` without one."""
    for key, value in state.items():
        for pattern, _, transform in table:
            if transform == "conv" and key.endswith("weight") and re.fullmatch(pattern, key):
                return value.shape[0]
    return None


def _split_fused(state, fused, width):
    """Fused `(kD, D)` projections -> one `(D, D)` entry per part (`attn.q`, `attn.k`, ...).

    A fused tensor whose length is not `k * D` is refused naming both shapes: it cannot be split.
    """
    out = {}
    for key, value in state.items():
        for pattern, parts in fused:
            match = pattern.fullmatch(key)
            if match:
                wanted = (len(parts) * (width or value.shape[0] // len(parts)), *value.shape[1:])
                if tuple(value.shape) != wanted or value.shape[0] % len(parts):
                    raise CheckpointError(
                        f"{key} has shape {tuple(value.shape)}, but a width-{width} ViT's is {wanted} ({'+'.join(parts)} "
                        "fused): the file is damaged, or not the architecture its name says."
                    )
                for name, part in zip(parts, np.split(value, len(parts), axis=0)):
                    out[f"{match[1]}{name}.{match[2]}"] = part
                break
        else:
            out[key] = value
    return out


def _convert(match, template, transform, value, num_heads):
    groups = match.groupdict()
    leaf = groups.get("leaf")
    kind = "bias" if leaf == "bias" else "kernel"
    name = template.format(
        kind=kind,
        norm="bias" if leaf == "bias" else "scale",
        qkv=_QKV.get(groups.get("qkv")),
        n=int(groups["n"]) - 1 if groups.get("n") else None,
    )
    if groups.get("block") is not None:
        name = ORIGINAL_BLOCK.format(groups["block"]) + name
    value = np.asarray(value)
    split_axis = -1 if transform == "heads_out" else 0  # the (out, in) axis that holds H*d
    if transform.startswith("heads") and value.shape[split_axis] % num_heads:
        transform = "linear"  # cannot split into heads: keep it flat, loading reports its shape
    if transform == "conv" and kind == "kernel" and value.ndim == 2:
        value = value.T  # NaFlex's Linear over flat patches, (D, p*p*C) -> (p*p*C, D): `unflatten_patch_kernel`
    elif transform == "conv" and kind == "kernel":
        value = value.transpose(2, 3, 1, 0)  # (D, C, p, p) -> (p, p, C, D)
    elif transform == "token":
        value = value.reshape(1, 1, -1)  # (D,) -> (1, 1, D)
    elif transform == "posemb":
        value = value[None]  # (N, D) -> (1, N, D)
    elif transform == "grid":
        value = value.reshape(1, -1, value.shape[-1])  # timm's NaFlex table (1, rows, cols, D) -> (1, N, D)
    elif kind == "kernel" and transform in ("linear", "heads_in", "heads_out"):
        value = value.T  # (out, in) -> (in, out)
    if transform == "heads_in":  # (D, H*d) -> (D, H, d); bias (H*d,) -> (H, d)
        value = value.reshape(*value.shape[:-1], num_heads, -1)
    elif transform == "heads_out" and kind == "kernel":  # (H*d, D) -> (H, d, D)
        value = value.reshape(num_heads, -1, value.shape[-1])
    return name, value


def unflatten_patch_kernel(arrays, patch_size, where):
    """A linear patch embedding's `(p*p*C, D)` kernel (SigLIP 2's NaFlex) -> the conv kernel `(p, p, C, D)`, in place.

    Both transformers and timm flatten a patch in `(row, column, channel)` order, the conv
    kernel's own; the patch size comes from `where` the file says it (its config.json), never
    from a guess at `p*p*C`.
    """
    kernel = arrays[EMBEDDING]
    if kernel.ndim == 4:
        return
    if patch_size is None or kernel.shape[0] % (patch_size[0] * patch_size[1]):
        said = "nothing says its patch size" if patch_size is None else f"{where} says patch_size={patch_size}"
        raise CheckpointError(
            f"The patch embedding is a Linear layer over {kernel.shape[0]} flattened patch values (a NaFlex model) "
            f"and {said}, which cannot cut them: pass the model folder with its config.json."
        )
    rows, cols = patch_size
    arrays[EMBEDDING] = kernel.reshape(rows, cols, -1, kernel.shape[-1])


# --- which tensor each model variable holds -------------------------------------------------

_NORM = {"gamma": "scale", "beta": "bias", "scale": "scale"}  # LayerNorm's two, RMSNormalization's one
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
    "distillation_token": {"token": DIST},
    "register_tokens": {"tokens": REGISTERS},
    "pre_norm": {ours: f"Transformer/pre_norm/{theirs}" for ours, theirs in _NORM.items()},
    "head_dist": {leaf: f"head_dist/{leaf}" for leaf in _LEAVES},
    "patch_norm": {ours: f"embedding_norm/{theirs}" for ours, theirs in _NORM.items()},  # AIMv2
}
_BLOCK_KEYS = {
    **{f"norm_1/{ours}": f"LayerNorm_0/{theirs}" for ours, theirs in _NORM.items()},
    **{f"norm_2/{ours}": f"LayerNorm_2/{theirs}" for ours, theirs in _NORM.items()},
    "attention/output/kernel": "MultiHeadDotProductAttention_1/out/kernel",
    "attention/output/bias": "MultiHeadDotProductAttention_1/out/bias",
    **{f"mlp_dense_{i + 1}/{leaf}": f"MlpBlock_3/Dense_{i}/{leaf}" for i in range(2) for leaf in _LEAVES},
    "layer_scale_1/scale": "LayerScale_0/scale",
    "layer_scale_2/scale": "LayerScale_1/scale",
    # The 2025-26 options (no original code has them: named after the block's own keys).
    **{f"attention/{norm}/{ours}": f"{BLOCK_ATTENTION}{norm}/{theirs}" for ours, theirs in _NORM.items()
       for norm in ("query_norm", "key_norm", "attention_norm")},
    **{f"mlp_norm/{ours}": f"MlpBlock_3/LayerNorm_0/{theirs}" for ours, theirs in _NORM.items()},
}  # fmt: skip
# SwiGLU: `mlp_dense_1` holds (gate | value) side by side, two checkpoint tensors each (timm's packed `fc1`).
SWIGLU_PARTS = ("Dense_0_gate", "Dense_0_value")
# Without a key bias (`key_bias=False`) the query and value biases are weights of their own.
_SPLIT_BIASES = {"attention/query_bias": "query", "attention/value_bias": "value"}
# big_vision's MAPHead (SigLIP): our `AttentionPooling` weights -> its keys. The attention projections are
# per head as in the blocks; keys and values share one fused `(D, 2D)` kernel, as timm's `kv`.
_MAP = "MAPHead_0/"
_MAP_KEYS = {
    "probe": PROBE,
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
        elif inner in _SPLIT_BIASES:
            out[f"{prefix}{BLOCK_ATTENTION}{_SPLIT_BIASES[inner]}/bias"] = _View(variable, (heads, dim // heads))
        elif inner.startswith("mlp_dense_1/") and getattr(layer, "mlp_kind", "mlp") == "swiglu":
            leaf = inner.rpartition("/")[2]
            shape = (*variable.shape[:-1], dim // 2)
            for i, part in enumerate(SWIGLU_PARTS):
                out[f"{prefix}MlpBlock_3/{part}/{leaf}"] = _View(variable, shape, i, 2)
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
                out[f"{MAP_ATTENTION}{part}/{inner.rpartition('/')[2]}"] = _View(variable, shape, i, len(parts))
        elif inner == "output/kernel":
            out[MAP_ATTENTION + "out/kernel"] = _View(variable, (heads, dim // heads, dim))
        elif inner == "output/bias":
            out[MAP_ATTENTION + "out/bias"] = variable
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
