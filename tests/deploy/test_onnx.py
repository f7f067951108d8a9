"""ONNX: `model.export(format="onnx")` on every model kind and family, the export's `onnx/vit.onnx`, failures and skips."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit.deploy import export, litert, onnx

pytest.importorskip(
    "onnxruntime", reason='the onnx extra is not installed: pip install "keras-vision-transformer[onnx]"'
)
pytest.importorskip("tf2onnx", reason='the onnx extra is not installed: pip install "keras-vision-transformer[onnx]"')
import onnxruntime  # noqa: E402

KINDS = {
    "class token": {},
    "gap": {"pooling": "gap"},
    "non-square": {"image_size": (16, 24), "patch_size": (4, 8)},
    "token merging": {"merge": 2},
    # The families' options (tests/test_families.py), between them every one:
    "DeiT III, distilled, CLIP, registers": {
        "layer_scale_init": 1e-6,
        "embed_prefix_tokens": False,
        "distillation": True,
        "pre_norm": True,
        "patch_bias": False,
        "activation": "quick_gelu",
        "num_register_tokens": 2,
    },
    "SigLIP MAP head": {"pooling": "map", "activation": "gelu_tanh"},
    "avg + fc_norm": {"pooling": "gap", "pooled_norm": True},
    "any size (DINOv2)": {"dynamic_image_size": True, "num_register_tokens": 4, "layer_scale_init": 1e-5},
}


@pytest.mark.parametrize("kind", KINDS)
def test_model_export_onnx_equals_keras_and_the_saved_model(kind, tiny_vit, randomize, tmp_path):
    """Keras' own `model.export(format="onnx")`: no `Erfc` (ONNX has none), so ONNX Runtime runs it."""
    options = dict(KINDS[kind])
    merge = options.pop("merge", 0)
    model = randomize(tiny_vit(**{"image_size": 16, **options}))
    if merge:
        model = keras_vit.apply_token_merging(model, merge)
    size = model.input_shape[1:3] if model.input_shape[1] else (16, 16)
    images = np.random.default_rng(0).normal(size=(3, *size, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: images})
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    saved = tf.saved_model.load(str(tmp_path / "saved"))  # kept: its functions need its variables alive
    served = saved.serve(images).numpy()
    np.testing.assert_allclose(logits, served, rtol=1e-5, atol=1e-5)
    if not model.input_shape[1]:  # any size: the ONNX graph resamples the position embedding at run time too
        other = np.random.default_rng(1).normal(size=(2, 24, 32, 3)).astype("float32")
        (logits,) = session.run(None, {session.get_inputs()[0].name: other})
        np.testing.assert_allclose(logits, model.predict(other, verbose=0), rtol=1e-5, atol=1e-5)


def test_export_writes_onnx_with_named_io_dynamic_batch_and_labels(exported, labels):
    output, report = exported
    session = onnxruntime.InferenceSession(str(output / "onnx" / "vit.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("pixels", ["batch", 32, 32, 3])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [
        ("logits", ["batch", 10]),
        ("probabilities", ["batch", 10]),
    ]
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["labels"]) == labels and json.loads(metadata["image_size"]) == [32, 32]
    row = {row["artifact"]: row for row in report["artifacts"]}["ONNX (ONNX Runtime)"]
    keras_row = report["artifacts"][0]
    assert row["status"] == "kept" and row["path"] == os.path.join("onnx", "vit.onnx")
    assert row["max_abs_logit_diff"] < 1e-5 and row["top1_agreement"] == 1.0
    assert row["accuracy"] == keras_row["accuracy"] and row["latency_ms"] > 0 and row["size_mb"] > 0.05


@pytest.mark.parametrize("batch", [1, 5])
def test_the_onnx_file_equals_keras_and_the_saved_model(exported, model, raw_images, keras_logits, image_size, batch):
    from keras_vit.deploy.saved_model import load_signature

    images = raw_images(batch, 45, 29, seed=batch)  # non-square, resized as the device would
    runner = onnx.ONNXModel(exported[0] / "onnx" / "vit.onnx")
    logits = runner(litert.resized_pixels(images, image_size))
    np.testing.assert_allclose(logits, keras_logits(model, images), rtol=1e-5, atol=1e-5)
    served = load_signature(exported[0] / "saved_model" / "vit" / "1", "serving_uint8")(images)["logits"]
    np.testing.assert_allclose(logits, served, rtol=1e-5, atol=1e-5)


@pytest.fixture
def erfc_gelu(monkeypatch):
    """The inference GELU as TensorFlow's own (`erfc`): tf2onnx converts it to an op ONNX Runtime lacks."""
    from keras_vit.layers import functions

    monkeypatch.setattr(functions, "gelu", keras.activations.gelu)


def _onnx_row(model, root, with_onnx):
    metadata = {"image_size": [32, 32], "scaling": "vit", "labels": [str(i) for i in range(10)]}
    return export._onnx_row(model, metadata, str(root), None, None, with_onnx)


def test_when_asked_for_a_failed_conversion_stops_the_export_with_one_line(erfc_gelu, model, tmp_path):
    with pytest.raises(onnx.ONNXExportError) as caught:
        _onnx_row(model, tmp_path, with_onnx=True)
    message = str(caught.value)
    assert message.startswith("ONNX Runtime cannot run the converted model: ") and "Erfc" in message
    assert "\n" not in message
    assert os.listdir(tmp_path) == []  # no onnx/ folder; export_model's staging folder is then removed whole


def test_by_default_a_failed_conversion_is_a_row_saying_why(erfc_gelu, model, tmp_path, capsys):
    row = _onnx_row(model, tmp_path, with_onnx=None)
    assert (
        row["status"] == "failed"
        and "Erfc" in row["reason"]
        and row["reason"].endswith("Pass --no-onnx to leave it out.")
    )
    assert os.listdir(tmp_path) == []
    assert capsys.readouterr().out.startswith("  failed ONNX (ONNX Runtime): ONNX Runtime cannot run")


def test_without_the_packages_onnx_is_skipped_and_the_report_says_why(model, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx, "missing_packages", lambda: ["tf2onnx"])
    row = _onnx_row(model, tmp_path, with_onnx=None)
    assert row == {
        "artifact": "ONNX (ONNX Runtime)",
        "status": "skipped",
        "reason": 'tf2onnx not installed (pip install "keras-vision-transformer[onnx]")',
    }
    assert _onnx_row(model, tmp_path, with_onnx=False)["reason"] == "not asked for (--no-onnx)"
    assert os.listdir(tmp_path) == []


def test_cli_onnx_without_the_packages_is_refused_before_anything_is_written(
    cli_main, model_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(onnx, "missing_packages", lambda: ["tf2onnx", "onnx"])
    assert cli_main(["export", str(model_dir), "--output", str(tmp_path / "out"), "--onnx"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "keras-vit export: error: ONNX export was asked for (--onnx) but needs tf2onnx, onnx: "
        'pip install "keras-vision-transformer[onnx]".\n'
    )
    assert os.listdir(tmp_path) == []


def test_a_damaged_onnx_file_is_named(tmp_path):
    (tmp_path / "bad.onnx").write_text("not a model")
    with pytest.raises(ValueError, match=r"bad.onnx is not a valid .onnx model \("):
        onnx.ONNXModel(tmp_path / "bad.onnx")
    with pytest.raises(FileNotFoundError, match="No such .onnx file: .*nope.onnx"):
        onnx.ONNXModel(tmp_path / "nope.onnx")
