"""The notebooks: each one runs top to bottom in a fresh kernel, offline, and is committed with outputs.

Every notebook is executed from a temporary copy with nbclient (kernel `python3`, which jupyter_client
starts with this interpreter),
TFDS and Keras pointed at empty temporary folders and HTTP(S) sent to a closed port: a notebook
that needs a download fails here. The built-in digits are built locally from scikit-learn's copy.
On the project's 2-core machine the seven take about six minutes together: the five that train or
export for half a minute or more are marked `slow` (`.ci/run` runs them after the default suite), so
`pytest` alone runs the other two.
"""

import os
import pathlib
import shutil

import nbclient
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
TIMEOUT_PER_CELL = 300  # seconds; the slowest cell takes about 20 here
SLOW = {  # seconds each took top to bottom here (2026-12-03, quiet machine)
    "02_training.ipynb": 39,
    "03_fine_tuning.ipynb": 56,
    "04_export.ipynb": 70,
    "05_attention.ipynb": 58,
    "07_adaptive_tokens.ipynb": 90,
}


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory):
    """The kernel's environment: this checkout first on the path, empty data folders, no network."""
    home = tmp_path_factory.mktemp("notebook_home")
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, a request fails at once
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "TFDS_DATA_DIR": str(home / "tensorflow_datasets"),
        "KERAS_HOME": str(home / "keras"),
        "HTTP_PROXY": closed,
        "HTTPS_PROXY": closed,
        "http_proxy": closed,
        "https_proxy": closed,
        "NO_PROXY": "127.0.0.1,localhost",
    }


def test_there_are_seven_notebooks():
    assert NOTEBOOKS == [
        "01_pixels_to_tokens.ipynb",
        "02_training.ipynb",
        "03_fine_tuning.ipynb",
        "04_export.ipynb",
        "05_attention.ipynb",
        "06_families.ipynb",
        "07_adaptive_tokens.ipynb",
    ]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_with_outputs_and_a_settings_cell(name):
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    nbformat.validate(notebook)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in cells), f"{name} has cells that were never run"
    assert not [o for cell in cells for o in cell.outputs if o.output_type == "error"], f"{name} has errors"
    assert any("# --- Settings" in cell.source for cell in cells), f"{name} has no marked settings cell"
    assert any("import keras_vit" in cell.source for cell in cells)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(name, tmp_path, offline_env):
    copy = tmp_path / name
    shutil.copy(REPO / "notebooks" / name, copy)
    notebook = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_PER_CELL,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute(env=offline_env)
    finally:
        nbformat.write(notebook, copy)  # the executed copy, for a look after a failure
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']} (executed copy: {copy})"
