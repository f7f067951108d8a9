"""`keras-vit train --data-parallel / --model-parallel` and several JAX processes (`keras_vit.training.parallel`)."""

import os
import socket
import subprocess
import sys

import keras
import pytest

from keras_vit import cli

CONSOLE_SCRIPT = "import sys; sys.argv[0] = 'keras-vit'; from keras_vit.cli import main; sys.exit(main())"


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--model-parallel", "2"], "--model-parallel use keras.distribution, which Keras runs on JAX only"),
        (["--data-parallel"], "--data-parallel use keras.distribution"),
        (["--model-parallel", "0"], "--model-parallel 0 must be >= 1"),
    ],
)
def test_a_flag_the_backend_cannot_honour_is_one_line(flags, expected, tmp_path, capsys):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TensorFlow backend's answer")
    assert cli.main(["train", "--output", str(tmp_path / "run"), *flags]) == 2
    error = capsys.readouterr().err
    assert expected in error and error.count("\n") == 1, error
    assert not (tmp_path / "run").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_local_jax_processes_train_together(tmp_path):
    """Two processes on one machine, one CPU device each, joined by the coordinator on localhost."""
    port, run = _free_port(), tmp_path / "run"
    flags = ["train", "--output", str(run), "--epochs", "1", "--image-size", "16", "--batch-size", "32"]
    flags += ["--no-export", "--verbose", "2", "--coordinator-address", f"localhost:{port}", "--num-processes", "2"]
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CONSOLE_SCRIPT, *flags, "--process-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [worker.communicate(timeout=1200) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for i, (worker, (out, err)) in enumerate(zip(workers, outputs)):
        assert worker.returncode == 0, f"process {i}: {out[-2000:]}\n{err[-3000:]}"
        assert f"process {i} of 2" in out and "data parallel over 2 devices" in out, out
    assert (run / "model.keras").exists() and (run / "results.json").exists()  # process 0's
