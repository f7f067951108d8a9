"""bfloat16 on CPUs: the model rebuilt under `mixed_bfloat16`, its SavedModel row, `keras-vit predict --precision`."""

import json

import keras
import numpy as np

from keras_vit.deploy import export, precision
from keras_vit.model import model_config


def test_the_bfloat16_copy_computes_in_bfloat16_with_the_same_weights_and_float32_logits(model, keras_logits):
    copy = precision.bfloat16_copy(model)
    assert copy.get_layer("block_0").compute_dtype == "bfloat16" and copy.get_layer("head").compute_dtype == "float32"
    assert model_config(copy) == model_config(model) and keras.config.dtype_policy().name == "float32"
    for ours, theirs in zip(copy.weights, model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs))
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    logits, reference = keras_logits(copy, images), keras_logits(model, images)
    assert logits.dtype == np.float32
    assert 0 < np.abs(logits - reference).max() < 0.05 * np.abs(reference).max() + 0.05  # bfloat16: 8 bits of mantissa
    assert precision.with_precision(model, "float32") is model


def test_export_writes_a_bfloat16_saved_model_with_its_parity_row(model_dir, tmp_path, raw_images):
    output = tmp_path / "export"
    report = export.export_model(
        model_dir, output, test_images=raw_images(8), quantizations=("float32",), with_onnx=False, bfloat16=True
    )
    rows = {row["artifact"]: row for row in report["artifacts"]}
    row = rows["SavedModel bfloat16 (serving_uint8)"]
    assert (output / "saved_model_bfloat16" / "vit" / "1" / "saved_model.pb").is_file()
    assert row["status"] == "kept" and row["top1_agreement"] >= 0.75 and row["latency_ms"] > 0
    assert 0 < row["max_abs_logit_diff"] < 0.1
    assert "x the float32 SavedModel's speed at batch 1 on" in row["reason"]
    assert rows["SavedModel (serving_uint8)"]["max_abs_logit_diff"] < 1e-5
    assert json.loads((output / "parity_report.json").read_text()) == report


def test_predict_precision_bfloat16_on_a_keras_model_and_refused_on_exported_files(
    cli_main, model_dir, raw_images, tmp_path, capsys
):
    from PIL import Image

    Image.fromarray(raw_images(1, 32, 32)[0]).save(tmp_path / "a.png")
    assert cli_main(["predict", str(tmp_path / "a.png"), "--model", str(model_dir), "--json"]) == 0
    float32 = json.loads(capsys.readouterr().out)
    args = ["predict", str(tmp_path / "a.png"), "--model", str(model_dir), "--json", "--precision", "bfloat16"]
    assert cli_main(args) == 0
    bfloat16 = json.loads(capsys.readouterr().out)
    assert bfloat16["top_k"][0]["label"] == float32["top_k"][0]["label"]
    assert abs(bfloat16["top_k"][0]["probability"] - float32["top_k"][0]["probability"]) < 0.05
    tflite = str(tmp_path / "vit_float32.tflite")  # refused before it is read
    assert cli_main(["predict", str(tmp_path / "a.png"), "--model", tflite, "--precision", "bfloat16"]) == 2
    assert "--precision bfloat16 applies to .keras models" in capsys.readouterr().err
