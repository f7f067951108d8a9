"""`keras-vit quantize`: a run's model through Keras' own `model.quantize`, written as a new run folder.

    output_dir/
      model.keras          the quantized model, without optimizer (loads in safe mode: `keras_vit/layers/policies.py`)
      keras_vit.json       the run's, plus `"quantization": mode` and where it came from
      parity_report.json, .md   the float32 model and the quantized one, measured in the same process
                           (size: the weights' megabytes, as stored)

A sub-command rather than a flag of `keras-vit export`: what it writes is a Keras model, which
`keras-vit evaluate`, `predict` and `export` then take like any run, and Keras' modes (weights in
int8, int4 or float8, activations quantized on the fly) are a different thing from LiteRT's int8
files, which `export` already writes and checks.

Keras' int8 is for memory (weights 4x smaller) and for hardware with int8 matmuls; whether it is
faster than float32 on a CPU depends on the CPU and the batch (each Dense quantizes its inputs on
the fly): `benchmarks/quantize.py` measures it, and the report's latency column shows the two side
by side. On-device speed comes from LiteRT's int8 files (`keras-vit export`).
"""

import os
import time
import warnings

import keras
import numpy as np

from keras_vit import files, run_folder
from keras_vit.deploy import litert, parity
from keras_vit.deploy.export import _test_set, keras_quantization
from keras_vit.preprocessing import preprocessing_model

MODES = ("int8", "int4", "float8")


def quantize_run(model_dir, output_dir, mode="int8", *, test_images=None, test_labels=None, overwrite=False):
    """Quantizes a run's model with `model.quantize(mode)` into a new run folder, with a parity report.

    Args:
        model_dir: a run folder (or its `model.keras`), float32.
        output_dir: the run folder to create.
        mode: Keras' quantization mode, one of `MODES`. Defaults to `"int8"`.
        test_images: uint8 `(N, H, W, 3)` raw pixels for the report. Defaults
            to a few random images (no accuracy).
        test_labels: int `(N,)` class indices of `test_images`.
        overwrite: replace an existing `output_dir` that is a quantized run.

    Returns:
        The report as a dict (also `parity_report.json` and `.md`, printed).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of Keras' quantization modes {MODES}.")
    output_dir = _check_target(output_dir, overwrite)
    model, metadata, model_path = run_folder.load_model(model_dir)
    if keras_quantization(model):
        raise ValueError(
            f"{model_path} is already quantized ({keras_quantization(model)}); quantize its float32 run instead."
        )
    images, labels, source = _test_set(test_images, test_labels, metadata)
    inputs = np.asarray(preprocessing_model(metadata["image_size"], metadata["scaling"])(images))
    print(f"Quantizing {model_path} ({mode}) into {output_dir} ({len(inputs)} {source} images for the report):")
    # A second copy (both are timed in the same rounds), without the optimizer: inference only.
    quantized = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    with warnings.catch_warnings():  # "Layer LayerNorm does not have a `quantize` method": by design, not news
        warnings.filterwarnings("ignore", message=".*does not have a `quantize` method")
        quantized.quantize(mode)
    started = time.perf_counter()
    reference = model.predict(inputs, verbose=0)
    logits = quantized.predict(inputs, verbose=0)
    latencies = _interleaved_latency_ms((model, quantized), inputs[:1])
    print(f"  measured both models in {time.perf_counter() - started:.1f} s", flush=True)
    with files.atomic_directory(output_dir) as staging:
        run_folder.write_metadata(staging, **{**metadata, "quantization": mode, "quantized_from": model_path})
        run_folder.save_model(quantized, staging)
        path = os.path.join(staging, run_folder.MODEL)
        rows = [
            parity.artifact_row("Keras float32", model_path, reference, reference, labels, latencies[0]),
            parity.artifact_row(f"Keras {mode}", path, logits, reference, labels, latencies[1], root=staging),
        ]
        for row, weights in zip(rows, (model, quantized)):  # the files differ by the run's optimizer state too
            row["size_mb"] = _weights_mb(weights)
        ratio = latencies[1] / latencies[0]
        rows[1]["reason"] = (
            f"{ratio:.2f}x the float32 latency in the same rounds on this machine "
            f"({'slower' if ratio > 1 else 'faster'}); for on-device speed use LiteRT's int8 files (keras-vit export)"
        )
        report = {
            "model": model_path,
            "test_images": source,
            "num_test_images": len(inputs),
            "quantization": mode,
            "latency_threads": os.cpu_count(),
            "artifacts": rows,
        }
        parity.write_report(report, staging)
    print(parity.markdown(report), end="")
    return report


def _weights_mb(model):
    """Megabytes of a model's weights as stored (int8 kernels one byte each, their scales float32)."""
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights) / 1e6


def _interleaved_latency_ms(models, image, rounds=3):
    """Each model's median batch-1 latency over `rounds` alternating rounds, so that load elsewhere hits both."""
    times = [[] for _ in models]
    for _ in range(rounds):
        for i, model in enumerate(models):
            times[i].append(litert.latency_ms(model.predict_on_batch, image, repeats=10))
    return [float(np.median(t)) for t in times]


def _check_target(output_dir, overwrite):
    """Refuses an existing target unless asked; even then only ever replaces an earlier quantized run."""
    output_dir = os.path.abspath(output_dir)
    if not os.path.exists(output_dir):
        return output_dir
    if not overwrite:
        raise FileExistsError(f"{output_dir} already exists; pass --overwrite (overwrite=True) to replace it.")
    try:
        quantized = "quantization" in run_folder.read_metadata(output_dir)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        quantized = False
    if not quantized:
        raise FileExistsError(f"{output_dir} is not an earlier quantized run; refusing to replace it.")
    return output_dir
