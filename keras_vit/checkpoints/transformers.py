"""Hugging Face transformers: its ViT-family state dicts -> the canonical layout, and its `config.json`.

A transformers folder holds `model.safetensors` (or shards) and `config.json`: `{"architectures":
["Dinov2Model"], "model_type": "dinov2", "hidden_act": ..., "layer_norm_eps": ..., "image_size":
..., "num_attention_heads": ...}`; a two-tower model (SigLIP, CLIP) nests its image tower's in
`vision_config`, and its `preprocessor_config.json` names the pixel statistics. The `model_type`
decides the family (`families.transformers_family`: one keras_vit does not build is refused by name).

Legend: `D` hidden_dim, `H` heads, `d` head_dim, `C` channels, `p` patch.
"""

import dataclasses
import math
import re

from keras_vit.checkpoints import families
from keras_vit.checkpoints.canonical import (
    BLOCK_ATTENTION,
    CLS,
    DIST,
    LEAF,
    MAP_ATTENTION,
    PATCH_NORM,
    POSEMB,
    PROBE,
    QKV_GROUP,
    REGISTERS,
    SWIGLU_GATE,
    SWIGLU_VALUE,
    CheckpointError,
    N,
    fold_prefix_slots,
    from_pytorch,
    split_packed_swiglu,
)
from keras_vit.checkpoints.timm import scaling_of

WIDTH_KEYS = (
    "embeddings.patch_embeddings.projection.weight",
    "embeddings.patch_embedding.weight",
    "embeddings.patch_embed.weight",  # AIMv2
    "preprocessor.patchifier.proj.weight",  # Apple's own AIMv2 layout (apple/aimv2-*)
    "embeddings.patch_embeddings.weight",  # DINOv3: its Conv2d itself
)
# One table for the Hugging Face ViT, DeiT, DINOv2 (with registers), SigLIP and CLIP vision models:
# their names do not collide. Files on the Hub (and save_pretrained) use the first spellings;
# transformers 5 in memory the `layers.N` / `q_proj` / `o_proj` ones.
_HF = r"(?:vit\.|deit\.|dinov2\.|vision_model\.)?"
_HF_LAYER = (
    _HF + r"(?:encoder\.layers?|layers|(?:model\.)?layer)\.(?P<block>\d+)\."
)  # DINOv3: layer.N (in memory model.layer.N)
_APPLE_BLOCK = r"trunk\.blocks\.(?P<block>\d+)\."
KEYS = [
    (_HF + r"embeddings\.patch_embeddings?(?:\.projection)?" + LEAF, "embedding/{kind}", "conv"),
    (_HF + r"embeddings\.cls_token", CLS, "copy"),
    (_HF + r"embeddings\.class_embedding", CLS, "token"),  # CLIP: (D,)
    (_HF + r"embeddings\.distillation_token", DIST, "copy"),
    (_HF + r"embeddings\.register_tokens", REGISTERS, "copy"),
    (_HF + r"embeddings\.position_embeddings", POSEMB, "copy"),
    (_HF + r"embeddings\.position_embedding\.weight", POSEMB, "posemb"),  # CLIP, SigLIP: an nn.Embedding
    (_HF + r"pre_layrnorm" + LEAF, "Transformer/pre_norm/{norm}", "copy"),  # sic: CLIP's name
    (_HF_LAYER + r"(?:layernorm_before|norm1|layer_norm1)" + LEAF, "LayerNorm_0/{norm}", "copy"),
    (
        _HF_LAYER + r"(?:attention\.(?:attention\.)?|self_attn\.)" + QKV_GROUP + r"(?:_proj)?" + LEAF,
        BLOCK_ATTENTION + "{qkv}/{kind}",
        "heads_in",
    ),
    (
        _HF_LAYER + r"(?:attention\.(?:output\.dense|o_proj)|self_attn\.out_proj)" + LEAF,
        BLOCK_ATTENTION + "out/{kind}",
        "heads_out",
    ),
    (_HF_LAYER + r"layer_scale" + N + r"\.lambda1", "LayerScale_{n}/scale", "copy"),
    (_HF_LAYER + r"(?:layernorm_after|norm2|layer_norm2)" + LEAF, "LayerNorm_2/{norm}", "copy"),
    # DINOv3's `up_proj` is the MLP's first Dense, or SwiGLU's value half beside `gate_proj` (`to_canonical`).
    (_HF_LAYER + r"(?:intermediate\.dense|mlp\.fc1|mlp\.up_proj)" + LEAF, "MlpBlock_3/Dense_0/{kind}", "linear"),
    (_HF_LAYER + r"mlp\.gate_proj" + LEAF, "MlpBlock_3/Dense_0_gate/{kind}", "linear"),
    (_HF_LAYER + r"(?:output\.dense|mlp\.fc2|mlp\.down_proj)" + LEAF, "MlpBlock_3/Dense_1/{kind}", "linear"),
    (_HF + r"(?:layernorm|post_layernorm|norm)" + LEAF, "Transformer/encoder_norm/{norm}", "copy"),
    (_HF + r"pooler\.dense" + LEAF, "pre_logits/{kind}", "linear"),
    (r"(?:classifier|cls_classifier)" + LEAF, "head/{kind}", "linear"),
    (r"distillation_classifier" + LEAF, "head_dist/{kind}", "linear"),
    (r"visual_projection\.weight", "head/kernel", "linear"),  # CLIP's projection: a head without bias
    (_HF + r"head\.probe", PROBE, "copy"),  # SigLIP's attention pooling
    (_HF + r"head\.attention\." + QKV_GROUP + LEAF, MAP_ATTENTION + "{qkv}/{kind}", "heads_in"),
    (_HF + r"head\.attention\.out_proj" + LEAF, MAP_ATTENTION + "out/{kind}", "heads_out"),
    (_HF + r"head\.layernorm" + LEAF, "MAPHead_0/LayerNorm_0/{norm}", "copy"),
    (_HF + r"head\.mlp\.fc" + N + LEAF, "MAPHead_0/MlpBlock_0/Dense_{n}/{kind}", "linear"),
    # AIMv2 (`Aimv2VisionModel`): RMSNorms, a SwiGLU `ffn` (gate, up = value, down), a norm on the patch embedding.
    (_HF + r"embeddings\.patch_embed" + LEAF, "embedding/{kind}", "conv"),
    (_HF + r"embeddings\.rms_norm" + LEAF, PATCH_NORM.replace("scale", "{norm}"), "copy"),
    (_HF_LAYER + r"rms_norm1" + LEAF, "LayerNorm_0/{norm}", "copy"),
    (_HF_LAYER + r"rms_norm2" + LEAF, "LayerNorm_2/{norm}", "copy"),
    (_HF_LAYER + r"attention\.out_proj" + LEAF, BLOCK_ATTENTION + "out/{kind}", "heads_out"),
    (_HF_LAYER + r"ffn\.gate_proj" + LEAF, SWIGLU_GATE + "{kind}", "linear"),
    (_HF_LAYER + r"ffn\.up_proj" + LEAF, SWIGLU_VALUE + "{kind}", "linear"),
    (_HF_LAYER + r"ffn\.down_proj" + LEAF, "MlpBlock_3/Dense_1/{kind}", "linear"),
    # DINOv2 giant's SwiGLU as the Hub stores it: `weights_in` packs gate and value (split by `split_packed_swiglu`).
    (_HF_LAYER + r"mlp\.weights_in" + LEAF, "MlpBlock_3/Dense_0/{kind}", "linear"),
    (_HF_LAYER + r"mlp\.weights_out" + LEAF, "MlpBlock_3/Dense_1/{kind}", "linear"),
    (_HF + r"rms_norm" + LEAF, "Transformer/encoder_norm/{norm}", "copy"),
    # Apple's own AIMv2 layout (the apple/aimv2-* repositories' modeling code; timm's `_convert_aimv2` reads the same).
    (r"preprocessor\.patchifier\.proj" + LEAF, "embedding/{kind}", "conv"),
    (r"preprocessor\.patchifier\.norm" + LEAF, PATCH_NORM.replace("scale", "{norm}"), "copy"),
    (r"preprocessor\.pos_embed", POSEMB, "copy"),
    (_APPLE_BLOCK + r"norm_1" + LEAF, "LayerNorm_0/{norm}", "copy"),
    (_APPLE_BLOCK + r"norm_2" + LEAF, "LayerNorm_2/{norm}", "copy"),
    (_APPLE_BLOCK + r"attn\." + QKV_GROUP + LEAF, BLOCK_ATTENTION + "{qkv}/{kind}", "heads_in"),
    (_APPLE_BLOCK + r"attn\.proj" + LEAF, BLOCK_ATTENTION + "out/{kind}", "heads_out"),
    (_APPLE_BLOCK + r"mlp\.fc1" + LEAF, SWIGLU_GATE + "{kind}", "linear"),
    (_APPLE_BLOCK + r"mlp\.fc3" + LEAF, SWIGLU_VALUE + "{kind}", "linear"),
    (_APPLE_BLOCK + r"mlp\.fc2" + LEAF, "MlpBlock_3/Dense_1/{kind}", "linear"),
    (r"trunk\.post_trunk_norm" + LEAF, "Transformer/encoder_norm/{norm}", "copy"),
]
_FUSED = [
    (re.compile(r"(.*head\.attention\.)in_proj_(weight|bias)"), "qkv"),  # nn.MultiheadAttention (SigLIP's MAP)
    (re.compile(r"(trunk\.blocks\.\d+\.attn\.)qkv\.(weight|bias)"), "qkv"),  # Apple's AIMv2, as timm's
]


def to_canonical(state, num_heads):
    """A transformers ViT, DeiT, DINOv2, SigLIP or CLIP image model's state dict -> `(facts, canonical arrays)`."""
    out = split_packed_swiglu(from_pytorch(state, KEYS, num_heads, fused=_FUSED))
    if REGISTERS in out and CLS in out and POSEMB in out:
        # transformers' DINOv2 with registers adds the position embedding to [class, patches] and then
        # inserts the registers: its class slot folds into the token, leaving the patches' part (the
        # model's `embed_prefix_tokens=False`, as timm's `no_embed_class`).
        fold_prefix_slots(out, tokens=(CLS,))
    for key in [key for key in out if "/MlpBlock_3/Dense_0_gate/" in key]:  # DINOv3's gated MLP: up_proj is the value
        value = key.replace("Dense_0_gate", "Dense_0")
        if value in out:
            out[key.replace("Dense_0_gate", "Dense_0_value")] = out.pop(value)
    return {}, out


ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "quick_gelu": "quick_gelu"}
# config.json -> the ViTConfig fields the tensors show, checked against them.
_SIZES = {"hidden_size": "hidden_dim", "num_hidden_layers": "num_layers", "intermediate_size": "mlp_dim"}


def _naflex_options(vision, options, problems):
    """`Siglip2VisionConfig`: the position table is `sqrt(num_patches)` square (transformers' own reading)."""
    if not vision.get("vision_use_head", True):
        problems.append("vision_use_head=False: a SigLIP 2 tower without its MAP head, not built")
    patches, patch = vision.get("num_patches", 256), vision.get("patch_size", 16)
    side = math.isqrt(patches)
    if side * side != patches:
        problems.append(f"num_patches={patches} is not a square grid of positions")
    options["image_size"] = (side * patch, side * patch)


def _dinov3_rotary(vision, problems):
    """DINOv3's rotary settings from its config.json: its `rope_theta` (the train-time coordinate noise is idle at inference)."""
    rotary = families.family("DINOv3").options["rotary"]
    theta = vision.get("rope_theta", rotary.temperature)
    if not isinstance(theta, (int, float)) or theta <= 0:
        problems.append(f"rope_theta={theta!r} is not a positive number")
        return rotary
    return dataclasses.replace(rotary, temperature=float(theta))


def read_config(config, preprocessor=None):
    """transformers' `config.json` (and `preprocessor_config.json`, if any) -> a `families.HubConfig`."""
    model_type = config.get("model_type")
    architecture = (config.get("architectures") or [model_type])[0]
    hub = families.HubConfig(source=f"transformers {architecture!r}")
    try:
        hub.family = family = families.transformers_family(model_type)
    except CheckpointError as e:
        hub.problems.append(str(e))
        return hub
    vision = config.get("vision_config") or config  # SiglipModel / CLIPModel: the image tower's part
    hub.tensors = {**family.tensors, **family.transformers_tensors}
    if family.name in ("DINOv2", "DINOv3"):
        hub.tensors["num_register_tokens"] = vision.get("num_register_tokens") or 0
    options = {**family.options, **family.transformers_options}
    act = vision.get("hidden_act", "gelu")
    if vision.get("use_gated_mlp"):  # DINOv3 S+, H+, 7B: act(gate) * up, SwiGLU when the act is SiLU
        options["mlp"] = "swiglu"
        if act != "silu":
            hub.problems.append(f"use_gated_mlp=True with hidden_act={act!r}: keras_vit's gated MLP is SwiGLU (silu)")
        act = "gelu"  # no other activation runs
    if family.name == "DINOv3":
        options["rotary"] = _dinov3_rotary(vision, hub.problems)
    if family.name == "AIMv2":  # its SwiGLU's SiLU is no `activation`
        hub.problems += _aimv2_problems(architecture, vision)
    elif act not in ACTIVATIONS:
        hub.problems.append(f"hidden_act={act!r} is none of {sorted(ACTIVATIONS)}")
    else:
        options["activation"] = ACTIVATIONS[act]
    if architecture == "DeiTForImageClassification":
        hub.problems.append(
            "DeiTForImageClassification classifies from the class token alone while its blocks see a "
            "distillation token; keras_vit reads DeiTForImageClassificationWithTeacher (both heads)"
        )
    if architecture.startswith("Dinov2") and architecture.endswith("ForImageClassification"):
        hub.problems.append(
            f"{architecture}'s classifier reads the class token and the patch mean side by side; "
            "load the backbone's tensors (Dinov2Model) and train a head"
        )
    for key in ("layer_norm_eps", "rms_norm_eps"):
        if key in vision:
            options["layer_norm_epsilon"] = float(vision[key])
    if "image_size" in vision:
        size = vision["image_size"]
        options["image_size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if family.name in ("SigLIP", "SigLIP 2 NaFlex"):
        options["pooling"] = "map"  # the only pooling whose weights the file has; the tensors say so too
    if family.name == "SigLIP 2 NaFlex":
        _naflex_options(vision, options, hub.problems)
    hub.sizes = {field: (key, vision[key]) for key, field in _SIZES.items() if vision.get(key) is not None}
    if vision.get("patch_size") is not None:
        patch = vision["patch_size"]
        hub.sizes["patch_size"] = ("patch_size", tuple(patch) if isinstance(patch, (list, tuple)) else (patch, patch))
    hub.options, hub.num_heads = options, vision.get("num_attention_heads")
    if preprocessor is not None:  # the image processor's statistics, beside the model's config
        hub.scaling = scaling_of(preprocessor.get("image_mean"), preprocessor.get("image_std"))
    return hub


def _aimv2_problems(architecture, vision):
    """What keras_vit does not build of an AIMv2 config (transformers' `Aimv2VisionModel` / `Aimv2Model`, or
    Apple's own `AIMv2Model`, whose SwiGLU runs SiLU whatever `hidden_act` says)."""
    problems = []
    if vision.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={vision['hidden_act']!r}: AIMv2's SwiGLU gate is SiLU")
    if vision.get("use_head", architecture == "Aimv2Model"):
        problems.append(
            "use_head=True: AIMv2's attention-pooling head (a learned query without projection, no MLP) is not "
            "built; its encoder's tokens load from an Aimv2VisionModel config with use_head=false"
        )
    if vision.get("is_native"):
        problems.append("is_native=True: a sin-cos position embedding computed per image size, not built")
    return problems
