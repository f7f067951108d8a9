"""timm: its state dicts <-> the canonical layout, and what its hub `config.json` says.

A timm hub folder holds `model.safetensors` and `config.json`: `{"architecture":
"vit_small_patch14_reg4_dinov2", "model_args": {...}, "pretrained_cfg": {"input_size": [3, 518,
518], "mean": [...], ...}}`. The architecture's name decides the family (`families.timm_family`:
one that keras_vit does not build is refused by name), what its factory function sets that no
tensor shows (activation, LayerNorm epsilon) and its head count (`families.timm_num_heads`);
`model_args` holds the arguments it was created with on top.

The state dict: `(out, in)` Linear weights, `(D, C, p, p)` convolutions, heads flattened into
`H*d`, fused `qkv` / `kv` projections; the families' extra tensors (LayerScale, registers, the
distillation token and head, CLIP's pre-norm, SigLIP's MAP head) are rows of the one table.
timm's position embedding is left as stored: with `no_embed_class` it has no prefix slots and
nothing in the state dict says so (`checkpoint.describe` and `adapt.adapt_prefix_slots` tell by
token counts).

Legend: `D` hidden_dim, `H` heads, `d` head_dim, `C` channels, `p` patch.
"""

import re

import numpy as np

from keras_vit.checkpoints import families
from keras_vit.checkpoints.canonical import (
    ATTENTION_NORM,
    BLOCK_ATTENTION,
    CLS,
    DIST,
    LEAF,
    MAP_ATTENTION,
    MLP_NORM,
    ORIGINAL_BLOCK,
    PATCH_NORM,
    POSEMB,
    PROBE,
    QKV_GROUP,
    REGISTERS,
    CheckpointError,
    N,
    from_pytorch,
    split_packed_swiglu,
)
from keras_vit.preprocessing import SCALINGS, check_scaling

# --- reading -----------------------------------------------------------------------------

WIDTH_KEY = "patch_embed.proj.weight"  # (D, C, p, p): how a timm state dict is recognised
NAFLEX_WIDTH_KEY = "embeds.proj.weight"  # (D, p*p*C): timm's NaFlexVit (SigLIP 2's NaFlex)
_TIMM_BLOCK = r"blocks\.(?P<block>\d+)\."
TIMM_KEYS = [
    (r"(?:patch_embed|embeds)\.proj" + LEAF, "embedding/{kind}", "conv"),
    (r"embeds\.pos_embed", POSEMB, "grid"),  # NaFlexVit's table, (1, rows, cols, D)
    (r"cls_token", CLS, "copy"),
    (r"dist_token", DIST, "copy"),  # DeiT's distillation token
    (r"reg_token", REGISTERS, "copy"),  # DINOv2's registers
    (r"pos_embed", POSEMB, "copy"),  # with or without prefix slots: `describe` and `adapt` tell which
    (r"norm_pre" + LEAF, "Transformer/pre_norm/{norm}", "copy"),  # CLIP
    (_TIMM_BLOCK + r"norm1" + LEAF, "LayerNorm_0/{norm}", "copy"),
    (_TIMM_BLOCK + r"attn\." + QKV_GROUP + LEAF, BLOCK_ATTENTION + "{qkv}/{kind}", "heads_in"),
    (_TIMM_BLOCK + r"attn\.proj" + LEAF, BLOCK_ATTENTION + "out/{kind}", "heads_out"),
    (_TIMM_BLOCK + r"ls" + N + r"\.gamma", "LayerScale_{n}/scale", "copy"),
    (_TIMM_BLOCK + r"norm2" + LEAF, "LayerNorm_2/{norm}", "copy"),
    (_TIMM_BLOCK + r"mlp\.fc" + N + LEAF, "MlpBlock_3/Dense_{n}/{kind}", "linear"),
    # EVA-02 (eva.py): unfused projections, the key's without a bias; the norms inside attention and SwiGLU.
    (_TIMM_BLOCK + r"attn\.(?P<qkv>q|k|v)_proj" + LEAF, BLOCK_ATTENTION + "{qkv}/{kind}", "heads_in"),
    (_TIMM_BLOCK + r"attn\.norm" + LEAF, ATTENTION_NORM + "{norm}", "copy"),
    (_TIMM_BLOCK + r"mlp\.norm" + LEAF, MLP_NORM + "{norm}", "copy"),
    # `fc_norm` is the final norm applied after pooling (`norm` is then an Identity, absent).
    (r"(?:fc_)?norm" + LEAF, "Transformer/encoder_norm/{norm}", "copy"),
    (r"attn_pool\.latent", PROBE, "copy"),  # SigLIP's attention pooling
    (r"attn_pool\." + QKV_GROUP + LEAF, MAP_ATTENTION + "{qkv}/{kind}", "heads_in"),
    (r"attn_pool\.proj" + LEAF, MAP_ATTENTION + "out/{kind}", "heads_out"),
    (r"attn_pool\.norm" + LEAF, "MAPHead_0/LayerNorm_0/{norm}", "copy"),
    (r"attn_pool\.mlp\.fc" + N + LEAF, "MAPHead_0/MlpBlock_0/Dense_{n}/{kind}", "linear"),
    (r"pre_logits\.fc" + LEAF, "pre_logits/{kind}", "linear"),  # older timm's representation layer
    (r"head" + LEAF, "head/{kind}", "linear"),
    (r"head_dist" + LEAF, "head_dist/{kind}", "linear"),
    # timm's Eva (DINOv3, eva.py): LayerScale as `gamma_1/2`, the query and value biases beside a bias-free `qkv`
    # (the key's is a zero buffer, not in the file), SwiGLU's gate and value halves as `fc1_g` / `fc1_x`.
    (_TIMM_BLOCK + r"gamma_" + N, "LayerScale_{n}/scale", "copy"),
    (_TIMM_BLOCK + r"attn\.(?P<qkv>q|v)_bias", BLOCK_ATTENTION + "{qkv}/bias", "heads_in"),
    (_TIMM_BLOCK + r"mlp\.fc1_g" + LEAF, "MlpBlock_3/Dense_0_gate/{kind}", "linear"),
    (_TIMM_BLOCK + r"mlp\.fc1_x" + LEAF, "MlpBlock_3/Dense_0_value/{kind}", "linear"),
    (r"patch_embed\.norm" + LEAF, PATCH_NORM.replace("scale", "{norm}"), "copy"),  # AIMv2's norm on the patches
]
_FUSED = [  # timm's block `qkv` and MAP head `kv`, split before the table applies
    (re.compile(r"(blocks\.\d+\.attn\.)qkv\.(weight|bias)"), "qkv"),
    (re.compile(r"(attn_pool\.)kv\.(weight|bias)"), "kv"),
]


def to_canonical(state, num_heads):
    """A timm `VisionTransformer` state dict -> the canonical layout (`(facts, arrays)`).

    `facts` are the `ViTConfig` fields the key names show: `fc_norm` is timm's norm after pooling.
    """
    facts = {"pooled_norm": True} if "fc_norm.weight" in state else {}
    if NAFLEX_WIDTH_KEY in state:
        facts["naflex"] = True
    return facts, split_packed_swiglu(from_pytorch(state, TIMM_KEYS, num_heads, fused=_FUSED))


# What `config.json`'s `model_args` may hold: what the tensors tell, or what does not change inference.
_TOLD_BY_TENSORS = {
    "embed_dim", "depth", "mlp_ratio", "patch_size", "num_classes", "in_chans", "class_token", "reg_tokens",
    "no_embed_class", "pre_norm", "fc_norm", "qkv_bias", "drop_rate", "pos_drop_rate", "proj_drop_rate",
    "attn_drop_rate", "drop_path_rate", "weight_init", "init_values", "num_heads", "img_size", "global_pool",
    "act_layer", "dynamic_img_size", "dynamic_img_pad", "pretrained_cfg_overlay", "pos_embed_grid_size",
}  # fmt: skip
# model_args -> the ViTConfig fields the tensors show, checked against them (a config.json that contradicts its
# tensors is refused naming both).
_SIZES = {"embed_dim": "hidden_dim", "depth": "num_layers"}
POOLING = {"token": "token", "avg": "gap", "map": "map"}
ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}


def read_config(config):
    """timm's `config.json` -> a `families.HubConfig`.

    The architecture's name is looked up in the family table: one that keras_vit does not build,
    or does not know, is a problem naming it and why.
    """
    name = config["architecture"]
    hub = families.HubConfig(source=f"timm {name!r}")
    try:
        hub.family = families.timm_family(name)
    except CheckpointError as e:
        hub.problems.append(str(e))
        return hub
    options, hub.tensors = hub.family.timm_facts(name)
    args = {**{k: config[k] for k in ("global_pool",) if k in config}, **config.get("model_args", {})}
    pretrained = config.get("pretrained_cfg", {})
    for key, field in (("reg_tokens", "num_register_tokens"), ("class_token", "class_token")):
        if args.get(key) is not None:  # what timm builds overrides what the name implies
            hub.tensors[field] = args[key]
    unknown = sorted(set(args) - _TOLD_BY_TENSORS)
    if unknown:
        hub.problems.append(f"timm model_args {unknown} change the model in ways keras_vit does not build")
    if args.get("global_pool") is not None:
        if args["global_pool"] not in POOLING:
            hub.problems.append(f"timm global_pool={args['global_pool']!r} is none of {sorted(POOLING)}")
        else:
            options["pooling"] = POOLING[args["global_pool"]]
    if args.get("act_layer") is not None:
        if args["act_layer"] not in ACTIVATIONS:
            hub.problems.append(f"timm act_layer={args['act_layer']!r} is none of {sorted(ACTIVATIONS)}")
        else:
            options["activation"] = ACTIVATIONS[args["act_layer"]]
    if args.get("init_values") is not None:
        options["layer_scale_init"] = float(args["init_values"])
    if args.get("dynamic_img_size"):
        options["dynamic_image_size"] = True
    size = args.get("img_size") or pretrained.get("input_size", [None])[1:]
    if size:
        options["image_size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    hub.sizes = {field: (key, args[key]) for key, field in _SIZES.items() if args.get(key) is not None}
    if args.get("patch_size") is not None:
        patch = args["patch_size"]
        hub.sizes["patch_size"] = ("patch_size", tuple(patch) if isinstance(patch, (list, tuple)) else (patch, patch))
    if options.get("naflex"):
        _naflex_sizes(name, args, hub, options)
    hub.options, hub.num_heads = options, args.get("num_heads") or families.timm_num_heads(name)
    hub.scaling = scaling_of(pretrained.get("mean"), pretrained.get("std"))
    return hub


def _naflex_sizes(name, args, hub, options):
    """NaFlexVit: the patch size (the name's unless `model_args` say) and the table's grid as `image_size`.

    Its `img_size` is only the size timm's own fixed-size path would take; the model's is the
    position table's grid (`pos_embed_grid_size`, 16 x 16 unless `model_args` say) times the patch.
    """
    if "patch_size" not in hub.sizes:
        match = re.search(r"_patch(\d+)", name)
        if match:
            hub.sizes["patch_size"] = ("the architecture's name", (int(match[1]),) * 2)
    patch = hub.sizes.get("patch_size", (None, None))[1]
    grid = args.get("pos_embed_grid_size") or (16, 16)  # NaFlexVitCfg's default
    grid = tuple(grid) if isinstance(grid, (list, tuple)) else (grid, grid)
    if patch is not None:
        options["image_size"] = tuple(g * p for g, p in zip(grid, patch))


# Mean/std of the pixel statistics as `config.json`s give them (0..1 pixels) -> `preprocessing.SCALINGS`.
_SCALINGS = {
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)): "vit",  # [-1, 1]: SigLIP, the original ViT
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)): "imagenet",
    ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)): "clip",
    ((0.43, 0.411, 0.296), (0.213, 0.156, 0.143)): "dinov3_sat",
}


def scaling_of(mean, std):
    """The `preprocessing.SCALINGS` name of a hub config's mean and std (0..1 pixels), if one."""
    if not mean or not std:
        return None
    key = (tuple(round(float(x), 8) for x in mean), tuple(round(float(x), 8) for x in std))
    return _SCALINGS.get(key)


# --- writing ---------------------------------------------------------------------------

_TIMM_NAMES = {
    CLS: "cls_token",
    DIST: "dist_token",
    REGISTERS: "reg_token",
    POSEMB: "pos_embed",
    PROBE: "attn_pool.latent",
}


# What EVA-02 and Perception Encoder models have and neither timm's VisionTransformer nor its DINOv3 (the layouts
# `to_timm` writes) has: their values there.
_EVA_ONLY = {
    "mlp_norm": False,
    "attention_norm": False,
    "encoder_norm": True,
    "map_num_heads": None,
    "map_mlp_dim": None,
}


def eva_problems(config):
    """The settings of an EVA-02 / PE `config` that `to_timm`'s layouts cannot express (sentences; none: writable)."""
    problems = [f"{key}={getattr(config, key)!r}" for key, plain in _EVA_ONLY.items() if getattr(config, key) != plain]
    rotary = config.rotary
    if rotary is not None and (rotary.reference_grid is not None or rotary.grid_offset):  # EVA's, PE's rotary
        problems.insert(0, f"rotary={rotary!r}")
    return problems


def to_timm(canonical, pooled_norm=False, eva=False):
    """The original layout -> a timm `VisionTransformer` state dict (NumPy arrays).

    The inverse of `TIMM_KEYS`, written out rather than derived from its regexes: fused
    `qkv` / `kv` projections are joined here, and `pooled_norm` models' final norm is timm's
    `fc_norm`. Every key must have a timm name; one that has none (a `pre_logits` layer,
    which timm's ViT no longer has) is an error naming it. With `eva`, the names of timm's
    `Eva` (DINOv3): LayerScale `gamma_1/2`, the query and value biases beside a bias-free
    `qkv`; a SwiGLU MLP is written as `fc1_g` / `fc1_x` either way.
    """
    out, used = {}, set()

    def take(key):
        used.add(key)
        return canonical[key]

    def linear(name, prefix):  # a Dense: (in, out) kernel -> (out, in) weight; its bias if it has one
        out[f"{name}.weight"] = take(f"{prefix}/kernel").T
        if f"{prefix}/bias" in canonical:
            out[f"{name}.bias"] = take(f"{prefix}/bias")

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
        _attention(take, prefix + BLOCK_ATTENTION, out, f"{timm}attn.", ("qkv",), canonical)
        norm(f"{timm}norm2", prefix + "LayerNorm_2")
        for n in (0, 1):
            if f"{prefix}LayerScale_{n}/scale" in canonical:
                out[f"{timm}gamma_{n + 1}" if eva else f"{timm}ls{n + 1}.gamma"] = take(f"{prefix}LayerScale_{n}/scale")
        if f"{prefix}MlpBlock_3/Dense_0_gate/kernel" in canonical:  # SwiGLU, as timm's `SwiGLU` (DINOv3 S+, H+, 7B)
            linear(f"{timm}mlp.fc1_g", f"{prefix}MlpBlock_3/Dense_0_gate")
            linear(f"{timm}mlp.fc1_x", f"{prefix}MlpBlock_3/Dense_0_value")
        else:
            linear(f"{timm}mlp.fc1", f"{prefix}MlpBlock_3/Dense_0")
        linear(f"{timm}mlp.fc2", f"{prefix}MlpBlock_3/Dense_1")
    norm("fc_norm" if pooled_norm else "norm", "Transformer/encoder_norm")
    if PROBE in canonical:
        _attention(take, MAP_ATTENTION, out, "attn_pool.", ("q", "kv"), canonical)
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


def _attention(take, prefix, out, timm, fused, canonical):
    """Per-head query/key/value/out -> timm's Linear layers (`qkv` fused, or `q` and `kv`).

    Without a key bias the query and value biases are Eva's `q_bias` and `v_bias` beside a
    bias-free `qkv`; without any, `qkv` alone.
    """
    parts = {"qkv": ("query", "key", "value"), "q": ("query",), "kv": ("key", "value")}
    for name in fused:
        kernels = [take(f"{prefix}{part}/kernel") for part in parts[name]]  # (D, H, d) each
        out[f"{timm}{name}.weight"] = np.concatenate([k.reshape(k.shape[0], -1).T for k in kernels])
        biases = [part for part in parts[name] if f"{prefix}{part}/bias" in canonical]
        if biases == list(parts[name]):
            out[f"{timm}{name}.bias"] = np.concatenate([take(f"{prefix}{part}/bias").reshape(-1) for part in biases])
        else:
            for part in biases:  # Eva: `q_bias`, `v_bias`
                out[f"{timm}{part[0]}_bias"] = take(f"{prefix}{part}/bias").reshape(-1)
    kernel = take(f"{prefix}out/kernel")  # (H, d, D)
    out[f"{timm}proj.weight"] = kernel.reshape(-1, kernel.shape[-1]).T
    if f"{prefix}out/bias" in canonical:
        out[f"{timm}proj.bias"] = take(f"{prefix}out/bias")


def write_config(config, scaling):
    """timm's `config.json` for `config`: an architecture whose factory sets what `model_args` cannot."""
    if config.rotary is not None:
        return _write_dinov3_config(config, scaling)
    problems = []
    if config.representation_size is not None:
        problems.append("a representation layer (timm's ViT has none)")
    if config.patch_bias == config.pre_norm:
        problems.append(f"patch_bias={config.patch_bias} with pre_norm={config.pre_norm} (timm ties them)")
    architecture = {1e-6: "vit_base_patch16_224", 1e-5: "vit_base_patch16_clip_224"}.get(config.layer_norm_epsilon)
    if architecture is None:
        problems.append(f"layer_norm_epsilon={config.layer_norm_epsilon} (timm's ViTs: 1e-6, CLIP's 1e-5)")
    if problems:
        raise ValueError(f"timm's VisionTransformer cannot express {'; '.join(problems)}: write the state dict alone.")
    if config.distillation:
        architecture = "deit_base_distilled_patch16_224"
    pooling = {"token": "token", "gap": "avg", "map": "map"}[config.pooling]
    args = {
        "img_size": list(config.image_size), "patch_size": list(config.patch_size), "in_chans": config.num_channels,
        "num_classes": config.num_classes, "global_pool": pooling, "embed_dim": config.hidden_dim,
        "depth": config.num_layers, "num_heads": config.num_heads, "mlp_ratio": config.mlp_dim / config.hidden_dim,
        "class_token": config.class_token, "reg_tokens": config.num_register_tokens,
        "no_embed_class": not config.embed_prefix_tokens, "init_values": config.layer_scale_init,
        "pre_norm": config.pre_norm, "fc_norm": config.pooled_norm, "act_layer": config.activation,
        "dynamic_img_size": config.dynamic_image_size,
    }  # fmt: skip
    return _hub_config(architecture, config, scaling, pooling, args, fixed_input_size=not config.dynamic_image_size)


def _hub_config(architecture, config, scaling, pooling, args, **pretrained):
    """timm's `config.json`: the architecture, its `model_args` and the `pretrained_cfg` (`pretrained` on top)."""
    pretrained = {
        "input_size": [config.num_channels, *config.image_size], "num_classes": config.num_classes,
        "first_conv": "patch_embed.proj", "classifier": "head", "interpolation": "bicubic", "crop_pct": 1.0,
        **pretrained,
    }  # fmt: skip
    if scaling is not None:
        mean, std = SCALINGS[check_scaling(scaling)]
        pretrained.update(mean=[m / 255 for m in mean], std=[s / 255 for s in std])
    return {
        "architecture": architecture, "num_classes": config.num_classes, "num_features": config.hidden_dim,
        "global_pool": pooling, "model_args": args, "pretrained_cfg": pretrained,
    }  # fmt: skip


def _write_dinov3_config(config, scaling):
    """timm's `config.json` for a DINOv3 model: the `vit_*_patch16_dinov3[_qkvb]` factory that builds its blocks.

    The factories fix what `model_args` cannot say (the rotary settings, 4 registers, LayerScale, epsilon 1e-5,
    the key bias held at zero, SwiGLU aligned to 8); a model that differs in any of them is refused naming each.
    """
    dinov3 = families.family("DINOv3")
    wanted = {**dinov3.options, "num_register_tokens": 4, "class_token": True, "proj_bias": True, "mlp_bias": True,
              "norm": "layernorm", "mlp_norm": False, "qk_norm": False, "attention_norm": False, "pre_norm": False,
              "patch_bias": True, "representation_size": None, "pooled_norm": False, "distillation": False}  # fmt: skip
    problems = [f"{key}={getattr(config, key)!r} (DINOv3's: {value!r})" for key, value in wanted.items()
                if key != "dynamic_image_size" and getattr(config, key) != value]  # fmt: skip
    if config.layer_scale_init is None:
        problems.append("no LayerScale")
    if config.qkv_bias and config.key_bias:
        problems.append("a key bias (timm's DINOv3 holds it at zero)")
    if config.mlp == "swiglu" and config.mlp_dim % 8:
        problems.append(f"mlp_dim={config.mlp_dim} (timm aligns SwiGLU to 8)")
    if problems:
        raise ValueError(f"timm's DINOv3 models cannot express {'; '.join(problems)}: write the state dict alone.")
    size = "small_plus" if config.mlp == "swiglu" else "small"  # the factory's blocks; model_args give the sizes
    architecture = f"vit_{size}_patch16_dinov3{'_qkvb' if config.qkv_bias else ''}"
    pooling = {"token": "token", "gap": "avg", "map": "map"}[config.pooling]
    args = {
        "img_size": list(config.image_size), "patch_size": list(config.patch_size), "in_chans": config.num_channels,
        "num_classes": config.num_classes, "global_pool": pooling, "embed_dim": config.hidden_dim,
        "depth": config.num_layers, "num_heads": config.num_heads, "mlp_ratio": config.mlp_dim / config.hidden_dim,
        "init_values": config.layer_scale_init,
    }  # fmt: skip
    return _hub_config(architecture, config, scaling, pooling, args, fixed_input_size=False, license="dinov3-license")
