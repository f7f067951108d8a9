"""The run folder: starting a run (and deleting only runs), reading a model with its metadata."""

import json
import os

import pytest

from keras_vit import run_folder


def test_overwrite_deletes_a_run_folder(tmp_path):
    output = str(tmp_path / "run")
    run_folder.start(output, {"epochs": 2})  # as a run starts, killed before it wrote more
    (tmp_path / "run" / "history.csv").write_text("epoch,loss\n")
    run_folder.start(output, {"epochs": 3}, overwrite=True)
    assert os.listdir(tmp_path / "run") == [run_folder.SETTINGS]
    assert json.loads((tmp_path / "run" / run_folder.SETTINGS).read_text())["epochs"] == 3


def test_a_model_keras_that_is_no_archive_is_named_as_such(tmp_path, tiny_vit, write_run_folder):
    folder = write_run_folder(tmp_path / "text", tiny_vit(), ["a", "b", "c"])
    (folder / "model.keras").write_text("not a model")
    with pytest.raises(ValueError, match=r"model.keras is not a valid .keras archive"):
        run_folder.load_model(str(folder))
