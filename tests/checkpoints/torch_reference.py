"""The PyTorch side of the checkpoint parity tests, run in its own process.

Importing torchvision (timm imports it) after TensorFlow in one process
segfaults, and pytest's conftest imports Keras first, so the tests in
`tests/checkpoints/` run this file with `subprocess` (the `run_torch` and
`reference` fixtures of `conftest.py` here). It never imports TensorFlow or
keras_vit, and no test imports it: the cases it ran are in `OUT/cases.json`.

    python tests/checkpoints/torch_reference.py make OUT
        Random tiny timm and Hugging Face ViTs (fixed seed): their weights as
        safetensors, their outputs on `OUT/images.npy`, timm's position
        embedding resampling on random tensors, and `OUT/cases.json` (the
        `GRIDS` image sizes and the `RESAMPLE_CASES`).
        Also the ViT families (`FAMILIES`): tiny random timm models saved as
        hub folders (timm's own `save_for_hf`: model.safetensors + config.json),
        transformers models saved with `save_pretrained`, a big_vision SigLIP
        `.npz`, their outputs, and timm's DINOv2 at another input size
        (`dynamic_img_size`); listed in `OUT/families.json`.
    python tests/checkpoints/torch_reference.py make-b16 OUT
        The same at full size: timm's `vit_base_patch16_224` and Hugging Face's
        default `ViTConfig` (B/16 at 224), with their own random initialisation.
    python tests/checkpoints/torch_reference.py factories OUT
        What timm's ViT factory functions set (heads, activation, LayerNorm epsilon), read from
        their source without building a model: `OUT/factories.json`.
    python tests/checkpoints/torch_reference.py naflex OUT
        SigLIP 2 NaFlex: a tiny random transformers `Siglip2VisionModel` (save_pretrained) and timm
        `naflexvit_base_patch16_siglip` (save_for_hf) on one batch of two aspect ratios with padding
        (`naflex_inputs.npz`, outputs `*.out.npy`), `F.interpolate`'s antialiased bilinear resize of
        a position table to several grids (`naflex_resize.npz`), and `Siglip2ImageProcessor` on two
        uint8 images and on the same as float (`naflex_processor.npz`).
    python tests/checkpoints/torch_reference.py parameters OUT ARCHITECTURE:CLASSES [...]
        Parameter counts of full-size timm models (random, nothing downloads): `OUT/parameters.json`.
    python tests/checkpoints/torch_reference.py timm-npz OUT CONFIG FILE.npz [CONFIG FILE.npz ...]
        Loads each `.npz` (written by keras_vit) into a fresh timm model of
        CONFIG with timm's own loader; writes `FILE.logits.npy`.
    python tests/checkpoints/torch_reference.py timm-folders OUT IMAGES.npy FOLDER [FOLDER ...]
        Builds each hub folder of OUT (written by keras_vit's `save_timm`) as timm
        does, from its config.json, and writes `FOLDER.out.npy` on IMAGES.npy.

Every model is 32x32 images, patch 8, width 64, 2 blocks, 2 heads, MLP 128,
5 classes: keras_vit's `build_vit("tiny/8", image_size=32, num_classes=5)`;
the `GRIDS` models differ only in image size (non-square patch grids), their
outputs on `OUT/images_<h>x<w>.npy`.
"""

import json
import pathlib
import sys

import numpy as np
import torch

SEED = 0
TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5)
TIMM_CONFIGS = {
    "token": dict(class_token=True, global_pool="token"),
    # timm's `avg` pooling with fc_norm=False is norm-then-mean, the original code's `gap`.
    "gap": dict(class_token=False, global_pool="avg", fc_norm=False),
    # big_vision adds the position embedding before prepending the class token.
    "token_no_embed_class": dict(class_token=True, global_pool="token", no_embed_class=True),
}
GRIDS = {  # file stem: (image size, timm config or "hf"); not square, one of them 17 = 4 * 4 + 1 patches
    "timm_token_32x64": ((32, 64), "token"),
    "timm_no_embed_class_32x64": ((32, 64), "token_no_embed_class"),
    "timm_no_embed_class_8x136": ((8, 136), "token_no_embed_class"),
    "hf_32x64": ((32, 64), "hf"),
}
RESAMPLE_CASES = [  # (source grid, target grid, interpolation, antialias, prefix tokens)
    ((4, 4), (6, 6), "bicubic", False, 1),
    ((4, 4), (6, 6), "bilinear", False, 1),
    ((4, 4), (7, 5), "bicubic", False, 0),
    ((6, 6), (4, 4), "bicubic", True, 1),
    ((14, 14), (24, 24), "bicubic", True, 1),
    ((3, 5), (6, 4), "bilinear", True, 1),
]


def timm_model(config, image_size=32):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(**{**TINY, "img_size": image_size}, **TIMM_CONFIGS[config]).eval()


def hf_config(image_size=32):
    from transformers import ViTConfig

    return ViTConfig(
        image_size=image_size,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        num_labels=5,
        attn_implementation="eager",
    )


def randomize(model):
    """Every parameter random (zero heads or unit norms would hide mistakes)."""
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            parameter.normal_(0.0, 0.2)


@torch.no_grad()
def make(out):
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed
    from transformers import ViTForImageClassification, ViTModel

    torch.manual_seed(SEED)
    images = torch.randn(4, 3, 32, 32)
    np.save(out / "images.npy", images.permute(0, 2, 3, 1).numpy())
    for config in ("token", "gap"):
        model = timm_model(config)
        randomize(model)
        save_file(model.state_dict(), out / f"timm_{config}.safetensors")
        np.save(out / f"timm_{config}.logits.npy", model(images).numpy())
    classifier = ViTForImageClassification(hf_config()).eval()
    randomize(classifier)
    classifier.save_pretrained(out / "hf_classifier")  # the Hub's names (`encoder.layer.0.attention...`)
    np.save(out / "hf_classifier.logits.npy", classifier(pixel_values=images).logits.numpy())
    # transformers 5 names the same tensors differently in memory (`layers.0.attention.q_proj`).
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, out / "hf_memory_names.safetensors")
    backbone = ViTModel(hf_config()).eval()  # with the pooler: Dense + tanh on the class token
    randomize(backbone)
    backbone.save_pretrained(out / "hf_backbone")
    np.save(out / "hf_backbone.pooler.npy", backbone(pixel_values=images).pooler_output.numpy())
    make_grids(out)
    generator = torch.Generator().manual_seed(SEED)
    resampled = {}
    for i, (old, new, interpolation, antialias, prefix) in enumerate(RESAMPLE_CASES):
        embedding = torch.randn(1, prefix + old[0] * old[1], 8, generator=generator)
        resampled[f"{i}/input"] = embedding.numpy()
        resampled[f"{i}/output"] = resample_abs_pos_embed(
            embedding,
            list(new),
            old_size=list(old),
            num_prefix_tokens=prefix,
            interpolation=interpolation,
            antialias=antialias,
        ).numpy()
    np.savez(out / "resample.npz", **resampled)
    cases = {"grids": {stem: size for stem, (size, _) in GRIDS.items()}, "resample": RESAMPLE_CASES}
    (out / "cases.json").write_text(json.dumps(cases))
    make_families(out / "families")


# The families: folder -> (timm architecture, its tiny arguments). Width 64, 2 blocks, 2 heads, MLP 128;
# patch 8 at 32x32, DINOv2 patch 14 at 28x28. DINOv2 and SigLIP as published: no head (pooled features).
_FAMILY_TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)
TIMM_FAMILIES = {
    "timm_deit3": ("deit3_base_patch16_224", dict(img_size=32, patch_size=8, num_classes=5)),
    "timm_deit_distilled": ("deit_base_distilled_patch16_224", dict(img_size=32, patch_size=8, num_classes=5)),
    "timm_dinov2_reg4": ("vit_small_patch14_reg4_dinov2", dict(img_size=28, patch_size=14, num_classes=0)),
    "timm_dinov2": ("vit_small_patch14_dinov2", dict(img_size=28, patch_size=14, num_classes=0)),
    "timm_siglip": ("vit_base_patch16_siglip_224", dict(img_size=32, patch_size=8, num_classes=0)),
    "timm_clip": ("vit_base_patch16_clip_224", dict(img_size=32, patch_size=8, num_classes=16)),
    "timm_clip_quickgelu": ("vit_base_patch16_clip_quickgelu_224", dict(img_size=32, patch_size=8, num_classes=16)),
    "timm_gap_fc_norm": (
        "vit_base_patch16_224",
        dict(img_size=32, patch_size=8, num_classes=5, global_pool="avg", class_token=False, fc_norm=True),
    ),
}
# Models whose architecture name alone decides what no tensor shows: their factories' head counts (16 for
# So400m, 8 for medium, kept at width 64) and GELU flavour (tanh for the So400m/16 SigLIP 2 towers); their
# config.json says neither (no `model_args`).
TIMM_BY_NAME = {
    "timm_so400m_siglip": ("vit_so400m_patch16_siglip_256", dict(embed_dim=64, depth=1, img_size=32, num_classes=0)),
    "timm_medium_reg4": ("vit_medium_patch16_reg4_gap_256", dict(embed_dim=64, depth=1, img_size=32, num_classes=5)),
}
# Architectures keras_vit does not build: refused by name (`families.py`), never loaded with a guess.
TIMM_NOT_BUILT = {
    "timm_pe_core": "vit_pe_core_tiny_patch16_384",
    "timm_dinov3": "vit_small_patch16_dinov3",
    "timm_rope": "vit_base_patch16_rope_224",
    "timm_relpos": "vit_relpos_medium_patch16_224",
}
DYNAMIC_SIZE = (42, 56)  # DINOv2 at a 3x4 patch grid instead of its native 2x2


@torch.no_grad()
def make_families(out):
    import timm
    from safetensors.torch import load_file
    from timm.models._hub import save_for_hf

    out.mkdir()
    generator = torch.Generator().manual_seed(SEED)
    images = {size: torch.randn(2, 3, size, size, generator=generator) for size in (28, 32)}
    images["dynamic"] = torch.randn(2, 3, *DYNAMIC_SIZE, generator=generator)
    for key, value in images.items():
        np.save(out / f"images_{key}.npy", value.permute(0, 2, 3, 1).numpy())
    cases = {}
    for folder, (architecture, args) in TIMM_FAMILIES.items():
        model = timm.create_model(architecture, pretrained=False, **_FAMILY_TINY, **args).eval()
        randomize(model)
        save_for_hf(model, out / folder, safe_serialization=True)
        size = args["img_size"]
        np.save(out / f"{folder}.out.npy", model(images[size]).numpy())
        cases[folder] = size
    for folder, (architecture, args) in TIMM_BY_NAME.items():
        model = timm.create_model(architecture, pretrained=False, **args).eval()
        randomize(model)
        save_for_hf(model, out / folder, safe_serialization=True)
        np.save(out / f"{folder}.out.npy", model(images[args["img_size"]]).numpy())
        cases[folder] = args["img_size"]
    for folder, architecture in TIMM_NOT_BUILT.items():
        model = timm.create_model(architecture, pretrained=False, depth=1, img_size=32).eval()
        save_for_hf(model, out / folder, safe_serialization=True)
    # timm's own run-time resampling: the same weights, any input size.
    dynamic = timm.create_model(
        "vit_small_patch14_reg4_dinov2", pretrained=False, dynamic_img_size=True, **_FAMILY_TINY,
        **TIMM_FAMILIES["timm_dinov2_reg4"][1],
    ).eval()  # fmt: skip
    dynamic.load_state_dict(load_file(out / "timm_dinov2_reg4" / "model.safetensors"))
    np.save(out / "timm_dinov2_reg4.dynamic.npy", dynamic(images["dynamic"]).numpy())
    cases.update(make_hf_families(out, images))
    cases.update(make_new_families(out, images))
    cases.update(make_rotary_families(out, generator))
    cases.update(make_eva_pe_families(out, images))
    (out / "families.json").write_text(json.dumps(cases))


# eva.py's families with a rotary embedding: folder -> (timm architecture, its tiny arguments). Width 64, 2 blocks,
# 2 heads of 32 (the factories' own rotary settings: EVA-02's ref_feat_shape 16x16, PE's xy grid offset by 1);
# each also run with `dynamic_img_size=True` at EVA_PE_SIZE, a non-square grid, on the same weights.
_EVA_PE_TINY = dict(embed_dim=64, depth=2, num_heads=2, img_size=32, patch_size=8)
TIMM_EVA_PE_FAMILIES = {
    # fused qkv with separate query/value biases, packed SwiGLU, mean pooling then fc_norm
    "timm_eva02_tiny": ("eva02_tiny_patch14_224", dict(num_classes=5)),
    # unfused q/k/v without a key bias, SwiGLU with its inner norm (scale_mlp)
    "timm_eva02_base": ("eva02_base_patch14_224", dict(num_classes=0)),
    # the CLIP tower: the norm inside attention (scale_attn_inner), class-token pooling, a projection head
    "timm_eva02_clip": ("eva02_base_patch16_clip_224", dict(num_classes=16)),
    # pre-norm, no patch bias, LayerNorm eps 1e-5, a MAP head of 8 heads, rotary xy with grid offset 1
    "timm_pe_core_tiny": ("vit_pe_core_tiny_patch16_384", dict(num_classes=16)),
    # no class token, rotary without the grid offset
    "timm_pe_core_gigantic": ("vit_pe_core_gigantic_patch14_448", dict(num_classes=16, mlp_ratio=3.0)),
    # no final norm: the mean of the patch tokens as they leave the last block; lang has LayerScale
    "timm_pe_lang": ("vit_pe_lang_large_patch14_448", dict(num_classes=0)),
    "timm_pe_spatial": ("vit_pe_spatial_tiny_patch16_512", dict(num_classes=0)),
}
EVA_PE_SIZE = (32, 48)


@torch.no_grad()
def make_eva_pe_families(out, images):
    import timm
    from timm.models._hub import save_for_hf

    generator = torch.Generator().manual_seed(SEED + 1)
    wide = torch.randn(2, 3, *EVA_PE_SIZE, generator=generator)
    np.save(out / "images_{}x{}.npy".format(*EVA_PE_SIZE), wide.permute(0, 2, 3, 1).numpy())
    cases = {}
    for folder, (architecture, args) in TIMM_EVA_PE_FAMILIES.items():
        model = timm.create_model(architecture, pretrained=False, **{**_EVA_PE_TINY, **args}).eval()
        randomize(model)
        save_for_hf(model, out / folder, safe_serialization=True)
        np.save(out / f"{folder}.out.npy", model(images[32]).numpy())
        dynamic = timm.create_model(
            architecture, pretrained=False, dynamic_img_size=True, **{**_EVA_PE_TINY, **args}
        ).eval()
        dynamic.load_state_dict(model.state_dict())
        np.save(out / f"{folder}.dynamic.npy", dynamic(wide).numpy())
        cases[folder] = 32
    return cases


def _hf_tiny(config_class, **extra):
    tiny = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, attn_implementation="eager")
    return config_class(**tiny, **extra)


@torch.no_grad()
def make_hf_families(out, images):
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        DeiTConfig,
        DeiTForImageClassificationWithTeacher,
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        SiglipConfig,
        SiglipModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )  # fmt: skip

    dinov2 = dict(image_size=28, patch_size=14, mlp_ratio=2)
    small = dict(image_size=32, patch_size=8, intermediate_size=128)
    models = {  # folder: (model, output)
        "hf_dinov2": (Dinov2Model(_hf_tiny(Dinov2Config, **dinov2)), "pooler_output"),
        "hf_dinov2_reg4": (
            Dinov2WithRegistersModel(_hf_tiny(Dinov2WithRegistersConfig, num_register_tokens=4, **dinov2)),
            "pooler_output",
        ),
        "hf_siglip": (SiglipVisionModel(_hf_tiny(SiglipVisionConfig, **small)), "pooler_output"),
        "hf_clip": (
            CLIPVisionModelWithProjection(_hf_tiny(CLIPVisionConfig, projection_dim=16, **small)),
            "image_embeds",
        ),
        "hf_deit_distilled": (
            DeiTForImageClassificationWithTeacher(_hf_tiny(DeiTConfig, num_labels=5, **small)),
            "logits",
        ),
    }
    cases = {}
    for folder, (model, output) in models.items():
        model.eval()
        randomize(model)
        model.save_pretrained(out / folder)
        size = model.config.image_size
        np.save(out / f"{folder}.out.npy", getattr(model(pixel_values=images[size]), output).numpy())
        cases[folder] = size
    CLIPImageProcessor().save_pretrained(out / "hf_clip")  # as the Hub's folders have it: the pixel statistics
    # A whole SigLIP (image and text towers, as google/siglip-* files are): only its image tower is read.
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    text.update(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    full = SiglipModel(SiglipConfig(text_config=text, vision_config=_hf_tiny(SiglipVisionConfig, **small).to_dict()))
    full.eval()
    randomize(full)
    full.save_pretrained(out / "hf_siglip_full")
    np.save(out / "hf_siglip_full.out.npy", full.vision_model(pixel_values=images[32]).pooler_output.numpy())
    cases["hf_siglip_full"] = 32
    write_big_vision_siglip(models["hf_siglip"][0], out)
    cases["big_vision_siglip.npz"] = 32
    return cases


# The rotary families (issue 20): tiny timm Eva and transformers models at width 64 (2 heads of 32), patch 8,
# 32x32; each also run at a non-square size (`ROTARY_SIZE`, a 3x5 patch grid), where the rotary embedding
# is computed for that grid. Folder -> (architecture, its tiny arguments); outputs `<folder>.out.npy` (32x32)
# and `<folder>.rotary.npy` (ROTARY_SIZE).
ROTARY_SIZE = (24, 40)
_ROTARY_TINY = dict(embed_dim=64, depth=2, num_heads=2, img_size=32, patch_size=8)
TIMM_ROTARY = {
    # timm's default pooling (`avg`, the patch mean after the norm), no qkv bias, GELU MLP
    "timm_dinov3": ("vit_small_patch16_dinov3", dict(num_classes=0)),
    # S+: SwiGLU (gate and value apart, `fc1_g` / `fc1_x`), q and v biases (`_qkvb`), upstream's CLS pooling
    "timm_dinov3_plus_qkvb": ("vit_small_plus_patch16_dinov3_qkvb", dict(num_classes=0, global_pool="token")),
    # the 7B definition in small: SwiGLU aligned to 64, a head on the class token
    "timm_dinov3_7b": ("vit_7b_patch16_dinov3", dict(num_classes=5, global_pool="token")),
}


@torch.no_grad()
def make_rotary_families(out, generator):
    import timm
    from timm.models._hub import save_for_hf
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    images = torch.randn(2, 3, *ROTARY_SIZE, generator=generator)
    np.save(out / "images_rotary.npy", images.permute(0, 2, 3, 1).numpy())
    small = torch.from_numpy(np.load(out / "images_32.npy")).permute(0, 3, 1, 2)
    cases = {}
    for folder, (architecture, args) in TIMM_ROTARY.items():
        model = timm.create_model(architecture, pretrained=False, **_ROTARY_TINY, **args).eval()
        randomize(model)
        save_for_hf(model, out / folder, safe_serialization=True)
        np.save(out / f"{folder}.out.npy", model(small).numpy())
        np.save(out / f"{folder}.rotary.npy", model(images).numpy())  # dynamic_img_size: its rope at 3x5
        cases[folder] = 32
    hf = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, patch_size=8)
    hf.update(image_size=32, num_register_tokens=4, attn_implementation="eager")
    models = {  # transformers' defaults: q, v and output biases, no key bias; the gated one SwiGLU
        "hf_dinov3": DINOv3ViTModel(DINOv3ViTConfig(**hf)),
        "hf_dinov3_gated": DINOv3ViTModel(DINOv3ViTConfig(**hf, use_gated_mlp=True, hidden_act="silu")),
    }
    for folder, model in models.items():
        model.eval()
        randomize(model)
        model.save_pretrained(out / folder)
        for suffix, pixels in (("out", small), ("rotary", images)):
            result = model(pixel_values=pixels)
            np.save(out / f"{folder}.{suffix}.npy", result.pooler_output.numpy())  # the class token, normed
            np.save(out / f"{folder}.{suffix}.mean.npy", result.last_hidden_state[:, 5:].mean(1).numpy())  # patches
        cases[folder] = 32
    return cases


@torch.no_grad()
def write_big_vision_siglip(model, out):
    """The transformers SigLIP tower as big_vision stores it, written independently of keras_vit's reader.

    Flax layouts: `(in, out)` Dense kernels, `(D, heads, d)` / `(heads, d, D)` attention
    projections, `(p, p, C, D)` patch kernel; a scanned encoder (`encoderblock/` stacked on axis 0);
    two towers under `params/img/` and `params/txt/`, with the loss's `t` and `b`. The image tower
    gets a head (its projection), random here: `OUT/big_vision_siglip.out.npy` includes it.
    """
    from safetensors.numpy import load_file

    state = load_file(out / "hf_siglip" / "model.safetensors")  # the names on the Hub
    heads, width = model.config.num_attention_heads, model.config.hidden_size

    def dense(prefix):
        return {"kernel": state[f"{prefix}.weight"].T, "bias": state[f"{prefix}.bias"]}

    def attention(q, k, v, o):
        out = {}
        for name, (weight, bias) in zip(("query", "key", "value"), (q, k, v)):
            out[f"{name}/kernel"] = weight.T.reshape(width, heads, -1)
            out[f"{name}/bias"] = bias.reshape(heads, -1)
        out["out/kernel"] = o[0].T.reshape(heads, -1, width)
        out["out/bias"] = o[1]
        return out

    def norm(prefix):
        return {"scale": state[f"{prefix}.weight"], "bias": state[f"{prefix}.bias"]}

    img = {
        "embedding/kernel": state["embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": state["embeddings.patch_embedding.bias"],
        "pos_embedding": state["embeddings.position_embedding.weight"][None],
        **{f"Transformer/encoder_norm/{k}": v for k, v in norm("post_layernorm").items()},
        "MAPHead_0/probe": state["head.probe"],
        **{f"MAPHead_0/LayerNorm_0/{k}": v for k, v in norm("head.layernorm").items()},
    }
    for i in (0, 1):
        img.update({f"MAPHead_0/MlpBlock_0/Dense_{i}/{k}": v for k, v in dense(f"head.mlp.fc{i + 1}").items()})
    weights, biases = (
        np.split(state["head.attention.in_proj_weight"], 3),
        np.split(state["head.attention.in_proj_bias"], 3),
    )
    o = (state["head.attention.out_proj.weight"], state["head.attention.out_proj.bias"])
    img.update(
        {f"MAPHead_0/MultiHeadDotProductAttention_0/{n}": x for n, x in attention(*zip(weights, biases), o).items()}
    )
    blocks = []
    for i in range(model.config.num_hidden_layers):
        p = f"encoder.layers.{i}."
        proj = [
            (state[f"{p}self_attn.{n}_proj.weight"], state[f"{p}self_attn.{n}_proj.bias"])
            for n in ("q", "k", "v", "out")
        ]
        block = {
            **{f"LayerNorm_0/{k}": v for k, v in norm(p + "layer_norm1").items()},
            **{f"MultiHeadDotProductAttention_0/{n}": x for n, x in attention(*proj).items()},
            **{f"LayerNorm_1/{k}": v for k, v in norm(p + "layer_norm2").items()},
            **{f"MlpBlock_0/Dense_{j}/{k}": v for j in (0, 1) for k, v in dense(f"{p}mlp.fc{j + 1}").items()},
        }
        blocks.append(block)
    for key in blocks[0]:
        img[f"Transformer/encoderblock/{key}"] = np.stack([block[key] for block in blocks])
    rng = np.random.default_rng(SEED)
    img["head/kernel"] = rng.normal(0, 0.2, (width, 16)).astype("float32")
    img["head/bias"] = rng.normal(0, 0.2, 16).astype("float32")
    arrays = {f"params/img/{k}": v for k, v in img.items()}
    arrays.update({"params/txt/Embed_0/embedding": rng.normal(size=(50, 32)).astype("float32")})
    arrays.update({"params/t": np.ones(1, "float32"), "params/b": np.zeros(1, "float32")})
    np.savez(out / "big_vision_siglip.npz", **arrays)
    images = torch.from_numpy(np.load(out / "images_32.npy")).permute(0, 3, 1, 2)
    pooled = model(pixel_values=images).pooler_output.numpy()
    np.save(out / "big_vision_siglip.out.npy", pooled @ img["head/kernel"] + img["head/bias"])


@torch.no_grad()
def make_grids(out):
    from safetensors.torch import save_file
    from transformers import ViTForImageClassification

    for stem, (size, config) in GRIDS.items():
        images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(SEED))
        np.save(out / f"images_{size[0]}x{size[1]}.npy", images.permute(0, 2, 3, 1).numpy())
        model = ViTForImageClassification(hf_config(size)) if config == "hf" else timm_model(config, size)
        model.eval()
        randomize(model)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"{stem}.safetensors")
        logits = model(pixel_values=images).logits if config == "hf" else model(images)
        np.save(out / f"{stem}.logits.npy", logits.numpy())


@torch.no_grad()
def make_b16(out):
    import timm
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(SEED)
    images = torch.randn(2, 3, 224, 224)
    np.save(out / "images_224.npy", images.permute(0, 2, 3, 1).numpy())
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()  # nothing downloads
    save_file(model.state_dict(), out / "timm_b16.safetensors")
    np.save(out / "timm_b16.logits.npy", model(images).numpy())
    # HF's ViT configs say layer_norm_eps=1e-12; the original JAX code (and keras_vit, and timm) use
    # 1e-6. With HF's small random init the activations are tiny and that alone moves B/16's logits
    # by ~8e-4, so this compares the weight mapping at the training-time epsilon.
    config = ViTConfig(num_labels=1000, layer_norm_eps=1e-6, attn_implementation="eager")
    classifier = ViTForImageClassification(config).eval()
    classifier.save_pretrained(out / "hf_b16")
    np.save(out / "hf_b16.logits.npy", classifier(pixel_values=images).logits.numpy())


def factories(out):
    """What timm's factory functions set, read from their source: `OUT/factories.json`.

    `{architecture: {"num_heads": int or None, "act_layer": str or None, "eps": float or None}}` for every
    ViT-shaped timm architecture (vision_transformer.py, deit.py and eva.py), without building any model.
    """
    import inspect
    import re

    import timm

    found = {}
    for name in timm.list_models(module=["vision_transformer", "deit", "eva"]):
        source = inspect.getsource(timm.models._registry.model_entrypoint(name))
        heads = re.search(r"num_heads=(\d+)", source)
        act = re.search(r"act_layer=['\"]?([\w.]+)", source)
        eps = re.search(r"(?:LayerNorm|RmsNorm), eps=([\d.e-]+)", source)
        found[name] = {
            "num_heads": int(heads[1]) if heads else None,
            "act_layer": act[1] if act else None,
            "eps": float(eps[1]) if eps else None,
        }
        if "use_rot_pos_emb=True" in source:  # eva.py's rotary settings: [ref rows, ref cols, offset, indexing]
            ref = re.search(r"ref_feat_shape=\((\d+), (\d+)\)", source)
            offset = re.search(r"rope_grid_offset=([\d.]+)", source)
            indexing = re.search(r"rope_grid_indexing='(\w+)'", source)
            found[name]["rotary"] = [
                *(map(int, ref.groups()) if ref else (None, None)),
                float(offset[1]) if offset else 0.0,
                indexing[1] if indexing else "ij",
            ]
    (out / "factories.json").write_text(json.dumps(found))


@torch.no_grad()
def timm_npz(out, pairs):
    images = torch.from_numpy(np.load(out / "images.npy")).permute(0, 3, 1, 2)
    for config, file in zip(pairs[::2], pairs[1::2]):
        model = timm_model(config)
        model.load_pretrained(str(out / file))  # timm's own .npz reader (`_load_weights`)
        np.save(out / f"{file}.logits.npy", model(images).numpy())


NAFLEX_GRID, NAFLEX_SHAPES, NAFLEX_LENGTH = (4, 4), ((3, 5), (6, 3)), 20  # table 4x4: each image shrinks one axis
NAFLEX_RESIZE = ((3, 5), (6, 3), (1, 7), (4, 4), (9, 2), (2, 2))
NAFLEX_IMAGES = ((37, 90), (120, 41))  # (height, width) of the processor's two images
NAFLEX_MAX_PATCHES = 24


def naflex_batch(generator, patch=8, channels=3):
    """Patches `(2, L, p*p*C)`, spatial shapes `(2, 2)`, padding mask `(2, L)`: two aspect ratios, padded."""
    patches = torch.randn(len(NAFLEX_SHAPES), NAFLEX_LENGTH, patch * patch * channels, generator=generator)
    shapes = torch.tensor(NAFLEX_SHAPES)
    mask = (torch.arange(NAFLEX_LENGTH)[None] < shapes.prod(-1)[:, None]).int()
    return patches, shapes, mask


@torch.no_grad()
def make_naflex(out):
    import timm
    import torch.nn.functional as F
    from timm.models._hub import save_for_hf
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(SEED)
    patches, shapes, mask = naflex_batch(generator)
    np.savez(out / "naflex_inputs.npz", patches=patches.numpy(), spatial_shapes=shapes.numpy(), patch_mask=mask.numpy())
    grid = NAFLEX_GRID[0] * NAFLEX_GRID[1]
    config = _hf_tiny(Siglip2VisionConfig, patch_size=8, num_patches=grid, intermediate_size=128)
    model = Siglip2VisionModel(config).eval()
    randomize(model)
    model.save_pretrained(out / "hf_siglip2")
    result = model(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes)
    np.save(out / "hf_siglip2.out.npy", result.pooler_output.numpy())
    np.save(out / "hf_siglip2.tokens.npy", result.last_hidden_state.numpy())
    # A whole Siglip2Model (image and text towers, as google/siglip2-*-naflex files are): its image tower is read.
    from transformers import Siglip2Config, Siglip2Model

    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    text.update(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    full = Siglip2Model(Siglip2Config(text_config=text, vision_config=config.to_dict())).eval()
    randomize(full)
    full.save_pretrained(out / "hf_siglip2_full")
    pooled = full.vision_model(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes).pooler_output
    np.save(out / "hf_siglip2_full.out.npy", pooled.numpy())
    # timm's: the same architecture; its inputs are the patches' (row, column) coordinates and validity.
    timm_model = timm.create_model(
        "naflexvit_base_patch16_siglip", pretrained=False, patch_size=8, img_size=32, num_classes=0,
        pos_embed_grid_size=NAFLEX_GRID, **_FAMILY_TINY,
    ).eval()  # fmt: skip
    randomize(timm_model)
    save_for_hf(timm_model, out / "timm_naflex_siglip", safe_serialization=True)
    index = torch.arange(NAFLEX_LENGTH)[None]
    coord = torch.stack([index // shapes[:, 1:], index % shapes[:, 1:]], -1) * mask[..., None]
    np.save(out / "timm_naflex_siglip.out.npy", timm_model(patches, patch_coord=coord, patch_valid=mask.bool()).numpy())
    # The resize alone: torch's own antialiased bilinear, each grid.
    table = torch.randn(1, 8, *NAFLEX_GRID, generator=generator)
    resized = {"table": table[0].permute(1, 2, 0).numpy()}
    for h, w in NAFLEX_RESIZE:
        image = F.interpolate(table, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        resized[f"{h}x{w}"] = image[0].permute(1, 2, 0).numpy()
    np.savez(out / "naflex_resize.npz", **resized)
    images = [torch.randint(0, 256, (3, *size), generator=generator, dtype=torch.uint8) for size in NAFLEX_IMAGES]
    processor = Siglip2ImageProcessor(patch_size=8, max_num_patches=NAFLEX_MAX_PATCHES)
    batch = processor(images=images, return_tensors="pt")
    np.savez(
        out / "naflex_processor.npz",
        **{f"image_{i}": image.permute(1, 2, 0).numpy() for i, image in enumerate(images)},
        patches=batch["pixel_values"].numpy(),
        spatial_shapes=batch["spatial_shapes"].numpy(),
        patch_mask=batch["pixel_attention_mask"].numpy(),
        float_patches=processor(images=[image.float() for image in images], return_tensors="pt")[
            "pixel_values"
        ].numpy(),
    )


# Issue 20's families on the new layers (RMSNorm, SwiGLU, bias flags, rotary): folder -> (timm architecture,
# arguments). AIMv2 keeps its factory's 8 heads (its name tells them); the others are `_FAMILY_TINY` (2 heads, in
# their config.json's `model_args`).
NEW_TIMM_FAMILIES = {
    "timm_aimv2": ("aimv2_large_patch14_224", dict(embed_dim=64, depth=2, patch_size=8, img_size=32, num_classes=0)),
    "timm_medium_gap": (
        "vit_medium_patch16_gap_256",
        dict(embed_dim=64, depth=2, patch_size=8, img_size=32, num_classes=5),
    ),
    "timm_giant_dinov2": ("vit_giant_patch14_dinov2", dict(**_FAMILY_TINY, img_size=28, patch_size=14, num_classes=0)),
    "timm_rope_axial": ("vit_base_patch16_rope_224", dict(**_FAMILY_TINY, img_size=32, patch_size=8, num_classes=5)),
    "timm_rope_ape": ("vit_small_patch16_rope_ape_224", dict(**_FAMILY_TINY, img_size=32, patch_size=8, num_classes=5)),
    "timm_rope_reg4_gap": (
        "vit_betwixt_patch16_rope_reg4_gap_256",
        dict(**_FAMILY_TINY, img_size=32, patch_size=8, num_classes=5),
    ),
    # so150m2's 13 heads by its name (width 52: 4 per head), one register, no qkv bias.
    "timm_so150m2": ("vit_so150m2_patch16_reg1_gap_256", dict(embed_dim=52, depth=1, patch_size=8, img_size=32)),
}
NON_SQUARE = (32, 48)  # the rotary families again at a 4x6 patch grid: `<folder>.non_square.npy`
ROTARY_FOLDERS = ("timm_rope_axial", "timm_rope_reg4_gap")


@torch.no_grad()
def make_new_families(out, images):
    """Issue 20's families: timm and transformers AIMv2 (and Apple's own AIMv2 layout), timm's ViTs without
    query/key/value bias, DINOv2 giant's SwiGLU, Naver's and timm's rotary ViTs; `rope_mixed` saved to be refused."""
    import timm
    from timm.models._hub import save_for_hf

    generator = torch.Generator().manual_seed(SEED + 20)
    images["non_square"] = torch.randn(2, 3, *NON_SQUARE, generator=generator)
    np.save(out / "images_non_square.npy", images["non_square"].permute(0, 2, 3, 1).numpy())
    cases = {}
    for folder, (architecture, args) in NEW_TIMM_FAMILIES.items():
        model = timm.create_model(architecture, pretrained=False, **args).eval()
        randomize(model)
        save_for_hf(model, out / folder, safe_serialization=True)
        np.save(out / f"{folder}.out.npy", model(images[args["img_size"]]).numpy())
        cases[folder] = args["img_size"]
        if folder in ROTARY_FOLDERS:  # no position table: the same weights run at any grid
            wide = timm.create_model(architecture, pretrained=False, **{**args, "img_size": NON_SQUARE}).eval()
            wide.load_state_dict(model.state_dict())
            np.save(out / f"{folder}.non_square.npy", wide(images["non_square"]).numpy())
        if folder == "timm_aimv2":
            write_apple_aimv2(model, out, images[32])
            cases["apple_aimv2"] = 32
    model = timm.create_model("vit_small_patch16_rope_mixed_224", pretrained=False, depth=1, img_size=32).eval()
    save_for_hf(model, out / "timm_rope_mixed", safe_serialization=True)
    cases.update(make_hf_aimv2(out, images))
    return cases


@torch.no_grad()
def write_apple_aimv2(model, out, images):
    """The timm AIMv2 as Apple's hub repositories store it (`apple/aimv2-*`, their own modeling code): timm's
    `_convert_aimv2` read backwards, checked by loading it back through timm's own filter."""
    from safetensors.torch import save_file
    from timm.models.vision_transformer import checkpoint_filter_fn

    renames = [("patch_embed.", "preprocessor.patchifier."), ("pos_embed", "preprocessor.pos_embed"),
               ("norm1", "norm_1"), ("norm2", "norm_2"), ("mlp.fc1_g", "mlp.fc1"), ("mlp.fc1_x", "mlp.fc3")]  # fmt: skip
    state = {}
    for key, value in model.state_dict().items():
        for old, new in renames:
            key = key.replace(old, new)
        key = "post_trunk_norm.weight" if key == "norm.weight" else key
        state[key if key.startswith("preprocessor.") else f"trunk.{key}"] = value.contiguous()
    again = checkpoint_filter_fn(dict(state), model)
    assert sorted(again) == sorted(model.state_dict()), "not timm's AIMv2 layout"
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())
    folder = out / "apple_aimv2"
    folder.mkdir()
    save_file(state, folder / "model.safetensors")
    width = model.embed_dim
    config = {
        "architectures": ["AIMv2Model"], "model_type": "aimv2", "hidden_size": width,
        "intermediate_size": model.blocks[0].mlp.fc2.in_features, "num_attention_heads": model.blocks[0].attn.num_heads,
        "num_hidden_layers": len(model.blocks), "num_channels": 3, "image_size": 32, "patch_size": 8,
        "projection_dropout": 0.0, "qkv_bias": False, "use_bias": False, "rms_norm_eps": 1e-05,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    np.save(out / "apple_aimv2.out.npy", model(images).numpy())  # Apple's trunk: the same final tokens


@torch.no_grad()
def make_hf_aimv2(out, images):
    """transformers' `Aimv2VisionModel`: without its attention-pooling head (the pre-trained encoders, whose
    features are the final tokens: `last_hidden_state`, mean-pooled here) and with it (refused)."""
    from transformers import Aimv2VisionConfig, Aimv2VisionModel

    cases = {}
    for folder, head in (("hf_aimv2", False), ("hf_aimv2_head", True)):
        config = _hf_tiny(Aimv2VisionConfig, intermediate_size=128, image_size=32, patch_size=8, use_head=head)
        model = Aimv2VisionModel(config).eval()
        randomize(model)
        model.save_pretrained(out / folder)
        outputs = model(pixel_values=images[32])
        pooled = outputs.pooler_output if head else outputs.last_hidden_state.mean(dim=1)
        np.save(out / f"{folder}.out.npy", pooled.numpy())
        cases[folder] = 32
    from transformers import Dinov2Config, Dinov2Model  # DINOv2 giant's SwiGLU MLP, as facebook/dinov2-giant

    giant = Dinov2Model(_hf_tiny(Dinov2Config, image_size=28, patch_size=14, mlp_ratio=3, use_swiglu_ffn=True))
    giant.eval()
    randomize(giant)
    giant.save_pretrained(out / "hf_dinov2_giant")
    np.save(out / "hf_dinov2_giant.out.npy", giant(pixel_values=images[28]).pooler_output.numpy())
    cases["hf_dinov2_giant"] = 28
    return cases


@torch.no_grad()
def timm_folders(out, images, folders):
    """Builds each hub folder (written by keras_vit's `save_timm`) the way timm does: `create_model(architecture,
    **model_args)`, its state dict loaded strictly; writes `FOLDER.out.npy`, its outputs on `images` (`.npy`, NHWC)."""
    import timm
    from safetensors.torch import load_file

    pixels = torch.from_numpy(np.load(images)).permute(0, 3, 1, 2)
    for folder in folders:
        config = json.loads((out / folder / "config.json").read_text())
        model = timm.create_model(config["architecture"], pretrained=False, **config.get("model_args", {})).eval()
        model.load_state_dict(load_file(out / folder / "model.safetensors"), strict=True)
        np.save(out / f"{folder}.out.npy", model(pixels).numpy())


def parameters(out, names):
    """Parameter counts of timm models, `ARCHITECTURE:CLASSES[:DEPTH]` each (at full size, or with `DEPTH`
    blocks: a 1.9B-parameter tower checked at its width with two): `OUT/parameters.json`."""
    import timm

    counts = {}
    for name in names:
        architecture, classes, *depth = name.split(":")
        blocks = dict(depth=int(depth[0])) if depth else {}
        model = timm.create_model(architecture, pretrained=False, num_classes=int(classes), **blocks)
        counts[name] = sum(p.numel() for p in model.parameters())
    (out / "parameters.json").write_text(json.dumps(counts))


if __name__ == "__main__":
    command, directory = sys.argv[1], pathlib.Path(sys.argv[2])
    if command == "make":
        make(directory)
    elif command == "make-b16":
        make_b16(directory)
    elif command == "factories":
        factories(directory)
    elif command == "naflex":
        make_naflex(directory)
    elif command == "timm-npz":
        timm_npz(directory, sys.argv[3:])
    elif command == "timm-folders":
        timm_folders(directory, sys.argv[3], sys.argv[4:])
    elif command == "parameters":
        parameters(directory, sys.argv[3:])
    else:
        raise SystemExit(f"unknown command {command!r}")
