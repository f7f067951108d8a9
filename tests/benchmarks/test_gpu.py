"""benchmarks/gpu.py: `--quick` end to end under each Keras backend, its FLOP count and its argument errors.

The runs are subprocesses (one backend per process, as the script is used); on a CPU their
timings mean nothing, so only the JSON's shape and arithmetic are checked.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"


def _load_script():
    """benchmarks/gpu.py as a module (its top level imports the standard library only)."""
    spec = importlib.util.spec_from_file_location("_gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu = _load_script()


# `python benchmarks/gpu.py ARGS` on a machine without TensorFlow: `import tensorflow` fails and
# `importlib.util.find_spec("tensorflow")` is None, as when it is not installed.
WITHOUT_TENSORFLOW = (
    "import runpy, sys; sys.modules['tensorflow'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _run(args, backend="tensorflow", timeout=300, without_tensorflow=False):
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    python = [sys.executable, "-c", WITHOUT_TENSORFLOW] if without_tensorflow else [sys.executable]
    return subprocess.run(
        [*python, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _quick(tmp_path, backend, *extra, without_tensorflow=False):
    output = tmp_path / "gpu.json"
    args = ["--quick", "--precision", "float32", "--output", str(output), *extra]
    proc = _run(args, backend, without_tensorflow=without_tensorflow)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu.json"]  # the temporary file was renamed
    result = json.loads(output.read_text())
    lines = [line for line in proc.stdout.splitlines() if "images/s" in line]
    assert len(lines) == 1, proc.stdout

    assert result["backend"] == backend
    assert result["variant"] == "tiny/4" and result["image_size"] == 32 and result["num_classes"] == 10
    assert result["precision"] == "float32" and result["quick"] is True
    assert result["keras_version"] and result["device"]
    assert result["batch"] == gpu.QUICK["batch"]
    assert len(result["step_seconds"]) == gpu.QUICK["steps"] - gpu.QUICK["warmup"]
    assert all(t > 0 for t in result["step_seconds"])
    assert 0 < result["median_step_seconds"] < 60
    assert math.isfinite(result["images_per_second"]) and result["images_per_second"] > 0
    assert result["images_per_second"] == pytest.approx(result["batch"] / result["median_step_seconds"])
    flops = gpu.forward_flops_per_image(types.SimpleNamespace(hidden_dim=64, num_layers=2, mlp_dim=128), 4, 32, 10)
    assert result["forward_flops_per_image"] == flops
    return result, lines[0]


def test_quick_tensorflow(tmp_path):
    result, line = _quick(tmp_path, "tensorflow", "--peak-tflops", "2.5")
    assert isinstance(result["mfu"], float) and 0 < result["mfu"] < 1
    assert result["peak_tflops"] == 2.5
    expected = 3 * result["forward_flops_per_image"] * result["images_per_second"] / 2.5e12
    assert result["mfu"] == pytest.approx(expected)
    assert "MFU n/a" not in line and "tensorflow" in line


def test_quick_torch(tmp_path):
    result, line = _quick(tmp_path, "torch")
    assert result["mfu"] is None and result["peak_tflops"] is None
    assert "MFU n/a" in line
    assert result["tensorflow_imported"] is False  # keras_vit's core and the script import no TensorFlow


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_quick_jax_runs_without_tensorflow(tmp_path):
    result, line = _quick(tmp_path, "jax", "--peak-tflops", "1", without_tensorflow=True)
    assert isinstance(result["mfu"], float) and result["mfu"] > 0
    assert "jax" in line and result["tensorflow_imported"] is False


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch", "0"], "--batch: expected a positive integer"),
        (["--batch", "-4"], "--batch: expected a positive integer"),
        (["--steps", "0"], "--steps: expected a positive integer"),
        (["--precision", "float64"], "--precision: invalid choice"),
        (["--warmup", "5", "--steps", "5"], "--warmup (5) must be less than --steps (5)"),
        (["--quick", "--warmup", str(gpu.QUICK["steps"])], "must be less than --steps"),
        (["--peak-tflops", "0"], "--peak-tflops: expected a positive number"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message):
    proc = _run(args, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("benchmarks/gpu.py: error:") and message in last, proc.stderr


@pytest.mark.parametrize("variant, gmacs", [("B/16", 17.58), ("S/16", 4.61), ("Ti/16", 1.26)])
def test_forward_flops_match_the_published_multiply_adds(variant, gmacs):
    # timm's model cards at 224: ViT-B/16 17.6, S/16 4.6, Ti/16 1.3 GMACs (as tests/benchmarks/test_peers.py).
    rows = {
        "B/16": (768, 12, 12, 3072),
        "S/16": (384, 12, 6, 1536),
        "Ti/16": (192, 12, 3, 768),
    }
    dim, layers, heads, mlp = rows[variant]
    arch = types.SimpleNamespace(hidden_dim=dim, num_layers=layers, num_heads=heads, mlp_dim=mlp)
    assert gpu.forward_flops_per_image(arch, 16, 224, 1000) / 2e9 == pytest.approx(gmacs, rel=0.01)


def test_mfu_arithmetic():
    assert gpu.mfu(35e9, 1000.0, None) is None
    # B/16-like: 35 GFLOP forward, 1000 images/s -> 105 TFLOP/s of training, of a 989 peak.
    assert gpu.mfu(35e9, 1000.0, 989) == pytest.approx(105 / 989)


def test_json_is_written_whole(tmp_path):
    path = tmp_path / "sub" / "out.json"
    gpu.write_json(str(path), {"a": 1})
    gpu.write_json(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]
