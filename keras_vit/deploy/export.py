"""`export_model` and `keras-vit export`: a trained model folder -> SavedModel, LiteRT files, a report.

Output layout (`output_dir`):

    saved_model/<name>/<version>/   TF Serving's layout, three signatures (`keras_vit.deploy.saved_model`)
    saved_model_bfloat16/...        the same computing in bfloat16, with `bfloat16=True` (`--bfloat16`)
    tflite/vit_<quantization>.tflite float32, float16, dynamic-range int8, int8 (`keras_vit.deploy.litert`)
    onnx/vit.onnx                   for ONNX Runtime, when its packages are installed (`keras_vit.deploy.onnx`)
    labels.txt                      one label per line, class index = line number
    parity_report.json, .md         `keras_vit.deploy.parity`, with the SHA-256 of every artifact
    SHA256SUMS                      the integrity record: every file's SHA-256 (`keras_vit.deploy.integrity`)

Everything is written into a temporary folder beside `output_dir` and renamed
into place at the end, so an interrupted export leaves no half-written target.
One line per artifact is printed as it is written, with the seconds spent
writing and measuring it.
"""

import functools
import json
import numbers
import os
import re
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

from keras_vit import files
from keras_vit.deploy import integrity, litert, onnx, parity, precision, saved_model
from keras_vit.preprocessing import preprocessing_model
from keras_vit.run_folder import check_model_matches_metadata, load_model, takes_patches  # noqa: F401  (0.1.0's names here)

# Without test images the report still measures parity and latency, on these many random ones.
NUM_RANDOM_TEST_IMAGES = 8
# TF Serving reads <base>/<name>/<version>/: the name is one folder, the version a positive integer.
SERVING_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def export_model(
    model_dir,
    output_dir,
    *,
    test_images=None,
    test_labels=None,
    calibration_images=None,
    int8_tolerance=0.01,
    overwrite=False,
    name="vit",
    version=1,
    top_k=5,
    with_onnx=None,
    quantizations=litert.QUANTIZATIONS,
    bfloat16=False,
):
    """Exports a trained model folder to SavedModel and LiteRT, and reports their parity.

    Args:
        model_dir: a folder with `model.keras` and `keras_vit.json` (or the
            `.keras` file itself, with `keras_vit.json` beside it).
        output_dir: the folder to create (see the module docstring).
        test_images: uint8 `(N, H, W, 3)` raw pixels of any single size, for
            the parity report. Defaults to a few random images (no accuracy).
        test_labels: int `(N,)` class indices of `test_images`, for accuracy.
        calibration_images: uint8 `(N, H, W, 3)` raw training images (a few
            hundred) to calibrate full int8; without them full int8 is skipped.
        int8_tolerance: largest accuracy drop of full int8 against float32
            (a fraction; top-1 agreement with Keras when there are no labels)
            for the int8 file to be kept. Defaults to `0.01`.
        overwrite: replace an existing `output_dir`. Defaults to `False`.
        name: the model name in TF Serving's layout. Defaults to `"vit"`.
        version: the integer version folder. Defaults to `1`.
        top_k: size of the `top_k_*` SavedModel outputs. Defaults to `5`.
        with_onnx: `True` to require `onnx/vit.onnx` (a missing package or a
            failed conversion stops the export), `False` to skip it, `None`
            to write it when tf2onnx, onnx and onnxruntime are installed (a
            failed conversion is then a report row saying why). Defaults to
            `None`.
        quantizations: the LiteRT files to write, from `litert.QUANTIZATIONS`
            (`"float32"` first). Defaults to all of them.
        bfloat16: also write `saved_model_bfloat16/<name>/<version>/`, the
            model computing in bfloat16 (`keras_vit.deploy.precision`), for
            CPUs with AVX-512 BF16 or AMX. Defaults to `False`.

    Returns:
        The report as a dict (also written as `parity_report.json`, and as
        Markdown to `parity_report.md` and stdout).
    """
    _check_serving_path(name, version)
    if keras.backend.backend() != "tensorflow":
        return _export_on_tensorflow(
            model_dir,
            output_dir,
            test_images=test_images,
            test_labels=test_labels,
            calibration_images=calibration_images,
            int8_tolerance=int8_tolerance,
            overwrite=overwrite,
            name=name,
            version=version,
            top_k=top_k,
            with_onnx=with_onnx,
            quantizations=quantizations,
        )
    quantizations = tuple(quantizations)
    if quantizations[:1] != ("float32",) or quantizations != tuple(
        q for q in litert.QUANTIZATIONS if q in quantizations
    ):
        raise ValueError(
            f"quantizations={quantizations!r} must be some of {litert.QUANTIZATIONS}, in that order, "
            "starting with 'float32' (the reference of the others)."
        )
    if with_onnx and onnx.missing_packages():
        raise onnx.ONNXExportError(
            f"ONNX export was asked for (--onnx) but needs {', '.join(onnx.missing_packages())}: {onnx.INSTALL}."
        )
    output_dir = _check_target(output_dir, overwrite)
    model, metadata, model_path = load_model(model_dir)
    test_images, test_labels, source = _test_set(test_images, test_labels, metadata)
    if takes_patches(model):  # SigLIP 2's NaFlex: three inputs, its own files (`deploy.naflex`)
        return _export_naflex(model, metadata, model_path, output_dir, test_images, test_labels, source, name, version,
                              with_onnx)  # fmt: skip
    if calibration_images is not None:
        calibration_images = _check_images(calibration_images, "calibration_images")
    preprocess = preprocessing_model(metadata["image_size"], metadata["scaling"])
    print(f"Exporting {model_path} to {output_dir} ({len(test_images)} {source} images for the report):", flush=True)
    keras_row, reference = _keras_row(model, model_path, preprocess(test_images), test_labels)
    with files.atomic_directory(output_dir) as staging:
        with open(os.path.join(staging, "labels.txt"), "w") as f:
            f.write("".join(f"{label}\n" for label in metadata["labels"]))
        measure = functools.partial(_measured, root=staging, reference=reference, labels=test_labels)
        path = os.path.join(staging, "saved_model", name, str(int(version)))
        saved_model_rows = [_saved_model_row(model, metadata, path, test_images, measure, top_k)]
        if bfloat16:
            path = os.path.join(staging, "saved_model_bfloat16", name, str(int(version)))
            copy = precision.bfloat16_copy(model)
            saved_model_rows.append(_saved_model_row(copy, metadata, path, test_images, measure, top_k, "bfloat16 "))
            saved_model_rows[1]["reason"] = _bfloat16_note(*saved_model_rows)
        # The device resizes; the .tflite and .onnx files normalise.
        size = metadata["image_size"]
        pixels = litert.resized_pixels(test_images, size)
        calibration = None if calibration_images is None else litert.resized_pixels(calibration_images, size)
        if keras_quantization(model):
            tflite_rows = [_not_converted(model, q) for q in quantizations]
        else:
            tflite_rows = _tflite_rows(model, metadata, staging, pixels, calibration, measure, quantizations)
        if quantizations[-1] == "int8":
            judge_int8(tflite_rows, int8_tolerance, staging)
        onnx_row = _onnx_row(model, metadata, staging, pixels, measure, with_onnx)
        report = {
            "model": model_path,
            "test_images": source,
            "num_test_images": len(test_images),
            "int8_tolerance": int8_tolerance,
            "latency_threads": os.cpu_count(),
            "artifacts": [keras_row, *saved_model_rows, *tflite_rows, onnx_row],
        }
        report["sha256"] = _record_digests(report["artifacts"], staging)
        parity.write_report(report, staging)
        integrity.write_record(staging, known=report["sha256"])  # the reports' own digests added
    print(parity.markdown(report), end="")
    return report


def _export_naflex(model, metadata, model_path, output_dir, images, labels, source, name, version, with_onnx):
    """A NaFlex run's SavedModel (any number of patches) and its LiteRT and ONNX files at the patch budget."""
    from keras_vit.deploy import naflex
    from keras_vit.deploy.predict import input_preprocessor

    inputs = input_preprocessor(model, metadata)(images)  # each image at its own aspect ratio, padded
    print(f"Exporting the NaFlex model {model_path} to {output_dir} (N={inputs['patch_mask'].shape[1]}):", flush=True)
    reference = model.predict(inputs, verbose=0)
    keras_row = parity.artifact_row("Keras", model_path, reference, reference, labels)
    with files.atomic_directory(output_dir) as staging:
        with open(os.path.join(staging, "labels.txt"), "w") as f:
            f.write("".join(f"{label}\n" for label in metadata["labels"]))
        rows = naflex.export_rows(model, metadata, staging, name, version, inputs, reference, labels, with_onnx)
        report = {
            "model": model_path,
            "test_images": source,
            "num_test_images": len(images),
            "latency_threads": os.cpu_count(),
            "artifacts": [keras_row, *rows],
        }
        report["sha256"] = _record_digests(report["artifacts"], staging)
        parity.write_report(report, staging)
        integrity.write_record(staging, known=report["sha256"])
    print(parity.markdown(report), end="")
    return report


def _bfloat16_note(float32_row, bfloat16_row):
    """The bfloat16 SavedModel's latency against float32's (one after the other), with the CPU's instructions."""
    cpu, flags = precision.cpu_flags()
    speed = float32_row["latency_ms"] / bfloat16_row["latency_ms"]
    return (
        f"{speed:.2f}x the float32 SavedModel's speed at batch 1 on {cpu} "
        f"({' '.join(flags) or 'no bfloat16 instructions: expect it slower'}); benchmarks/quantization.py compares "
        "batches in alternating rounds"
    )


def _record_digests(rows, root):
    """Every written file's SHA-256 (`{path: hex}`), each file artifact's also in its row."""
    found = integrity.digests(root)
    for row in rows[1:]:  # the Keras model is the reference, not an artifact of the export
        if row.get("path") in found:
            row["sha256"] = found[row["path"]]
    return found


def _measured(name, path, predict, inputs, *, root, reference, labels, started):
    """The parity row of one artifact written since `started` (a `time.perf_counter()`), printed as a line.

    `predict` maps a batch of `inputs` to logits.
    """
    written = time.perf_counter()
    latency = litert.latency_ms(predict, inputs[:1])
    row = parity.artifact_row(name, path, predict(inputs), reference, labels, latency, root=root)
    row["seconds"] = {"write": round(written - started, 2), "measure": round(time.perf_counter() - written, 2)}
    print(
        f"  wrote {row['path']} ({row['size_mb']:.1f} MB) in {row['seconds']['write']:.1f} s, "
        f"measured in {row['seconds']['measure']:.1f} s",
        flush=True,
    )
    return row


def keras_quantization(model):
    """The modes of Keras' `model.quantize` in `model` (`"int8"`, ...), joined; `""` for a model not quantized."""
    return ", ".join(sorted({layer.quantization_mode for layer in model._flatten_layers() if layer.quantization_mode}))


def _not_converted(model, quantization):
    """LiteRT has no kernels for Keras' quantized layers (int8 inputs to its fully-connected op, float8)."""
    reason = (
        f"a model quantized by Keras ({keras_quantization(model)}) does not convert to LiteRT; run keras-vit export "
        "on its float32 run instead, whose LiteRT int8 file is the int8 for devices"
    )
    return _not_written(f"LiteRT {quantization}", "skipped", reason)


def _not_written(name, status, reason):
    print(f"  {status} {name}: {reason}", flush=True)
    return {"artifact": name, "status": status, "reason": reason}


def _keras_row(model, path, inputs, labels):
    started = time.perf_counter()
    logits = model.predict(inputs, verbose=0)
    latency = litert.latency_ms(model.predict_on_batch, inputs[:1])
    print(f"  measured the Keras model (the reference) in {time.perf_counter() - started:.1f} s", flush=True)
    return parity.artifact_row("Keras", path, logits, logits, labels, latency), logits


def _saved_model_row(model, metadata, path, images, measure, top_k, precision_name=""):
    started = time.perf_counter()
    saved_model.write_saved_model(model, metadata, path, top_k)
    signature = saved_model.load_signature(path, "serving_uint8")
    name = f"SavedModel {precision_name}(serving_uint8)"
    return measure(name, path, lambda batch: signature(batch)["logits"], images, started=started)


def _tflite_rows(model, metadata, root, pixels, calibration, measure, quantizations=litert.QUANTIZATIONS):
    os.makedirs(os.path.join(root, "tflite"))
    started = time.perf_counter()
    with litert.saved_for_conversion(litert.pixels_model(model, metadata)) as converted:
        print(
            f"  traced the model for LiteRT (once for every file) in {time.perf_counter() - started:.1f} s", flush=True
        )
        return [_tflite_row(converted, q, root, pixels, calibration, measure) for q in quantizations]


def _tflite_row(converted, quantization, root, pixels, calibration, measure):
    name = f"LiteRT {quantization}"
    if quantization == "int8" and calibration is None:
        return _not_written(name, "skipped", "no calibration images were given")
    started = time.perf_counter()
    path = os.path.join(root, "tflite", f"vit_{quantization}.tflite")
    litert.convert(converted, path, quantization, calibration)
    return measure(name, path, litert.LiteRTModel(path, num_threads=os.cpu_count()), pixels, started=started)


def _onnx_row(model, metadata, root, pixels, measure, with_onnx):
    """The ONNX file and its row; without the packages, or when not asked for, a row saying so."""
    name = "ONNX (ONNX Runtime)"
    if with_onnx is False:
        return _not_written(name, "skipped", "not asked for (--no-onnx)")
    if onnx.missing_packages():
        return _not_written(name, "skipped", f"{', '.join(onnx.missing_packages())} not installed ({onnx.INSTALL})")
    started = time.perf_counter()
    path = os.path.join(root, "onnx", "vit.onnx")
    os.makedirs(os.path.dirname(path))
    try:
        onnx.convert(model, metadata, path)
    except onnx.ONNXExportError as error:
        os.rmdir(os.path.dirname(path))  # convert writes nothing when it fails
        if with_onnx:
            raise
        return _not_written(name, "failed", f"{error} Pass --no-onnx to leave it out.")
    return measure(name, path, onnx.ONNXModel(path, num_threads=os.cpu_count()), pixels, started=started)


def judge_int8(rows, tolerance, root):
    """Keeps the int8 file (the last row) only within `tolerance` of float32 (the first)."""
    if rows[-1]["status"] == "skipped":
        return
    keep, reason = parity.int8_verdict(rows[-1], rows[0], tolerance)
    rows[-1]["reason"] = reason
    if not keep:
        os.remove(os.path.join(root, rows[-1]["path"]))
        rows[-1]["status"] = "dropped"


def _test_set(images, labels, metadata):
    if images is None:
        if labels is not None:
            raise ValueError("test_labels were given without test_images.")
        shape = (NUM_RANDOM_TEST_IMAGES, *metadata["image_size"], 3)
        return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), None, "random"
    images = _check_images(images, "test_images")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise ValueError(
                f"test_labels must be integers of shape ({len(images)},) like test_images; "
                f"got {labels.dtype} with shape {labels.shape}."
            )
        if labels.min() < 0 or labels.max() >= len(metadata["labels"]):
            raise ValueError(f"test_labels must be class indices in [0, {len(metadata['labels'])}).")
    return images, labels, "test"


def _check_images(images, name):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise ValueError(
            f"{name} must be raw uint8 pixels of shape (N, height, width, 3) with N > 0; "
            f"got {images.dtype} with shape {images.shape}."
        )
    return images


def _check_serving_path(name, version):
    """TF Serving loads only `<base>/<name>/<positive integer>/`; refuse anything else up front."""
    if not isinstance(name, str) or not SERVING_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"name={name!r} must be one folder name of letters, digits, '-', '_' and '.' "
            "(TF Serving's model name), e.g. 'vit'."
        )
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
        raise ValueError(
            f"version={version!r} must be an integer >= 1: TF Serving loads only positive integer version folders."
        )


def _check_target(output_dir, overwrite):
    """Refuses an existing target unless asked; even then only ever replaces an earlier export."""
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir):
        if not os.path.isdir(output_dir):
            raise FileExistsError(f"{output_dir} exists and is not a folder; choose another output.")
        if not overwrite:
            raise FileExistsError(f"{output_dir} already exists; pass --overwrite (overwrite=True) to replace it.")
        exported = all(os.path.exists(os.path.join(output_dir, part)) for part in ("parity_report.json", "saved_model"))
        if os.listdir(output_dir) and not exported:
            raise FileExistsError(
                f"{output_dir} is not an earlier export (no parity_report.json and saved_model/); refusing to "
                "replace it. Choose another output."
            )
    return output_dir


def _export_on_tensorflow(model_dir, output_dir, *, test_images, test_labels, calibration_images, **options):
    """`export_model` on the JAX or torch backend: `keras-vit export` in a TensorFlow-backend process.

    SavedModel, LiteRT and ONNX (through tf2onnx) are written from TensorFlow graphs; Keras' JAX
    route (jax2tf) and torch's have no path for our serving signatures. The `.keras` file is the
    same on every backend, so a child process on the TensorFlow backend exports it; the arrays go
    to it as `.npy` files. Its output streams through; a failure is its one-line error.
    """
    if options.pop("top_k") != 5 or tuple(options.pop("quantizations")) != litert.QUANTIZATIONS:
        raise ValueError(
            f"On the {keras.backend.backend()} backend, export_model runs `keras-vit export` on TensorFlow, which "
            "takes the default top_k and quantizations; pass others with KERAS_BACKEND=tensorflow."
        )
    command = [sys.executable, "-m", "keras_vit.cli", "export", str(model_dir), "--output", str(output_dir)]
    command += ["--int8-tolerance", str(options["int8_tolerance"]), "--name", options["name"]]
    command += ["--version", str(options["version"])] + (["--overwrite"] if options["overwrite"] else [])
    if options["with_onnx"] is not None:
        command.append("--onnx" if options["with_onnx"] else "--no-onnx")
    with tempfile.TemporaryDirectory(prefix="keras_vit_export_") as arrays:
        for flag, array in (
            ("--test-images", test_images),
            ("--test-labels", test_labels),
            ("--calibration-images", calibration_images),
        ):
            if array is not None:
                path = os.path.join(arrays, flag.strip("-") + ".npy")
                np.save(path, np.asarray(array))
                command += [flag, path]
        print(f"Exporting on the TensorFlow backend, in a child process: {' '.join(command[1:4])} ...", flush=True)
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        result = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        error = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        raise ValueError(f"the export on the TensorFlow backend failed: {error.removeprefix('keras-vit export: ')}")
    with open(os.path.join(output_dir, "parity_report.json")) as f:
        return json.load(f)
