"""The integrity record (`SHA256SUMS`): written by the export, checked by `keras-vit predict` and the kit."""

import functools
import hashlib
import json
import runpy
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from keras_vit.deploy import integrity

pytestmark = pytest.mark.tensorflow


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scramble(path, count=2000):
    """Overwrites `count` bytes in the middle of a file (its header intact), as a bad copy or disk would."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    assert len(data) > start + count, f"{path} is too small to scramble"
    data[start : start + count] = bytes(b ^ 0xA5 for b in data[start : start + count])
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture
def copied_export(exported, tmp_path):
    """A copy of the session's export, free to damage."""
    return shutil.copytree(exported[0], tmp_path / "export")


def test_the_export_records_the_sha256_of_every_file(exported):
    folder, report = exported
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    record = integrity.read_record(folder / integrity.RECORD)
    assert sorted(record) == [name for name in files if name != integrity.RECORD]
    assert all(record[name] == _sha256(folder / name) for name in record)
    # The report carries the artifacts' digests: each file artifact's in its row.
    stored = json.loads((folder / "parity_report.json").read_text())
    rows = {row["artifact"]: row for row in stored["artifacts"]}
    assert rows["LiteRT float32"]["sha256"] == _sha256(folder / "tflite" / "vit_float32.tflite")
    assert stored["sha256"]["saved_model/vit/1/saved_model.pb"] == record["saved_model/vit/1/saved_model.pb"]
    assert "SHA256SUMS" in (folder / "parity_report.md").read_text()
    # The record is sha256sum's own format: the standard tool checks a copy.
    if shutil.which("sha256sum"):
        result = subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=folder, capture_output=True)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "artifact, model",
    [
        ("tflite/vit_float32.tflite", "tflite/vit_float32.tflite"),
        ("onnx/vit.onnx", "onnx/vit.onnx"),
        ("saved_model/vit/1/variables/variables.data-00000-of-00001", "saved_model/vit/1"),
        ("labels.txt", "tflite/vit_float16.tflite"),
    ],
)
def test_predict_refuses_a_corrupted_artifact_in_one_line(cli_main, copied_export, image, capsys, artifact, model):
    if artifact.endswith(".onnx"):
        pytest.importorskip(
            "onnxruntime", reason='the onnx extra is not installed: pip install "keras-vision-transformer[onnx]"'
        )
    damaged = copied_export / artifact
    if artifact == "labels.txt":
        damaged.write_text(damaged.read_text().replace("cat", "dog"))
    else:
        _scramble(damaged)
    assert cli_main(["predict", image, "--model", str(copied_export / model)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no prediction
    assert captured.err.count("\n") == 1
    assert f"{damaged} does not match the SHA-256 recorded for it in {copied_export / 'SHA256SUMS'}" in captured.err


@pytest.mark.parametrize(
    "script, artifact", [("predict_litert.py", "tflite/vit_float32.tflite"), ("predict_onnx.py", "onnx/vit.onnx")]
)
def test_the_kit_refuses_a_corrupted_model_in_one_line(
    repo, copied_export, image, monkeypatch, capsys, script, artifact
):
    if script == "predict_onnx.py":
        pytest.importorskip(
            "onnxruntime", reason='the onnx extra is not installed: pip install "keras-vision-transformer[onnx]"'
        )
    monkeypatch.syspath_prepend(str(repo / "export"))  # predict_onnx.py imports predict_litert.py
    kit = runpy.run_path(str(repo / "export" / script))
    main = (
        functools.partial(kit["main"], model_kind=".onnx", load=kit["load_classifier"])
        if "onnx" in script
        else kit["main"]
    )
    model = copied_export / artifact
    assert main(["--model", str(model), image]) == 0  # intact: checked and answered
    capsys.readouterr()
    _scramble(model)
    assert main(["--model", str(model), image]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert f"{model} does not match the SHA-256 recorded for it in" in captured.err


def test_a_model_without_a_record_is_taken_as_it_is(cli_main, exported, tmp_path, image, capsys):
    """An older export or a user's own file: nothing to check against, so it answers."""
    shutil.copy(exported[0] / "tflite" / "vit_float32.tflite", tmp_path / "mine.tflite")
    shutil.copy(exported[0] / "labels.txt", tmp_path / "labels.txt")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  something_else.tflite\n")  # lists other files only
    assert cli_main(["predict", image, "--model", str(tmp_path / "mine.tflite"), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.startswith(image)
    assert integrity.verify(tmp_path / "mine.tflite") == 0
