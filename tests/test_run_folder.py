"""The run folder: starting a run (and deleting only runs), reading a model with its metadata."""

import json
import os
import signal
import subprocess
import sys

import pytest

from keras_vit import run_folder


def test_overwrite_deletes_a_run_folder(tmp_path):
    output = str(tmp_path / "run")
    run_folder.start(output, {"epochs": 2})  # as a run starts, killed before it wrote more
    (tmp_path / "run" / "history.csv").write_text("epoch,loss\n")
    run_folder.start(output, {"epochs": 3}, overwrite=True)
    assert sorted(os.listdir(tmp_path / "run")) == [run_folder.LOCK, run_folder.SETTINGS]
    assert json.loads((tmp_path / "run" / run_folder.SETTINGS).read_text())["epochs"] == 3


def test_a_model_keras_that_is_no_archive_is_named_as_such(tmp_path, tiny_vit, write_run_folder):
    folder = write_run_folder(tmp_path / "text", tiny_vit(), ["a", "b", "c"])
    (folder / "model.keras").write_text("not a model")
    with pytest.raises(ValueError, match=r"model.keras is not a valid .keras archive"):
        run_folder.load_model(str(folder))


@pytest.mark.parametrize(
    "dataset, model, expected",
    [
        ("digits", None, "runs/digits"),
        ("~/photos/", None, "runs/photos"),
        ("~/photos", "S/16", "runs/photos-S16"),
        ("cifar10", "B/16:augreg_in21k", "runs/cifar10-B16"),
        ("cifar10", "/tmp/weights/vit_b16.npz", "runs/cifar10-vit_b16"),
        ("~/photos", "runs/digits/model.keras", "runs/photos-digits"),
    ],
)
def test_the_default_output_is_named_after_the_dataset_and_model(dataset, model, expected):
    assert run_folder.default_output(dataset, model) == os.path.join(*expected.split("/"))


def test_an_output_under_a_file_names_the_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"file is a file, not a folder; choose another --output"):
        run_folder.check_output(str(tmp_path / "file" / "run"), overwrite=False, resume=False)


_HOLDER = """
import sys, time
from keras_vit import run_folder
run_folder.start(sys.argv[1], {"epochs": 1})
print("started", flush=True)
time.sleep(300)
"""


def test_a_run_in_use_is_refused_until_its_process_is_gone(tmp_path):
    output = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, output], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "started"
        in_use = rf"run is in use by another keras-vit process \(pid {holder.pid}\), still writing"
        for overwrite, resume in ((True, False), (False, True)):
            with pytest.raises(FileExistsError, match=in_use):
                run_folder.check_output(output, overwrite=overwrite, resume=resume)
        with pytest.raises(FileExistsError, match=in_use):
            run_folder.start(output, {"epochs": 2}, overwrite=True)
        with pytest.raises(FileExistsError, match=in_use):
            run_folder.lock(output)
        assert json.loads((tmp_path / "run" / run_folder.SETTINGS).read_text()) == {"epochs": 1}  # untouched
    finally:
        holder.send_signal(signal.SIGKILL)  # SIGKILL: no cleanup, the lock stays behind, stale
        holder.wait()
    assert (tmp_path / "run" / run_folder.LOCK).read_text() == str(holder.pid)
    run_folder.start(output, {"epochs": 2}, overwrite=True)
    assert (tmp_path / "run" / run_folder.LOCK).read_text() == str(os.getpid())
    run_folder.unlock(output)
    assert sorted(os.listdir(tmp_path / "run")) == [run_folder.SETTINGS]


@pytest.mark.parametrize("name", [run_folder.METADATA, run_folder.SETTINGS])
def test_a_damaged_json_file_is_named(tmp_path, tiny_vit, write_run_folder, name):
    folder = write_run_folder(tmp_path / "run", tiny_vit(), ["a", "b", "c"])
    (folder / name).write_text('{"image_size": [32, 32], "labels": ')  # cut short, as a full disk leaves it
    message = rf"{folder / name} is not valid JSON \(Expecting value: line 1 column 36 \(char 35\)\): it was damaged"
    with pytest.raises(ValueError, match=message):
        run_folder.load_model(str(folder)) if name == run_folder.METADATA else run_folder.read_settings(str(folder))


def test_a_runs_best_checkpoint_reads_the_runs_metadata(tmp_path, tiny_vit, write_run_folder):
    folder = write_run_folder(tmp_path / "run", tiny_vit(), ["a", "b", "c"])
    (folder / "checkpoints").mkdir()
    os.link(folder / run_folder.MODEL, folder / run_folder.BEST)
    _, metadata, path = run_folder.load_model(str(folder / run_folder.BEST))
    assert metadata["labels"] == ["a", "b", "c"] and path == str(folder / run_folder.BEST)
    assert run_folder.has_metadata(folder / run_folder.BEST)
    with pytest.raises(FileNotFoundError, match="No keras_vit.json next to"):  # a bare checkpoints/ folder elsewhere
        (tmp_path / "checkpoints").mkdir()
        os.link(folder / run_folder.MODEL, tmp_path / "checkpoints" / "best.keras")
        run_folder.load_model(str(tmp_path / "checkpoints" / "best.keras"))
