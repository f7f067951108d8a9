"""`export_model` and `keras-vit export`: the layout, the parity report, atomic writes, refusals."""

import json
import os
import re
import shutil
import types

import numpy as np
import pytest
from PIL import Image

from keras_vit.deploy import export, litert, onnx, parity
from keras_vit.run_folder import write_metadata
from keras_vit.training import data

ARTIFACTS = (
    ["Keras", "SavedModel (serving_uint8)"] + [f"LiteRT {q}" for q in litert.QUANTIZATIONS] + ["ONNX (ONNX Runtime)"]
)


def test_export_writes_tf_serving_and_litert_layout(exported, labels):
    output, _ = exported
    assert (output / "saved_model" / "vit" / "1" / "saved_model.pb").is_file()
    assert sorted(os.listdir(output / "tflite")) == sorted(f"vit_{q}.tflite" for q in litert.QUANTIZATIONS)
    assert (output / "onnx" / "vit.onnx").is_file() == (not onnx.missing_packages())
    assert (output / "labels.txt").read_text().splitlines() == labels
    # Nothing half-written is left beside the target.
    assert os.listdir(output.parent) == ["out"]


def test_report_measures_every_artifact(exported):
    output, report = exported
    assert json.loads((output / "parity_report.json").read_text()) == report
    assert (output / "parity_report.md").read_text() == parity.markdown(report)
    rows = {row["artifact"]: row for row in report["artifacts"]}
    assert list(rows) == ARTIFACTS
    assert report["num_test_images"] == 24 and report["test_images"] == "test"
    if onnx.missing_packages():  # tests/deploy/test_onnx.py checks that row
        assert rows.pop("ONNX (ONNX Runtime)")["status"] == "skipped"
    for name, row in rows.items():
        assert row["status"] == "kept"
        assert name == "Keras" or row["seconds"]["write"] > 0 and row["seconds"]["measure"] > 0
        assert row["size_mb"] > 0.05 and row["latency_ms"] > 0
        assert 0 <= row["accuracy"] <= 1
        assert os.path.exists(row["path"] if name == "Keras" else output / row["path"])
    assert rows["SavedModel (serving_uint8)"]["max_abs_logit_diff"] < 1e-5
    assert rows["LiteRT float32"]["max_abs_logit_diff"] < 1e-4
    assert rows["LiteRT float16"]["max_abs_logit_diff"] < 5e-3
    assert rows["LiteRT float32"]["top1_agreement"] == 1.0
    assert rows["LiteRT float32"]["accuracy"] == rows["Keras"]["accuracy"]
    assert "within int8_tolerance=1.0" in rows["LiteRT int8"]["reason"]


def test_int8_is_dropped_with_the_reason_when_accuracy_falls(tmp_path):
    (tmp_path / "vit_int8.tflite").write_bytes(b"x")
    rows = [
        {"artifact": "LiteRT float32", "accuracy": 0.90, "top1_agreement": 1.0, "status": "kept"},
        {
            "artifact": "LiteRT int8",
            "accuracy": 0.85,
            "top1_agreement": 0.9,
            "status": "kept",
            "path": "vit_int8.tflite",
        },
    ]
    export.judge_int8(rows, 0.02, str(tmp_path))
    assert rows[-1]["status"] == "dropped"
    assert rows[-1]["reason"] == "accuracy 85.00% is 5.00% below float32's, more than int8_tolerance=0.02"
    assert not (tmp_path / "vit_int8.tflite").exists()
    assert "- LiteRT int8: accuracy 85.00% is 5.00% below" in parity.markdown(
        {"model": "m", "num_test_images": 1, "test_images": "test", "artifacts": rows}
    )


def test_without_labels_int8_is_judged_on_agreement_with_keras():
    float32 = {"accuracy": None, "top1_agreement": 1.0}
    assert parity.int8_verdict({"accuracy": None, "top1_agreement": 0.995}, float32, 0.01)[0]
    keep, reason = parity.int8_verdict({"accuracy": None, "top1_agreement": 0.9}, float32, 0.01)
    assert not keep and reason.startswith("top1_agreement 90.00%")


def test_cli_export_refuses_an_existing_target_then_overwrites_it(cli_main, model_dir, tmp_path, capsys, raw_images):
    target = tmp_path / "out"
    (target / "saved_model").mkdir(parents=True)  # an earlier export
    (target / "parity_report.json").write_text("{}")
    (target / "old_file").write_text("from an earlier export")
    np.save(tmp_path / "images.npy", raw_images(6, 33, 20))
    args = ["export", str(model_dir), "--output", str(target), "--test-images", str(tmp_path / "images.npy")]
    assert cli_main(args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    previous = os.umask(0o022)
    try:
        assert cli_main(args + ["--overwrite", "--name", "digits", "--version", "7", "--no-onnx"]) == 0
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == 0o755  # readable by a model server running as another user
    printed = capsys.readouterr().out
    assert "| LiteRT float16 |" in printed and "LiteRT int8: no calibration images were given" in printed
    # One line per artifact as it is written, before the table.
    assert re.search(
        r"^  wrote tflite/vit_float16.tflite \(\d+\.\d MB\) in \d+\.\d s, measured in \d+\.\d s$", printed, re.M
    )
    assert printed.index("  wrote saved_model/digits/7") < printed.index("| artifact |")
    assert not (target / "old_file").exists()
    assert (target / "saved_model" / "digits" / "7" / "saved_model.pb").is_file()
    rows = {row["artifact"]: row for row in json.loads((target / "parity_report.json").read_text())["artifacts"]}
    assert rows["LiteRT int8"]["status"] == "skipped" and rows["LiteRT float32"]["accuracy"] is None
    assert rows["ONNX (ONNX Runtime)"] == {
        "artifact": "ONNX (ONNX Runtime)",
        "status": "skipped",
        "reason": "not asked for (--no-onnx)",
    }
    assert not (target / "onnx").exists()
    assert sorted(os.listdir(tmp_path)) == ["images.npy", "out"]


def test_overwrite_replaces_only_an_earlier_export(cli_main, model_dir, tmp_path, capsys):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"not ours")
    assert cli_main(["export", str(model_dir), "--output", str(target), "--overwrite"]) == 2
    assert "is not an earlier export" in capsys.readouterr().err
    assert (target / "holiday.jpg").read_bytes() == b"not ours"


def test_interrupted_export_leaves_nothing(model_dir, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(litert, "convert", fail)
    with pytest.raises(KeyboardInterrupt):
        export.export_model(str(model_dir), str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "arrays, message",  # `arrays(raw_images)`: the keyword arguments
    [
        (lambda raw: {"test_images": raw(2).astype("float32")}, "test_images must be raw uint8 pixels"),
        (lambda raw: {"test_images": raw(2)[..., :1]}, r"got uint8 with shape \(2, 40, 48, 1\)"),
        (
            lambda raw: {"test_images": raw(2), "test_labels": [1, 2, 3]},
            r"test_labels must be integers of shape \(2,\)",
        ),
        (lambda raw: {"test_images": raw(2), "test_labels": [0, 10]}, r"class indices in \[0, 10\)"),
        (lambda raw: {"test_labels": [0, 1]}, "test_labels were given without test_images"),
        (lambda raw: {"calibration_images": np.zeros((0, 32, 32, 3), "uint8")}, "calibration_images must be .* N > 0"),
    ],
)
def test_bad_arrays_are_refused_before_anything_is_written(model_dir, tmp_path, raw_images, arrays, message):
    with pytest.raises(ValueError, match=message):
        export.export_model(str(model_dir), str(tmp_path / "out"), **arrays(raw_images))
    assert os.listdir(tmp_path) == []


def test_a_folder_without_a_model_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a folder with model.keras and keras_vit.json"):
        export.export_model(str(tmp_path), str(tmp_path / "out"))


def test_cli_rejects_arrays_that_are_not_npy(cli_main, model_dir, tmp_path, capsys):
    (tmp_path / "images.npz").write_bytes(b"")
    assert (
        cli_main(
            ["export", str(model_dir), "--output", str(tmp_path / "o"), "--test-images", str(tmp_path / "images.npz")]
        )
        == 2
    )
    assert "expected a .npy file" in capsys.readouterr().err


def _model_with_metadata(model_dir, folder, **metadata):
    """`model_dir`'s model.keras beside a copy of its keras_vit.json changed by `metadata`."""
    folder.mkdir()
    shutil.copy(model_dir / "model.keras", folder / "model.keras")
    original = json.loads((model_dir / "keras_vit.json").read_text())
    write_metadata(folder, **{**{key: original[key] for key in ("image_size", "scaling", "labels")}, **metadata})
    return folder


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"labels": ["airplane", "car", "bird", "cat"]}, "has 10 outputs but keras_vit.json beside it lists 4 labels"),
        ({"image_size": (16, 16)}, r"takes \(32, 32\) images but keras_vit.json beside it says image_size=\(16, 16\)"),
    ],
)
@pytest.mark.parametrize("command", ["export", "predict"])
def test_metadata_of_another_model_is_refused(
    cli_main, model_dir, tmp_path, capsys, raw_images, metadata, message, command
):
    folder = _model_with_metadata(model_dir, tmp_path / "mixed", **metadata)
    Image.fromarray(raw_images(1)[0]).save(tmp_path / "img.png")
    args = ["--output", str(tmp_path / "out")] if command == "export" else ["--model", str(folder)]
    target = [str(folder)] if command == "export" else [str(tmp_path / "img.png")]
    assert cli_main([command, *target, *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"version": -3}, "version=-3 must be an integer >= 1"),
        ({"version": 0}, "version=0 must be an integer >= 1"),
        ({"version": 1.5}, "version=1.5 must be an integer >= 1"),
        ({"name": "a/b"}, "name='a/b' must be one folder name"),
        ({"name": ".."}, "name='..' must be one folder name"),
        ({"name": ""}, "name='' must be one folder name"),
    ],
)
def test_names_and_versions_tf_serving_cannot_load_are_refused(model_dir, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export.export_model(str(model_dir), str(tmp_path / "out"), **kwargs)
    assert os.listdir(tmp_path) == []


def test_cli_export_refuses_a_dataset_with_other_labels(cli_main, model_dir, tmp_path, capsys, monkeypatch, labels):
    def fake_load(name, data_dir=None, **kwargs):
        return types.SimpleNamespace(labels=[str(i) for i in range(4)] if name == "four" else labels[::-1])

    monkeypatch.setattr(data, "load", fake_load)
    monkeypatch.setattr(data, "report_arrays", lambda *args: pytest.fail("the labels were not compared first"))
    for dataset, message in [
        (
            "four",
            "Dataset 'four' does not have the model's labels: it has 4 classes "
            "(0, 1, 2, 3), the model 10 (airplane, car, bird, cat, deer, ...)",
        ),
        ("reversed", "its class 0 is 'truck', the model's is 'airplane'"),
    ]:
        assert cli_main(["export", str(model_dir), "--output", str(tmp_path / "o"), "--dataset", dataset]) == 2
        assert message in capsys.readouterr().err


def test_check_dataset_labels_accepts_the_same_labels(labels):
    data.check_dataset_labels(list(labels), labels, "cifar10")
    data.check_dataset_labels(range(3), ["0", "1", "2"], "digits")  # TFDS label names vs JSON strings


@pytest.mark.parametrize(
    "content, message", [(None, "No such .npy file: .*missing.npy"), (b"hello", "bad.npy is not a readable .npy array")]
)
def test_cli_names_the_npy_file_it_cannot_read(cli_main, model_dir, tmp_path, capsys, content, message):
    path = tmp_path / ("missing.npy" if content is None else "bad.npy")
    if content is not None:
        path.write_bytes(content)
    assert cli_main(["export", str(model_dir), "--output", str(tmp_path / "o"), "--test-images", str(path)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1


def test_cli_export_of_a_run_takes_the_runs_own_dataset(cli_main, tmp_path, capsys, tiny_vit, write_run_folder):
    """`keras-vit export RUN --output OUT`: the report measures accuracy and calibrates int8 on the run's dataset."""
    model = tiny_vit(num_classes=10)
    run = write_run_folder(tmp_path / "run", model, [str(i) for i in range(10)], source="digits", seed=0)
    assert cli_main(["export", str(run), "--output", str(tmp_path / "out"), "--no-onnx"]) == 0
    assert "test and calibration images from the run's dataset digits" in capsys.readouterr().out
    rows = {
        row["artifact"]: row for row in json.loads((tmp_path / "out" / "parity_report.json").read_text())["artifacts"]
    }
    assert rows["Keras"]["accuracy"] is not None and rows["LiteRT int8"]["status"] != "skipped"


def test_cli_export_into_a_read_only_folder_is_one_line_naming_it(cli_main, model_dir, read_only_folder, capsys):
    assert cli_main(["export", str(model_dir), "--output", str(read_only_folder / "out"), "--no-onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"keras-vit export: error: {read_only_folder}: permission denied")
    assert list(read_only_folder.iterdir()) == []


def test_a_full_disk_during_the_export_is_one_line_and_leaves_nothing(
    cli_main, model_dir, tmp_path, capsys, monkeypatch
):
    """TensorFlow says ResourceExhaustedError when the SavedModel's variables do not fit on the disk."""
    import tensorflow as tf

    from keras_vit.deploy import saved_model

    def full_disk(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "variables.data-00000-of-00001; No space left on device")

    monkeypatch.setattr(saved_model, "write_saved_model", full_disk)
    output = tmp_path / "out"
    assert cli_main(["export", str(model_dir), "--output", str(output), "--no-onnx"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"keras-vit export: error: {output}: no space left on the device: free some space (or choose another disk) and run it again.\n"
    )
    assert list(tmp_path.iterdir()) == []  # the staging folder removed too
