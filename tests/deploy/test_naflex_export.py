"""Exporting SigLIP 2's NaFlex models: a SavedModel over its three inputs, LiteRT and ONNX at a fixed N.

A NaFlex model takes patches, their grids and a padding mask (`ViTConfig.naflex`); its files take the
same, the SavedModel at any N, the LiteRT (built-in operators only) and ONNX files at the patch budget
the images are padded to. Each file is reloaded and compared with the Keras model.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit import run_folder
from keras_vit.deploy.export import export_model
from keras_vit.deploy.naflex import NaFlexLiteRT, write_saved_model
from keras_vit.preprocessing import naflex_inputs

CONFIG = dict(hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32, patch_size=4, image_size=(12, 16), num_classes=3)


def _model():
    model = keras_vit.build_vit(keras_vit.ViTConfig(**CONFIG, pooling="map", naflex=True))
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    return model


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size, dtype=np.uint8) for size in ((20, 50, 3), (48, 17, 3), (30, 30, 3))]


def test_the_saved_model_takes_the_three_inputs_at_any_number_of_patches(tmp_path):
    model = _model()
    write_saved_model(model, tmp_path / "sm", labels=["a", "b", "c"], top_k=2)
    signature = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == ["patch_mask", "patches", "spatial_shapes"]
    for budget in (12, 20):  # N is free
        inputs = naflex_inputs(_images(), patch_size=4, max_num_patches=budget)
        outputs = signature(**{key: tf.constant(value) for key, value in inputs.items()})
        np.testing.assert_allclose(outputs["logits"].numpy(), model.predict(inputs, verbose=0), atol=1e-5)
        assert outputs["top_k_labels"].shape == (3, 2)


@pytest.mark.slow  # LiteRT and ONNX conversions: ~40 s
def test_keras_vit_export_writes_naflex_files_that_equal_the_model(tmp_path):
    model = _model()
    run_folder.save(model, tmp_path / "run", labels=["a", "b", "c"], max_num_patches=20)
    images = np.stack([np.random.default_rng(1).integers(0, 256, (12, 40, 3), dtype=np.uint8)] * 2)
    report = export_model(tmp_path / "run", tmp_path / "export", test_images=images)
    rows = {row["artifact"].split(" ")[0]: row for row in report["artifacts"]}
    assert sorted(rows) == ["Keras", "LiteRT", "ONNX", "SavedModel"]
    for name in ("SavedModel", "LiteRT", "ONNX"):
        assert rows[name]["status"] == "kept" and rows[name]["max_abs_logit_diff"] < 1e-4, rows[name]
    assert json.loads((tmp_path / "export" / "parity_report.json").read_text())["artifacts"][2]["path"].endswith(
        ".tflite"
    )
    lite = NaFlexLiteRT(tmp_path / "export" / "tflite" / "vit_float32.tflite")
    inputs = naflex_inputs(_images(), patch_size=4, max_num_patches=20)  # three aspect ratios, batched
    np.testing.assert_allclose(lite(inputs), model.predict(inputs, verbose=0), atol=1e-4)
    with pytest.raises(ValueError, match=r"takes 20 patches per image; got 12"):
        lite(naflex_inputs(_images(), patch_size=4, max_num_patches=12))
