"""keras_vit.files: whole files and folders or nothing, with the user's permissions."""

import json
import os
import subprocess

import pytest

from keras_vit import files

pytestmark = pytest.mark.fast  # the edit loop's tier: `pytest -m fast`


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_atomic_write_gives_umask_permissions_and_leaves_nothing_on_failure(tmp_path, umask_022):
    files.write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # tempfile alone would give 0600
    with pytest.raises(RuntimeError):
        with files.atomic_write(tmp_path / "a.json") as f:
            f.write("half")
            raise RuntimeError("killed")
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}  # the old file stands
    assert os.listdir(tmp_path) == ["a.json"]


def test_atomic_directory_replaces_the_target_and_sweeps_abandoned_staging(tmp_path, umask_022):
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = tmp_path / f".out.partial-{dead.pid}-abcd"  # what a SIGKILLed export left
    ours = tmp_path / f".out.partial-{os.getpid()}-efgh"  # a live process's: never touched
    abandoned.mkdir()
    ours.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    with files.atomic_directory(tmp_path / "out") as staging:
        (tmp_path / "out" / "old").read_text()  # the target stays readable until the rename
        open(os.path.join(staging, "new"), "w").close()
    assert os.listdir(tmp_path / "out") == ["new"]
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755  # tempfile alone would give 0700
    assert sorted(os.listdir(tmp_path)) == sorted(["out", ours.name])
