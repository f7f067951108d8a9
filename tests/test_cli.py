"""The command line itself: answered before Keras is imported, one-line mistakes, `--debug` anywhere.

The sub-commands' own bad input is tested with their modules (`training/test_train.py`,
`deploy/test_predict.py`, `deploy/test_export.py`); the file system saying no is in
`test_file_system_errors.py`.
"""

import ast
import errno
import pathlib
import subprocess
import sys

import pytest

from keras_vit import cli, files
from keras_vit.training import settings


def _as_the_command(code, timeout=120):
    """Runs `code` in a fresh Python whose `sys.argv[0]` is the `keras-vit` console script's."""
    script = f"import sys\nsys.argv = ['/usr/bin/keras-vit']\n{code}"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["export", "--help"], ["train", "--epochs", "x"]])
def test_help_and_argument_errors_are_answered_before_keras_is_imported(args):
    result = _as_the_command(
        "import keras_vit.cli\n"
        "try:\n"
        f"    keras_vit.cli.main({args!r})\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "heavy = sorted(m for m in ('keras', 'tensorflow', 'matplotlib', 'numpy') if m in sys.modules)\n"
        "print('imported:', heavy, 'exit:', code)\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected_code = 2 if "x" in args else 0
    # numpy: cheap, and `cli` uses it for .npy files; Keras and TensorFlow take seconds.
    assert result.stdout.strip().splitlines()[-1] in (
        f"imported: [] exit: {expected_code}",
        f"imported: ['numpy'] exit: {expected_code}",
    )


def test_every_public_name_still_imports_in_the_command(tmp_path):
    """The command defers the package's imports; every public name is still there when asked for."""
    result = _as_the_command(
        "import keras_vit\n"
        "assert 'keras' not in sys.modules\n"
        "missing = [name for name in keras_vit.__all__ if getattr(keras_vit, name, None) is None]\n"
        "assert not missing, missing\n"
        "assert keras_vit.visualize.rollout_map and keras_vit.preprocessing.SCALINGS\n"
        "print('ok')\n",
        timeout=300,
    )
    assert result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_no_module_imports_matplotlib_at_its_top():
    """Plots are drawn in a few functions; importing keras_vit (or starting the command) needs no
    matplotlib. (Keras 3.15 imports it itself, in `keras.src.visualization`, on every backend.)"""
    package = pathlib.Path(cli.__file__).parent
    for path in package.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # top-level statements only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] == "matplotlib"], f"{path} imports matplotlib at its top"


def test_an_argument_error_is_one_line_naming_the_help(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["train", "--epochs", "x"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err == "keras-vit train: error: argument --epochs: invalid int value: 'x' (see keras-vit train --help)\n"
    with pytest.raises(SystemExit):
        cli.main(["trian"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'trian'" in err and "(see keras-vit --help)" in err


@pytest.mark.parametrize(
    "args, debug",
    [
        (["train"], False),
        (["--debug", "train"], True),
        (["train", "--debug"], True),
        (["predict", "a.png", "--model", "m", "--debug"], True),
    ],
)
def test_debug_is_taken_before_and_after_the_command(args, debug):
    assert cli.build_parser().parse_args(args).debug is debug


@pytest.mark.parametrize(
    "value, number", [("-1e30", -1e30), ("-2.5E-3", -2.5e-3), ("-7", -7.0), ("-inf", float("-inf"))]
)
def test_negative_numbers_are_values_without_an_equals_sign(value, number):
    args = cli.build_parser().parse_args(["train", "--halting-gate-center", value])
    assert args.halting_gate_center == number


def test_the_flags_choices_are_the_ones_the_code_takes():
    """`settings` declares the choices without importing the modules that implement them."""
    from keras_vit.preprocessing import SCALINGS

    assert set(settings.SCALINGS) == set(SCALINGS)
    from keras_vit.training import data, distribute, optimizers, train

    assert data.AUGMENTATIONS is settings.AUGMENTATIONS and distribute.STRATEGIES is settings.STRATEGIES
    assert optimizers.RECIPES is settings.RECIPES and train.TrainConfig is settings.TrainConfig


@pytest.mark.parametrize(
    "error, writes, line",
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/runs"), None, "/data/runs: permission denied"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), None, "/mnt/ro/x: the file system is read-only"),
        (OSError(errno.ENOSPC, "No space left on device"), "runs/cats", "runs/cats: no space left on the device"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), None, "disk quota exceeded"),
    ],
)
def test_file_system_refusals_become_one_line_naming_the_path(error, writes, line):
    text = files.os_error_line(error, writes, after_space="`keras-vit train --output runs/cats --resume` continues")
    assert text.startswith(line) and "\n" not in text
    assert ("--resume" in text) == (error.errno in (errno.ENOSPC, errno.EDQUOT))


def test_tensorflows_full_disk_error_is_one_line_and_other_errors_are_not_ours():
    tf = pytest.importorskip("tensorflow")
    full = tf.errors.ResourceExhaustedError(None, None, "runs/x/export/...; No space left on device")
    assert files.os_error_line(full, "runs/x/export").startswith("runs/x/export: no space left on the device")
    out_of_memory = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[64,197,768]")
    assert files.os_error_line(out_of_memory, "runs/x") is None  # a bug or a model too large: its traceback
    assert files.os_error_line(OSError(errno.EIO, "Input/output error"), "runs/x") is None
    assert files.os_error_line(KeyError("x")) is None
