"""What the tensors do not say, read from a hub folder's `config.json` (timm or Hugging Face).

A model folder as the Hugging Face Hub serves it holds the weights (`model.safetensors`,
or shards listed in `model.safetensors.index.json`) and a `config.json`:

- timm: `{"architecture": "vit_small_patch14_reg4_dinov2", "model_args": {...},
  "pretrained_cfg": {"input_size": [3, 518, 518], "mean": [...], ...}}`. The architecture
  name fixes what its factory function sets (the activation, the LayerNorm epsilon, the
  pooling); `model_args` holds the arguments it was created with on top.
- transformers: `{"architectures": ["Dinov2Model"], "model_type": "dinov2", "hidden_act":
  ..., "layer_norm_eps": ..., "image_size": ..., "num_attention_heads": ...}`; a two-tower
  model (SigLIP, CLIP) nests its image tower's in `vision_config`.

Everything else (width, depth, MLP size, patch, tokens, LayerScale, pre-norm, patch bias,
the heads) comes from the tensors (`pretrained.describe`). The result is `HubConfig`: the
`ViTConfig` fields to set, the number of heads (PyTorch files store them flattened), the
family's name, the pixel scaling, and the problems (what the folder holds that keras_vit
cannot build).
"""

import dataclasses
import json
import os
import re

from keras_vit.checkpoints.formats import CheckpointError

WEIGHTS, SHARD_INDEX, CONFIG = "model.safetensors", "model.safetensors.index.json", "config.json"
PREPROCESSOR = "preprocessor_config.json"  # transformers' image processor: the pixel statistics

# Mean/std of the pixel statistics as `config.json`s give them (0..1 pixels) -> `preprocessing.SCALINGS`.
_SCALINGS = {
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)): "vit",  # [-1, 1]: SigLIP, the original ViT
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)): "imagenet",
    ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)): "clip",
}

# timm architecture name -> (family, what its factory sets that the tensors do not show, what the
# tensors of that family must show: `ViTConfig` fields, `layer_scale` for "has LayerScale"). First match wins.
_TIMM_FAMILIES = [
    (r"deit3_", "DeiT III", {}, {"layer_scale": True, "distillation": False}),
    (r"deit_.*distilled", "DeiT (distilled)", {}, {"distillation": True, "layer_scale": False}),
    (r"deit_", "DeiT", {}, {"distillation": False, "layer_scale": False}),
    (r"vit_.*_dinov2", "DINOv2", {}, {"layer_scale": True, "class_token": True}),
    (r"vit_.*_siglip_gap", "SigLIP (GAP)", {}, {"class_token": False}),
    (r"vit_.*_siglip", "SigLIP", {}, {"class_token": False, "pooling": "map"}),
    (
        r"vit_.*_clip_quickgelu",
        "CLIP",
        {"layer_norm_epsilon": 1e-5, "activation": "quick_gelu"},
        {"pre_norm": True, "patch_bias": False},
    ),
    (r"vit_.*_clip", "CLIP", {"layer_norm_epsilon": 1e-5}, {"pre_norm": True, "patch_bias": False}),
    (r"vit_", "ViT", {}, {}),
]
# Architectures whose blocks are not the ViT's: named in the error.
_TIMM_UNSUPPORTED = {r"vit_giant_.*dinov2": "its MLP is SwiGLU"}
_TIMM_POOLING = {"token": "token", "avg": "gap", "map": "map"}
_TIMM_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}
# model_args that the tensors already tell, or that do not change the inference graph.
_TIMM_TOLD_BY_TENSORS = {
    "embed_dim", "depth", "mlp_ratio", "patch_size", "num_classes", "in_chans", "class_token", "reg_tokens",
    "no_embed_class", "pre_norm", "fc_norm", "qkv_bias", "drop_rate", "pos_drop_rate", "proj_drop_rate",
    "attn_drop_rate", "drop_path_rate", "weight_init", "init_values", "num_heads", "img_size", "global_pool",
    "act_layer", "dynamic_img_size", "dynamic_img_pad", "pretrained_cfg_overlay",
}  # fmt: skip

# transformers `model_type` -> family. Hidden activations by transformers' names.
_HF_FAMILIES = {
    "vit": "ViT",
    "deit": "DeiT",
    "dinov2": "DINOv2",
    "dinov2_with_registers": "DINOv2",
    "siglip": "SigLIP",
    "siglip_vision_model": "SigLIP",
    "clip": "CLIP",
    "clip_vision_model": "CLIP",
}
_HF_UNSUPPORTED = {
    "siglip2": "SigLIP 2's NaFlex models patchify outside the model and resize the position embedding per "
    "image; the fixed-resolution google/siglip2-*-patchN-SIZE checkpoints are SigLIP models and load",
}
_HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "quick_gelu": "quick_gelu",
}


@dataclasses.dataclass
class HubConfig:
    """What a folder's `config.json` adds to the tensors."""

    source: str  # e.g. "timm 'vit_small_patch14_reg4_dinov2'"
    family: str = None  # "DINOv2", "SigLIP", ...
    options: dict = dataclasses.field(default_factory=dict)  # ViTConfig fields
    num_heads: int = None
    scaling: str = None  # a `preprocessing.SCALINGS` name, if the config's mean/std is one
    problems: list = dataclasses.field(default_factory=list)
    expect: dict = dataclasses.field(default_factory=dict)  # what the family's tensors show; see `check_family`


def find_files(path):
    """`(weight files, config dict or None)` for a file or a hub folder."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return [path], None
    index = os.path.join(path, SHARD_INDEX)
    if os.path.exists(index):
        shards = sorted(set(_read_json(index)["weight_map"].values()))
        weights = [os.path.join(path, shard) for shard in shards]
    elif os.path.exists(os.path.join(path, WEIGHTS)):
        weights = [os.path.join(path, WEIGHTS)]
    else:
        found = sorted(name for name in os.listdir(path) if name.endswith((".safetensors", ".npz")))
        if len(found) != 1:
            raise CheckpointError(
                f"{path} is a folder without {WEIGHTS} (it holds {found or 'no weights'}); pass the checkpoint "
                "file itself, or a model folder as downloaded from the Hugging Face Hub."
            )
        weights = [os.path.join(path, found[0])]
    config = os.path.join(path, CONFIG)
    return weights, _read_json(config) if os.path.exists(config) else None


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable JSON file: {e}") from e


def read_hub_config(config, path):
    """A `config.json` (timm's or transformers') -> `HubConfig`; `None` for no config."""
    if config is None:
        return None
    if "architecture" in config:
        return _timm(config)
    if "model_type" in config or "architectures" in config:
        hub = _transformers(config)
        preprocessor = os.path.join(os.fspath(path), PREPROCESSOR)
        if os.path.exists(preprocessor):  # the image processor's statistics, beside the model's config
            statistics = _read_json(preprocessor)
            hub.scaling = _scaling(statistics.get("image_mean"), statistics.get("image_std"))
        return hub
    raise CheckpointError(
        f"{path}/{CONFIG} is neither timm's (no 'architecture') nor transformers' (no 'model_type'): "
        "pass the weights file itself and the architecture options it needs."
    )


def _timm(config):
    name = config["architecture"]
    hub = HubConfig(source=f"timm {name!r}")
    for pattern, reason in _TIMM_UNSUPPORTED.items():
        if re.match(pattern, name):
            hub.problems.append(f"timm architecture {name!r} is not a ViT keras_vit builds: {reason}")
    family = next((row[1:] for row in _TIMM_FAMILIES if re.match(row[0], name)), None)
    if family is None:
        hub.problems.append(f"timm architecture {name!r} is none of the ViT families keras_vit reads")
        return hub
    hub.family, options, hub.expect = family[0], dict(family[1]), dict(family[2])
    registers = re.search(r"_reg(\d+)", name)
    if hub.family == "DINOv2":
        hub.expect["num_register_tokens"] = int(registers[1]) if registers else 0
    args = {**{k: config[k] for k in ("global_pool",) if k in config}, **config.get("model_args", {})}
    pretrained = config.get("pretrained_cfg", {})
    unknown = sorted(set(args) - _TIMM_TOLD_BY_TENSORS)
    if unknown:
        hub.problems.append(f"timm model_args {unknown} change the model in ways keras_vit does not build")
    if args.get("global_pool") is not None:
        if args["global_pool"] not in _TIMM_POOLING:
            hub.problems.append(f"timm global_pool={args['global_pool']!r} is none of {sorted(_TIMM_POOLING)}")
        else:
            options["pooling"] = _TIMM_POOLING[args["global_pool"]]
    if args.get("act_layer") is not None:
        if args["act_layer"] not in _TIMM_ACTIVATIONS:
            hub.problems.append(f"timm act_layer={args['act_layer']!r} is none of {sorted(_TIMM_ACTIVATIONS)}")
        else:
            options["activation"] = _TIMM_ACTIVATIONS[args["act_layer"]]
    if args.get("init_values") is not None:
        options["layer_scale_init"] = float(args["init_values"])
    if args.get("dynamic_img_size"):
        options["dynamic_image_size"] = True
    size = args.get("img_size") or pretrained.get("input_size", [None])[1:]
    if size:
        options["image_size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    hub.options, hub.num_heads = options, args.get("num_heads")
    hub.scaling = _scaling(pretrained.get("mean"), pretrained.get("std"))
    return hub


def _transformers(config):
    model_type = config.get("model_type")
    architecture = (config.get("architectures") or [model_type])[0]
    hub = HubConfig(source=f"transformers {architecture!r}")
    if model_type in _HF_UNSUPPORTED:
        hub.problems.append(f"transformers model_type {model_type!r} is not read: {_HF_UNSUPPORTED[model_type]}")
        return hub
    if model_type not in _HF_FAMILIES:
        hub.problems.append(
            f"transformers model_type {model_type!r} is none of the families keras_vit reads ({sorted(_HF_FAMILIES)})"
        )
        return hub
    hub.family = _HF_FAMILIES[model_type]
    vision = config.get("vision_config") or config  # SiglipModel / CLIPModel: the image tower's part
    hub.expect = {
        "DeiT": {"distillation": True},
        "DINOv2": {"layer_scale": True, "num_register_tokens": vision.get("num_register_tokens") or 0},
        "SigLIP": {"class_token": False, "pooling": "map"},
        "CLIP": {"pre_norm": True, "patch_bias": False},
    }.get(hub.family, {})
    options = {}
    act = vision.get("hidden_act", "gelu")
    if act not in _HF_ACTIVATIONS:
        hub.problems.append(f"hidden_act={act!r} is none of {sorted(_HF_ACTIVATIONS)}")
    else:
        options["activation"] = _HF_ACTIVATIONS[act]
    if vision.get("use_swiglu_ffn"):
        hub.problems.append("use_swiglu_ffn=True: a SwiGLU MLP (DINOv2 giant) is not a ViT block keras_vit builds")
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
    if "layer_norm_eps" in vision:
        options["layer_norm_epsilon"] = float(vision["layer_norm_eps"])
    if "image_size" in vision:
        size = vision["image_size"]
        options["image_size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if model_type.startswith("siglip"):
        options["pooling"] = "map"  # the only pooling whose weights the file has; the tensors say so too
    hub.options, hub.num_heads = options, vision.get("num_attention_heads")
    return hub


def _scaling(mean, std):
    if not mean or not std:
        return None
    key = (tuple(round(float(x), 8) for x in mean), tuple(round(float(x), 8) for x in std))
    return _SCALINGS.get(key)


def check_family(hub, config, tensors):
    """What the tensors show (`config`, a `ViTConfig` read from them; `tensors`, fields they
    decide over the config.json) against what `hub`'s family has: problems."""
    problems = []
    for field, wanted in hub.expect.items():
        found = config.layer_scale_init is not None if field == "layer_scale" else getattr(config, field)
        found = tensors.get(field, found)
        if found != wanted:
            problems.append(f"{hub.family} models have {field}={wanted!r}, the tensors {field}={found!r}")
    return problems
