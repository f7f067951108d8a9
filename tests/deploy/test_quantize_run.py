"""`keras-vit quantize`: a run's model through Keras' `model.quantize`, as a new run folder with its parity row."""

import json

import numpy as np
import pytest

from keras_vit import cli, run_folder
from keras_vit.deploy import export, parity
from keras_vit.deploy.quantize import quantize_run


@pytest.fixture(scope="module")
def quantized(model_dir, tmp_path_factory, raw_images):
    output = tmp_path_factory.mktemp("quantized") / "int8"
    images = raw_images(12)
    labels = np.arange(12) % 10
    assert cli.main(["quantize", str(model_dir), "--output", str(output)] + _npy(tmp_path_factory, images, labels)) == 0
    return output, images


def _npy(tmp_path_factory, images, labels):
    folder = tmp_path_factory.mktemp("npy")
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels)
    return ["--test-images", str(folder / "images.npy"), "--test-labels", str(folder / "labels.npy")]


def test_quantize_writes_a_run_folder_that_loads_in_safe_mode(quantized, model_dir, keras_logits):
    output, images = quantized
    model, metadata, _ = run_folder.load_model(output)  # safe mode
    assert metadata["quantization"] == "int8" and metadata["labels"] == run_folder.read_metadata(model_dir)["labels"]
    assert model.get_layer("block_0").attention.qkv.quantization_mode == "int8"
    original, _, _ = run_folder.load_model(model_dir)
    logits, reference = keras_logits(model, images), keras_logits(original, images)
    assert np.mean(logits.argmax(-1) == reference.argmax(-1)) >= 0.9
    assert 0 < np.abs(logits - reference).max() < 0.1 * np.abs(reference).max()


def test_quantize_reports_float32_and_the_quantized_model_side_by_side(quantized):
    output, _ = quantized
    report = json.loads((output / "parity_report.json").read_text())
    assert (output / "parity_report.md").read_text() == parity.markdown(report)
    reference, row = report["artifacts"]
    assert [reference["artifact"], row["artifact"]] == ["Keras float32", "Keras int8"]
    assert reference["max_abs_logit_diff"] == 0 and row["max_abs_logit_diff"] > 0
    assert row["top1_agreement"] >= 0.9 and row["accuracy"] is not None and row["latency_ms"] > 0
    assert row["path"] == "model.keras"
    assert 0.25 < row["size_mb"] / reference["size_mb"] < 0.5  # int8 kernels, float32 norms, biases and scales
    assert "x the float32 latency" in row["reason"] and "LiteRT" in row["reason"]


def test_quantize_refuses_an_existing_output_and_a_quantized_model(quantized, model_dir, capsys):
    output, _ = quantized
    assert cli.main(["quantize", str(model_dir), "--output", str(output)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    with pytest.raises(ValueError, match="already quantized"):
        quantize_run(output, output.parent / "again", "int4")
    with pytest.raises(ValueError, match="not one of Keras' quantization modes"):
        quantize_run(model_dir, output.parent / "bad", "int2")
    assert not (output.parent / "again").exists() and not (output.parent / "bad").exists()


def test_a_quantized_run_exports_a_saved_model_and_says_why_not_litert(quantized, tmp_path, raw_images):
    output, _ = quantized
    report = export.export_model(output, tmp_path / "export", test_images=raw_images(4), with_onnx=False)
    rows = {row["artifact"]: row for row in report["artifacts"]}
    assert rows["SavedModel (serving_uint8)"]["max_abs_logit_diff"] < 1e-5
    litert_rows = [row for name, row in rows.items() if name.startswith("LiteRT")]
    assert litert_rows and all(row["status"] == "skipped" for row in litert_rows)
    assert "keras-vit export" in litert_rows[0]["reason"] and "float32 run" in litert_rows[0]["reason"]
