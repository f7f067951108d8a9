"""Every ViT family ships like the plain ViT: run folder round trip in safe mode, SavedModel, builtin-only LiteRT.

One tiny model per family, every weight random (LayerScale's 1e-6 start would hide a missing
block), through `run_folder.save` / `load_model` and `export_model` (float32 LiteRT only, the quantized
files are the plain ViT's tests; ONNX where the onnx extra is installed). The DINOv2-style model takes any image size: its
SavedModel's `serving_default` too, its LiteRT file at the size in `keras_vit.json`.

An export takes ~35 s here, so the default suite runs three models that carry every option between
them (`COMBINED`; the third, issue 20's: rotary, SwiGLU, RMSNorm, the bias flags, the norms); the
families as they are are marked `slow`.
"""

import numpy as np
import pytest

import keras_vit
from keras_vit import run_folder
from keras_vit.config import Rotary
from keras_vit.deploy import export, litert, onnx, saved_model
from keras_vit.preprocessing import preprocessing_model

LABELS = ["a", "b", "c"]
FAMILIES = {  # name: (variant, image size, options), as each family's checkpoints build them
    "deit3": ("tiny/8", 32, dict(layer_scale_init=1e-6, embed_prefix_tokens=False)),
    "deit_distilled": ("tiny/8", 32, dict(distillation=True)),
    "dinov2_registers": (
        "tiny/14",
        28,
        dict(num_register_tokens=4, layer_scale_init=1e-5, embed_prefix_tokens=False, dynamic_image_size=True),
    ),
    "siglip": ("tiny/8", 32, dict(pooling="map", activation="gelu_tanh")),
    "clip": ("tiny/8", 32, dict(pre_norm=True, patch_bias=False, activation="quick_gelu", layer_norm_epsilon=1e-5)),
    "gap_fc_norm": ("tiny/8", 32, dict(pooling="gap", pooled_norm=True)),
    # Issue 20's families, as their records build them (the rotary table computed in the graph from the grid).
    "dinov3": (
        "tiny/8",
        32,
        dict(
            rotary=Rotary(),
            position_embedding=False,
            num_register_tokens=4,
            layer_scale_init=1e-5,
            embed_prefix_tokens=False,
            dynamic_image_size=True,
            mlp="swiglu",
            qkv_bias=False,
            layer_norm_epsilon=1e-5,
        ),
    ),  # fmt: skip
    "eva02_clip": (
        "tiny/8",
        32,
        dict(
            rotary=Rotary("index", 10000.0, reference_grid=(4, 4), rotate_half=False),
            mlp="swiglu",
            mlp_norm=True,
            key_bias=False,
            attention_norm=True,
        ),
    ),  # fmt: skip
    "pe_core": (
        "tiny/8",
        32,
        dict(
            rotary=Rotary(
                "index", 10000.0, reference_grid=(4, 4), grid_offset=1.0, grid_indexing="xy", rotate_half=False
            ),
            pooling="map",
            class_token=True,
            pre_norm=True,
            map_num_heads=4,
            map_mlp_dim=96,
            layer_norm_epsilon=1e-5,
        ),
    ),  # fmt: skip
    "aimv2": (
        "tiny/8",
        32,
        dict(
            norm="rmsnorm",
            mlp="swiglu",
            qkv_bias=False,
            proj_bias=False,
            mlp_bias=False,
            patch_norm=True,
            pooling="gap",
            layer_norm_epsilon=1e-5,
        ),
    ),  # fmt: skip
    "naver_rope_axial": (
        "tiny/8",
        32,
        dict(
            rotary=Rotary("index", 100.0, grid_indexing="xy", rotate_half=False),
            position_embedding=False,
            layer_scale_init=1e-5,
        ),
    ),  # fmt: skip
}
COMBINED = {  # every option of FAMILIES in two models
    "token_options": (
        "tiny/8",
        32,
        {**FAMILIES["deit3"][2], **FAMILIES["deit_distilled"][2], **FAMILIES["clip"][2], "num_register_tokens": 2},
    ),  # fmt: skip
    "dynamic_map_options": (
        "tiny/14",
        28,
        {**FAMILIES["dinov2_registers"][2], **FAMILIES["siglip"][2], "pooled_norm": True},
    ),  # fmt: skip
    "issue_20_options": (  # rotary at any size without a table, and every new block option
        "tiny/8",
        32,
        {
            **FAMILIES["dinov3"][2],
            **FAMILIES["aimv2"][2],
            "mlp_norm": True,
            "attention_norm": True,
            "qk_norm": True,
            "qkv_bias": True,
            "key_bias": False,
            "pooling": "token",
        },
    ),  # fmt: skip
}
CASES = [*COMBINED, *(pytest.param(name, marks=pytest.mark.slow) for name in sorted(FAMILIES))]


@pytest.mark.parametrize("family", CASES)
def test_each_family_round_trips_its_run_folder_and_exports_with_parity(family, tmp_path, randomize, raw_images):
    variant, size, options = {**FAMILIES, **COMBINED}[family]
    model = randomize(keras_vit.build_vit(variant, image_size=size, num_classes=len(LABELS), **options))
    folder = run_folder.save(model, tmp_path / "run", labels=LABELS, scaling="imagenet")
    loaded, metadata, _ = run_folder.load_model(folder)  # safe_mode=True
    assert metadata["image_size"] == [size, size]
    images = raw_images(4)
    inputs = preprocessing_model(size, "imagenet")(images)
    np.testing.assert_allclose(loaded(inputs), model(inputs), atol=1e-6)

    with_onnx = not onnx.missing_packages()  # the ONNX row says "skipped" without the onnx extra
    report = export.export_model(
        folder, tmp_path / "export", test_images=images, quantizations=("float32",), with_onnx=with_onnx
    )
    rows = {row["artifact"]: row for row in report["artifacts"]}
    assert list(rows) == ["Keras", "SavedModel (serving_uint8)", "LiteRT float32", "ONNX (ONNX Runtime)"]
    assert rows["SavedModel (serving_uint8)"]["max_abs_logit_diff"] < 1e-5
    assert rows["LiteRT float32"]["max_abs_logit_diff"] < 1e-4 and rows["LiteRT float32"]["top1_agreement"] == 1
    if with_onnx:  # the ONNX file at the size in keras_vit.json, dynamic batch
        assert rows["ONNX (ONNX Runtime)"]["max_abs_logit_diff"] < 1e-5
        assert rows["ONNX (ONNX Runtime)"]["top1_agreement"] == 1
    tflite = litert.LiteRTModel(tmp_path / "export" / "tflite" / "vit_float32.tflite")
    assert tflite.image_size == (size, size)
    assert not [op for op in tflite.op_names() if op.startswith("Flex") or op == "CUSTOM"]

    serving = saved_model.load_signature(tmp_path / "export" / "saved_model" / "vit" / "1", "serving_default")
    other = 2 * size if options.get("dynamic_image_size") else size  # any size, for a model that takes any
    pixels = preprocessing_model(other, "imagenet")(images)
    np.testing.assert_allclose(serving(np.asarray(pixels))["logits"], model(pixels), atol=1e-5)


def test_a_quantization_list_out_of_order_is_refused(model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"must be some of .* in that order, starting with 'float32'"):
        export.export_model(model_dir, tmp_path / "out", quantizations=("int8", "float32"))
    assert not (tmp_path / "out").exists()
