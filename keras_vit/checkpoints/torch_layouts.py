"""The PyTorch layouts (timm, Hugging Face transformers) <-> the canonical one, for every family.

One table per library maps each PyTorch key (a regex) to its canonical key and the
arithmetic between them: `(out, in)` Linear weights, `(D, C, p, p)` convolutions, heads
flattened into `H*d`, fused `qkv` / `kv` / `in_proj` projections. The families' extra
tensors (LayerScale, registers, the distillation token and head, CLIP's pre-norm, SigLIP's
MAP head) are rows of the same tables. `to_timm` writes the canonical layout back as timm's.

Legend: `D` hidden_dim, `H` heads, `d` head_dim, `C` channels, `p` patch.
"""

import re

import numpy as np

from keras_vit.checkpoints.adapt import CLS, DIST, POSEMB, REGISTERS

ORIGINAL_BLOCK = "Transformer/encoderblock_{}/"


# --- PyTorch layouts (timm, Hugging Face) ------------------------------------------

# (regex on the PyTorch key, canonical key template, transform). Named groups: `block` the block
# index (the key then goes under `Transformer/encoderblock_{block}/`); `leaf` weight/bias, giving
# `{kind}` kernel/bias and `{norm}` scale/bias; `qkv` the projection (`{qkv}` query/key/value);
# `n` 1 or 2, giving `{n}` 0 or 1 (MLP layers, LayerScale).
_LEAF = r"\.(?P<leaf>weight|bias)"
_N = r"(?P<n>[12])"
_QKV_GROUP = r"(?P<qkv>query|key|value|q|k|v)"
_MAP_ATTENTION = "MAPHead_0/MultiHeadDotProductAttention_0/"
_BLOCK_ATTENTION = "MultiHeadDotProductAttention_1/"
_TIMM_BLOCK = r"blocks\.(?P<block>\d+)\."
TIMM_KEYS = [
    (r"patch_embed\.proj" + _LEAF, "embedding/{kind}", "conv"),
    (r"cls_token", CLS, "copy"),
    (r"dist_token", DIST, "copy"),  # DeiT's distillation token
    (r"reg_token", REGISTERS, "copy"),  # DINOv2's registers
    (r"pos_embed", POSEMB, "copy"),  # with or without prefix slots: `describe` and `adapt` tell which
    (r"norm_pre" + _LEAF, "Transformer/pre_norm/{norm}", "copy"),  # CLIP
    (_TIMM_BLOCK + r"norm1" + _LEAF, "LayerNorm_0/{norm}", "copy"),
    (_TIMM_BLOCK + r"attn\." + _QKV_GROUP + _LEAF, _BLOCK_ATTENTION + "{qkv}/{kind}", "heads_in"),
    (_TIMM_BLOCK + r"attn\.proj" + _LEAF, _BLOCK_ATTENTION + "out/{kind}", "heads_out"),
    (_TIMM_BLOCK + r"ls" + _N + r"\.gamma", "LayerScale_{n}/scale", "copy"),
    (_TIMM_BLOCK + r"norm2" + _LEAF, "LayerNorm_2/{norm}", "copy"),
    (_TIMM_BLOCK + r"mlp\.fc" + _N + _LEAF, "MlpBlock_3/Dense_{n}/{kind}", "linear"),
    # `fc_norm` is the final norm applied after pooling (`norm` is then an Identity, absent).
    (r"(?:fc_)?norm" + _LEAF, "Transformer/encoder_norm/{norm}", "copy"),
    (r"attn_pool\.latent", "MAPHead_0/probe", "copy"),  # SigLIP's attention pooling
    (r"attn_pool\." + _QKV_GROUP + _LEAF, _MAP_ATTENTION + "{qkv}/{kind}", "heads_in"),
    (r"attn_pool\.proj" + _LEAF, _MAP_ATTENTION + "out/{kind}", "heads_out"),
    (r"attn_pool\.norm" + _LEAF, "MAPHead_0/LayerNorm_0/{norm}", "copy"),
    (r"attn_pool\.mlp\.fc" + _N + _LEAF, "MAPHead_0/MlpBlock_0/Dense_{n}/{kind}", "linear"),
    (r"pre_logits\.fc" + _LEAF, "pre_logits/{kind}", "linear"),  # older timm's representation layer
    (r"head" + _LEAF, "head/{kind}", "linear"),
    (r"head_dist" + _LEAF, "head_dist/{kind}", "linear"),
]
# One table for the Hugging Face ViT, DeiT, DINOv2 (with registers), SigLIP and CLIP vision models:
# their names do not collide. Files on the Hub (and save_pretrained) use the first spellings;
# transformers 5 in memory the `layers.N` / `q_proj` / `o_proj` ones.
_HF = r"(?:vit\.|deit\.|dinov2\.|vision_model\.)?"
_HF_LAYER = _HF + r"(?:encoder\.layers?|layers)\.(?P<block>\d+)\."
HUGGING_FACE_KEYS = [
    (_HF + r"embeddings\.patch_embeddings?(?:\.projection)?" + _LEAF, "embedding/{kind}", "conv"),
    (_HF + r"embeddings\.cls_token", CLS, "copy"),
    (_HF + r"embeddings\.class_embedding", CLS, "token"),  # CLIP: (D,)
    (_HF + r"embeddings\.distillation_token", DIST, "copy"),
    (_HF + r"embeddings\.register_tokens", REGISTERS, "copy"),
    (_HF + r"embeddings\.position_embeddings", POSEMB, "copy"),
    (_HF + r"embeddings\.position_embedding\.weight", POSEMB, "posemb"),  # CLIP, SigLIP: an nn.Embedding
    (_HF + r"pre_layrnorm" + _LEAF, "Transformer/pre_norm/{norm}", "copy"),  # sic: CLIP's name
    (_HF_LAYER + r"(?:layernorm_before|norm1|layer_norm1)" + _LEAF, "LayerNorm_0/{norm}", "copy"),
    (
        _HF_LAYER + r"(?:attention\.(?:attention\.)?|self_attn\.)" + _QKV_GROUP + r"(?:_proj)?" + _LEAF,
        _BLOCK_ATTENTION + "{qkv}/{kind}",
        "heads_in",
    ),
    (
        _HF_LAYER + r"(?:attention\.(?:output\.dense|o_proj)|self_attn\.out_proj)" + _LEAF,
        _BLOCK_ATTENTION + "out/{kind}",
        "heads_out",
    ),
    (_HF_LAYER + r"layer_scale" + _N + r"\.lambda1", "LayerScale_{n}/scale", "copy"),
    (_HF_LAYER + r"(?:layernorm_after|norm2|layer_norm2)" + _LEAF, "LayerNorm_2/{norm}", "copy"),
    (_HF_LAYER + r"(?:intermediate\.dense|mlp\.fc1)" + _LEAF, "MlpBlock_3/Dense_0/{kind}", "linear"),
    (_HF_LAYER + r"(?:output\.dense|mlp\.fc2)" + _LEAF, "MlpBlock_3/Dense_1/{kind}", "linear"),
    (_HF + r"(?:layernorm|post_layernorm)" + _LEAF, "Transformer/encoder_norm/{norm}", "copy"),
    (_HF + r"pooler\.dense" + _LEAF, "pre_logits/{kind}", "linear"),
    (r"(?:classifier|cls_classifier)" + _LEAF, "head/{kind}", "linear"),
    (r"distillation_classifier" + _LEAF, "head_dist/{kind}", "linear"),
    (r"visual_projection\.weight", "head/kernel", "linear"),  # CLIP's projection: a head without bias
    (_HF + r"head\.probe", "MAPHead_0/probe", "copy"),  # SigLIP's attention pooling
    (_HF + r"head\.attention\." + _QKV_GROUP + _LEAF, _MAP_ATTENTION + "{qkv}/{kind}", "heads_in"),
    (_HF + r"head\.attention\.out_proj" + _LEAF, _MAP_ATTENTION + "out/{kind}", "heads_out"),
    (_HF + r"head\.layernorm" + _LEAF, "MAPHead_0/LayerNorm_0/{norm}", "copy"),
    (_HF + r"head\.mlp\.fc" + _N + _LEAF, "MAPHead_0/MlpBlock_0/Dense_{n}/{kind}", "linear"),
]
# Tensors of the files that are no part of an image model: dropped on reading, and said so.
IGNORED = re.compile(
    r"(?:.*\.)?(?:text_model\..*|text_projection\.weight|logit_scale|logit_bias|position_ids"
    r"|embeddings\.mask_token)"
)
_QKV = {"q": "query", "k": "key", "v": "value", "query": "query", "key": "key", "value": "value"}
# Fused projections, split before the tables apply: (regex, parts). timm's block `qkv` and MAP
# head `kv`; PyTorch's nn.MultiheadAttention `in_proj` (SigLIP's MAP head in transformers).
_FUSED = [
    (re.compile(r"(blocks\.\d+\.attn\.)qkv\.(weight|bias)"), "qkv"),
    (re.compile(r"(attn_pool\.)kv\.(weight|bias)"), "kv"),
    (re.compile(r"(.*head\.attention\.)in_proj_(weight|bias)"), "qkv"),
]


def _split_fused(state):
    """Fused `(kD, D)` projections -> one `(D, D)` entry per part (`attn.q`, `attn.k`, ...)."""
    out = {}
    for key, value in state.items():
        for pattern, parts in _FUSED:
            match = pattern.fullmatch(key)
            if match:
                for name, part in zip(parts, np.split(value, len(parts), axis=0)):
                    out[f"{match[1]}{name}.{match[2]}"] = part
                break
        else:
            out[key] = value
    return out


def from_torch(state, table, num_heads):
    state = _split_fused({k: v for k, v in state.items() if not IGNORED.fullmatch(k)})
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
    if "head/kernel" in out and "head/bias" not in out:
        out["head/bias"] = np.zeros(out["head/kernel"].shape[-1:], out["head/kernel"].dtype)  # CLIP's projection
    if REGISTERS in out and CLS in out and POSEMB in out and table is HUGGING_FACE_KEYS:
        # transformers' DINOv2 with registers adds the position embedding to [class, patches] and
        # then inserts the registers: its class slot folds into the token, leaving the patches' part
        # (the model's `embed_prefix_tokens=False`, as timm's `no_embed_class`).
        out[CLS] = out[CLS] + out[POSEMB][:, :1]
        out[POSEMB] = out[POSEMB][:, 1:]
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
    if transform == "conv" and kind == "kernel":
        value = value.transpose(2, 3, 1, 0)  # (D, C, p, p) -> (p, p, C, D)
    elif transform == "token":
        value = value.reshape(1, 1, -1)  # (D,) -> (1, 1, D)
    elif transform == "posemb":
        value = value[None]  # (N, D) -> (1, N, D)
    elif kind == "kernel" and transform in ("linear", "heads_in", "heads_out"):
        value = value.T  # (out, in) -> (in, out)
    if transform == "heads_in":  # (D, H*d) -> (D, H, d); bias (H*d,) -> (H, d)
        value = value.reshape(*value.shape[:-1], num_heads, -1)
    elif transform == "heads_out" and kind == "kernel":  # (H*d, D) -> (H, d, D)
        value = value.reshape(num_heads, -1, value.shape[-1])
    return name, value


# --- writing timm's layout -----------------------------------------------------------

_TIMM_NAMES = {  # canonical key (without block prefix) -> timm name; `{w}` weight or bias
    "cls": "cls_token",
    "dist": "dist_token",
    "reg": "reg_token",
    "Transformer/posembed_input/pos_embedding": "pos_embed",
    "MAPHead_0/probe": "attn_pool.latent",
}


def to_timm(canonical, pooled_norm=False):
    """The original layout -> a timm `VisionTransformer` state dict (NumPy arrays).

    The inverse of `TIMM_KEYS`, written out rather than derived from its regexes: fused
    `qkv` / `kv` projections are joined here, and `pooled_norm` models' final norm is timm's
    `fc_norm`. Every key must have a timm name; one that has none (a `pre_logits` layer,
    which timm's ViT no longer has) is an error naming it.
    """
    out, used = {}, set()

    def take(key):
        used.add(key)
        return canonical[key]

    def linear(name, prefix):  # a Dense: (in, out) kernel -> (out, in) weight
        out[f"{name}.weight"], out[f"{name}.bias"] = take(f"{prefix}/kernel").T, take(f"{prefix}/bias")

    def norm(name, prefix):
        out[f"{name}.weight"], out[f"{name}.bias"] = take(f"{prefix}/scale"), take(f"{prefix}/bias")

    for key, name in _TIMM_NAMES.items():
        if key in canonical:
            out[name] = take(key)
    out["patch_embed.proj.weight"] = take("embedding/kernel").transpose(3, 2, 0, 1)  # (p, p, C, D) -> (D, C, p, p)
    if "embedding/bias" in canonical:
        out["patch_embed.proj.bias"] = take("embedding/bias")
    if "Transformer/pre_norm/scale" in canonical:
        norm("norm_pre", "Transformer/pre_norm")
    blocks = sorted({int(k.split("/")[1][len("encoderblock_") :]) for k in canonical if "/encoderblock_" in k})
    for i in blocks:
        prefix, timm = ORIGINAL_BLOCK.format(i), f"blocks.{i}."
        norm(f"{timm}norm1", prefix + "LayerNorm_0")
        _attention(take, prefix + _BLOCK_ATTENTION, out, f"{timm}attn.", ("qkv",))
        norm(f"{timm}norm2", prefix + "LayerNorm_2")
        for n in (0, 1):
            if f"{prefix}LayerScale_{n}/scale" in canonical:
                out[f"{timm}ls{n + 1}.gamma"] = take(f"{prefix}LayerScale_{n}/scale")
            linear(f"{timm}mlp.fc{n + 1}", f"{prefix}MlpBlock_3/Dense_{n}")
    norm("fc_norm" if pooled_norm else "norm", "Transformer/encoder_norm")
    if "MAPHead_0/probe" in canonical:
        _attention(take, _MAP_ATTENTION, out, "attn_pool.", ("q", "kv"))
        norm("attn_pool.norm", "MAPHead_0/LayerNorm_0")
        for n in (0, 1):
            linear(f"attn_pool.mlp.fc{n + 1}", f"MAPHead_0/MlpBlock_0/Dense_{n}")
    for head in ("head", "head_dist"):
        if f"{head}/kernel" in canonical:
            linear(head, head)
    unknown = sorted(set(canonical) - used)
    if unknown:
        raise ValueError(f"These weights have no place in a timm ViT: {unknown}.")
    return {key: np.ascontiguousarray(value, "float32") for key, value in out.items()}


def _attention(take, prefix, out, timm, fused):
    """Per-head query/key/value/out -> timm's Linear layers (`qkv` fused, or `q` and `kv`)."""
    parts = {"qkv": ("query", "key", "value"), "q": ("query",), "kv": ("key", "value")}
    for name in fused:
        kernels = [take(f"{prefix}{part}/kernel") for part in parts[name]]  # (D, H, d) each
        out[f"{timm}{name}.weight"] = np.concatenate([k.reshape(k.shape[0], -1).T for k in kernels])
        out[f"{timm}{name}.bias"] = np.concatenate([take(f"{prefix}{part}/bias").reshape(-1) for part in parts[name]])
    kernel = take(f"{prefix}out/kernel")  # (H, d, D)
    out[f"{timm}proj.weight"] = kernel.reshape(-1, kernel.shape[-1]).T
    out[f"{timm}proj.bias"] = take(f"{prefix}out/bias")
