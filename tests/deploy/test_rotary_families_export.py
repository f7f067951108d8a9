"""EVA-02 and Perception Encoder models ship like the plain ViT: SavedModel, builtin-only LiteRT, ONNX.

One tiny model carries every option the two families bring (SwiGLU with its inner norm, no key
bias, the norm inside attention, a rotary embedding on xy indices offset by 1 with a reference grid,
a pre-norm without patch bias, a MAP head of its own head count and MLP width), every weight random,
through `run_folder.save` / `load_model` (safe mode) and `export_model`. It takes any image size:
its SavedModel's `serving_default` runs at another one, its LiteRT file at the size in `keras_vit.json`,
the rotary angles precomputed for that grid.
"""

import numpy as np
import pytest

import keras_vit
from keras_vit import run_folder
from keras_vit.checkpoints.families import _EVA_ROTARY, _pe_rotary
from keras_vit.deploy import export, litert, onnx, saved_model
from keras_vit.preprocessing import preprocessing_model

LABELS = ["a", "b", "c"]
EVA_PE_OPTIONS = dict(
    mlp="swiglu", mlp_dim=96, mlp_norm=True, key_bias=False, attention_norm=True,  # EVA-02 (CLIP)
    rotary=_pe_rotary((6, 6)), pre_norm=True, patch_bias=False, layer_norm_epsilon=1e-5,  # PE
    pooling="map", class_token=True, map_num_heads=4, map_mlp_dim=160, dynamic_image_size=True,
)  # fmt: skip


def test_the_eva02_rotary_record_is_the_one_timm_uses():
    assert _EVA_ROTARY.reference_grid == (16, 16) and _EVA_ROTARY.grid_indexing == "ij"


@pytest.mark.slow  # one full export, ~40 s
def test_an_eva02_and_pe_model_exports_with_parity(tmp_path, randomize, raw_images):
    model = randomize(keras_vit.build_vit("tiny/8", image_size=32, num_classes=len(LABELS), **EVA_PE_OPTIONS))
    folder = run_folder.save(model, tmp_path / "run", labels=LABELS, scaling="vit")
    loaded, metadata, _ = run_folder.load_model(folder)  # safe_mode=True
    images = raw_images(4)
    inputs = preprocessing_model(32, "vit")(images)
    np.testing.assert_allclose(loaded(inputs), model(inputs), atol=1e-6)

    with_onnx = not onnx.missing_packages()
    report = export.export_model(
        folder, tmp_path / "export", test_images=images, quantizations=("float32",), with_onnx=with_onnx
    )
    rows = {row["artifact"]: row for row in report["artifacts"]}
    assert rows["SavedModel (serving_uint8)"]["max_abs_logit_diff"] < 1e-5
    assert rows["LiteRT float32"]["max_abs_logit_diff"] < 1e-4 and rows["LiteRT float32"]["top1_agreement"] == 1
    if with_onnx:
        assert rows["ONNX (ONNX Runtime)"]["max_abs_logit_diff"] < 1e-5
    tflite = litert.LiteRTModel(tmp_path / "export" / "tflite" / "vit_float32.tflite")
    assert tflite.image_size == (32, 32)
    assert not [op for op in tflite.op_names() if op.startswith("Flex") or op == "CUSTOM"]
    serving = saved_model.load_signature(tmp_path / "export" / "saved_model" / "vit" / "1", "serving_default")
    pixels = preprocessing_model((32, 48), "vit")(images)  # a non-square grid: the rotary angles follow it
    np.testing.assert_allclose(serving(np.asarray(pixels))["logits"], model(pixels), atol=1e-5)
