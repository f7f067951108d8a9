"""What the checkpoint tests share: the tiny architecture of the PyTorch reference models, and their files.

The PyTorch side runs in a subprocess (`torch_reference.py`, beside this file): torchvision
segfaults when imported after TensorFlow. Those tests need the `parity` extra
(`pip install -e .[parity]`) and are skipped without it. Nothing downloads: the registry path
is exercised with a `file://` URL.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

TORCH_REFERENCE = pathlib.Path(__file__).with_name("torch_reference.py")
PARITY = all(importlib.util.find_spec(name) for name in ("torch", "timm", "transformers", "safetensors"))

# Run as a script, never imported here: it imports PyTorch (and timm, torchvision), which must
# not load into a process that has TensorFlow (doctest collection would import it).
collect_ignore = ["torch_reference.py"]


@pytest.fixture(scope="session")
def tiny(tiny_vit):
    """`tiny(**options)`: the architecture of every model in torch_reference.py.

    `tiny/8` at 32x32 with 5 classes (2 blocks, width 64, 2 heads); `options` override any of it.
    """

    def tiny(**options):
        return tiny_vit("tiny/8", **{"image_size": 32, "num_classes": 5, **options})

    return tiny


@pytest.fixture(scope="session")
def snapshot():
    """`snapshot(model)`: a copy of every weight's value, for `assert_unchanged`."""
    return lambda model: [np.array(v.numpy()) for v in model.weights]


@pytest.fixture(scope="session")
def assert_unchanged():
    """`assert_unchanged(model, before)`: every weight still equals its `snapshot`: a refused load changed nothing."""

    def assert_unchanged(model, before):
        for variable, old in zip(model.weights, before):
            np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)

    return assert_unchanged


@pytest.fixture(scope="session")
def run_torch():
    """`run_torch(command, folder, *args)`: `python torch_reference.py ...` in a subprocess.

    Skips the test without the parity extra (torch, timm, transformers, safetensors).
    """
    if not PARITY:
        pytest.skip("needs the parity extra: pip install -e .[parity]")

    def run(*args):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        result = subprocess.run(
            [sys.executable, str(TORCH_REFERENCE), *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]

    return run


@pytest.fixture(scope="session")
def reference(run_torch, tmp_path_factory):
    """The folder `torch_reference.py make` filled: random tiny timm and Hugging Face ViTs.

    Their weights (`*.safetensors`), their outputs on `images.npy` (`*.logits.npy`), timm's
    position-embedding resampling (`resample.npz`) and the cases it ran (`cases.json`); and in
    `families/`, the ViT families as hub folders with their outputs (`families.json`).
    Made once per session: every test reads it and writes only files of its own.
    """
    out = tmp_path_factory.mktemp("torch_reference")
    run_torch("make", out)
    return out


@pytest.fixture(scope="session")
def reference_cases(reference):
    """The cases `torch_reference.py` ran, from its `cases.json`.

    `{"grids": {file stem: image size}, "resample": [(source grid, target grid, interpolation,
    antialias, prefix tokens), ...]}`, sizes and grids as tuples.
    """
    cases = json.loads((reference / "cases.json").read_text())
    return {
        "grids": {stem: tuple(size) for stem, size in cases["grids"].items()},
        "resample": [(tuple(old), tuple(new), *rest) for old, new, *rest in cases["resample"]],
    }
