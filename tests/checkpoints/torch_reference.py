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
    python tests/checkpoints/torch_reference.py make-b16 OUT
        The same at full size: timm's `vit_base_patch16_224` and Hugging Face's
        default `ViTConfig` (B/16 at 224), with their own random initialisation.
    python tests/checkpoints/torch_reference.py timm-npz OUT CONFIG FILE.npz [CONFIG FILE.npz ...]
        Loads each `.npz` (written by keras_vit) into a fresh timm model of
        CONFIG with timm's own loader; writes `FILE.logits.npy`.

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


@torch.no_grad()
def timm_npz(out, pairs):
    images = torch.from_numpy(np.load(out / "images.npy")).permute(0, 3, 1, 2)
    for config, file in zip(pairs[::2], pairs[1::2]):
        model = timm_model(config)
        model.load_pretrained(str(out / file))  # timm's own .npz reader (`_load_weights`)
        np.save(out / f"{file}.logits.npy", model(images).numpy())


if __name__ == "__main__":
    command, directory = sys.argv[1], pathlib.Path(sys.argv[2])
    if command == "make":
        make(directory)
    elif command == "make-b16":
        make_b16(directory)
    elif command == "timm-npz":
        timm_npz(directory, sys.argv[3:])
    else:
        raise SystemExit(f"unknown command {command!r}")
