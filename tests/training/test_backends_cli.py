"""`keras-vit train`, `evaluate`, `predict` and `export` on the torch and jax backends, as a user runs them.

Each command runs as the `keras-vit` console script does (`sys.argv[0]` is `keras-vit`, so the
package imports TensorFlow quietly before anything else): that order is what made torch die with
SIGSEGV before printing anything (triton loaded after TensorFlow), which `python -m keras_vit.cli`
does not reproduce. A run trained on torch is evaluated, fine-tuned and exported on JAX: the run
folder is the same on every backend.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

# The console script: `from keras_vit.cli import main` with argv[0] the command's name.
CONSOLE_SCRIPT = "import sys; sys.argv[0] = 'keras-vit'; from keras_vit.cli import main; sys.exit(main())"
TINY = ["--epochs", "2", "--image-size", "16", "--batch-size", "32", "--verbose", "2"]


def keras_vit(backend, *args, timeout=900):
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_a_run_trained_on_torch_evaluates_fine_tunes_and_exports_on_jax(tmp_path):
    run = tmp_path / "torch_run"
    keras_vit("torch", "train", "--output", run, "--no-export", *TINY)
    results = json.loads((run / "results.json").read_text())
    assert results["test_top1"] > 0.2, results  # 10 classes: above chance after two epochs

    out = keras_vit("jax", "evaluate", run)
    metrics = json.loads(out[out.index("{") :])
    assert metrics["accuracy"] == pytest.approx(results["test_top1"], abs=1e-3), (metrics, results)

    image = tmp_path / "digit.png"
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(image)
    predicted = json.loads(keras_vit("jax", "predict", image, "--model", run, "--json", "--top-k", "3"))
    assert len(predicted["top_k"]) == 3, predicted

    tuned = tmp_path / "jax_run"
    keras_vit("jax", "train", "--weights", run / "model.keras", "--output", tuned, *TINY)
    report = json.loads((tuned / "export" / "parity_report.json").read_text())
    assert any("saved" in row["artifact"].lower() for row in report["artifacts"]), report
    assert json.loads((tuned / "results.json").read_text())["export"], "the export's accuracies"


def test_the_train_step_is_jax_jit_compiled_on_jax():
    """Without `jit_compile`, Keras runs a JAX train step op by op: the main job took 4-8 s a step."""
    script = (
        "import keras_vit, keras\n"
        "from keras_vit.training import train\n"
        "from keras_vit.training.settings import TrainConfig\n"
        "model = keras_vit.build_vit('tiny/4', image_size=16, num_classes=3)\n"
        "train._compile(model, TrainConfig(recipe='adamw', learning_rate=1e-3), total_steps=2, warmup_steps=0)\n"
        "print(keras.backend.backend(), model.jit_compile)\n"
    )
    for backend, compiled in (("jax", True), ("tensorflow", False)):
        env = {**os.environ, "KERAS_BACKEND": backend}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert result.stdout.split()[-2:] == [backend, str(compiled)], result.stderr[-2000:]
