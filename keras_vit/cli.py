"""`keras-vit`: the command line, the top of the import graph.

The library modules hold the work as functions (`training.train.train`,
`deploy.export.export_model`, `deploy.predict.predict_files`); this file holds
every sub-command's flags, silences TensorFlow's start-up noise, dispatches,
and turns a user's mistake into one line on stderr instead of a traceback.
Training flags are generated from `TrainConfig`, one per field, with its help.
"""

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import sys

import numpy as np

from keras_vit import files

# The mistakes a user can make on the command line; anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    ConnectionError,  # a checkpoint download that failed: the message says where to put the file by hand
)


@contextlib.contextmanager
def _stderr_silenced():
    """Sends fd 2 to /dev/null: TF's C++ start-up lines (CUDA, oneDNN) bypass every log level."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow():
    """Imports TensorFlow with its harmless start-up warnings hidden (no GPU here is not news)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # torch's CPU kernels run on OpenMP threads that by default spin while they wait for work; in
    # keras-vit they share the cores with tf.data's threads, and a spinning thread holds a core the
    # pipeline (or a neighbour) needs. Passive waiting made torch's train step 3-10x faster on a
    # shared 2-core machine (docs/training.md, "On JAX and PyTorch"). Only OpenMP runtimes read this:
    # TensorFlow and XLA keep their own thread pools. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with _stderr_silenced():
        # Keras (and with it the backend) first: on the torch backend Keras loads triton, whose
        # native library segfaults when it loads after TensorFlow's (`import tensorflow; import
        # triton.knobs` dies with SIGSEGV), so `keras-vit` on torch died before printing anything.
        import keras  # noqa: F401
        import tensorflow as tf

        # Probing devices prints its own lines. Physical devices only: creating the runtime here
        # would stop MultiWorkerMirroredStrategy, which must configure it first.
        tf.config.list_physical_devices()
    tf.get_logger().setLevel("ERROR")
    return tf


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake answered in one line and negative numbers in scientific notation taken."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse takes `-1.5` as a value but `-1e30` or `-inf` as an unknown flag (it matches only
        # `-\d+` and `-\d*\.\d+`); no keras-vit flag looks like a number, so every number is a value.
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-inf(inity)?$", re.I)

    def error(self, message):
        """One line with the mistake and where the flags are, instead of the whole usage first."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(
        prog="keras-vit", description="Vision Transformers for Keras: train, evaluate, export, quantize, predict."
    )
    _add_debug(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_evaluate, _add_export, _add_quantize, _add_predict):
        add(subparsers, [_debug_flag()])
    return parser


def _add_debug(parser, default):
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show full tracebacks for errors, and the libraries' log lines",
    )


def _debug_flag():
    """`--debug` for after the sub-command too: left unset when not given (SUPPRESS), so that
    `keras-vit --debug train` keeps the value the main parser read."""
    parent = argparse.ArgumentParser(add_help=False)
    _add_debug(parent, default=argparse.SUPPRESS)
    return parent


def main(argv=None):
    # The arguments first: `--help` and a mistyped flag are answered before Keras and TensorFlow
    # are imported, which takes seconds (the package defers its imports in this command).
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    import keras_vit

    keras_vit.import_public_names()  # registers the layers and optimisers that .keras files name
    if not args.debug:  # TFDS' and TensorFlow's absl warnings name nothing a user can act on
        logging.getLogger("absl").setLevel(logging.ERROR)
    else:
        os.environ["KERAS_VIT_DEBUG"] = "1"  # LiteRT's C++ lines too (deploy/litert.py)
    try:
        return args.run(args) or 0
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"keras-vit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"keras-vit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the file system saying no (permissions, a read-only or full disk)
        line = files.os_error_line(error, getattr(args, "writes", None), getattr(args, "after_space", None))
        if line is None or args.debug:
            raise
        print(f"keras-vit {args.command}: error: {line}", file=sys.stderr)
        return 2


# --- train, evaluate --------------------------------------------------------------------


# The sub-commands import their modules when called, not at the top: `main` must silence
# TensorFlow before anything imports it (its C++ start-up lines bypass every log level).


def _add_train(subparsers, parents):
    from keras_vit.training.settings import TrainConfig  # no Keras: --help answers at once

    parser = subparsers.add_parser("train", help="train or fine-tune a ViT with model.fit", parents=parents)
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default, help = getattr(defaults, field.name), field.metadata["help"]
        help += "" if default is None or "default" in help else f" (default: {default})"
        if field.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)
        else:
            kind = field.type if field.type in (int, float) else str
            parser.add_argument(flag, type=kind, default=default, choices=field.metadata["choices"], help=help)
    parser.set_defaults(run=_run_train)


def _run_train(args):
    from keras_vit import run_folder
    from keras_vit.training.train import TrainConfig, output_folder, train

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    config = dataclasses.replace(config, output=output_folder(config))
    args.writes = config.output  # named when the file system refuses without naming a file
    args.after_space = f"`keras-vit train --output {config.output} --resume` continues from the last finished epoch"
    try:
        results = train(config)
    except KeyboardInterrupt:
        if run_folder.read_settings(config.output) is None or run_folder.finished(config.output):
            raise  # nothing started, or nothing left: the plain "interrupted"
        print(
            f"keras-vit train: interrupted; `keras-vit train --output {config.output} --resume` continues "
            "from the last finished epoch",
            file=sys.stderr,
        )
        return 130
    from keras_vit.training.reports import per_class_text

    tables = ("per_class", "confusion_matrix")  # printed as tables below; all of it in results.json
    print(json.dumps({k: v for k, v in results.items() if k not in tables}, indent=2))
    if "per_class" in results:  # not on a worker of a multi-machine run
        print(per_class_text(results["per_class"], results["confusion_matrix"]))
    print(f"Wrote {config.output}/: {written(config.output)}")
    return 0


def written(output):
    """What a run folder holds, for the closing line: read from the folder, so it never lists what a
    run did not write (`--no-export`) or forgets what it did."""
    from keras_vit import run_folder

    order = [run_folder.MODEL, run_folder.METADATA, run_folder.RESULTS, run_folder.HISTORY_CSV]
    order += [run_folder.HISTORY_JSON, run_folder.CURVES, run_folder.CONFUSION_MATRIX, run_folder.SETTINGS]
    visible = [n for n in os.listdir(output) if not n.startswith(".")] if os.path.isdir(output) else []
    names = sorted(visible, key=lambda n: (order.index(n) if n in order else len(order), n))
    notes = {run_folder.LOGS: " (TensorBoard)"}
    shown = []
    for name in names:
        path = os.path.join(output, name)
        if not os.path.isdir(path):
            shown.append(name)
        elif name == os.path.dirname(run_folder.BEST):
            shown += [f"{name}/{inner}" for inner in sorted(os.listdir(path)) if not inner.startswith(".")]
        elif name == run_folder.EXPORT:
            inside = sorted(n + ("/" if os.path.isdir(os.path.join(path, n)) else "") for n in os.listdir(path))
            shown.append(f"{name}/ ({', '.join(inside)})")
        else:
            shown.append(f"{name}/{notes.get(name, '')}")
    return ", ".join(shown)


def _add_evaluate(subparsers, parents):
    parser = subparsers.add_parser("evaluate", help="print a trained model's metrics on a dataset", parents=parents)
    parser.add_argument("model", help="a run folder (or its model.keras)")
    parser.add_argument("--dataset", help="as `keras-vit train --dataset` (default: the run's own)")
    parser.add_argument("--data-dir", help="where TFDS keeps --dataset (default: the run's)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args):
    from keras_vit.training.train import evaluate

    metrics = evaluate(args.model, args.dataset, split=args.split, data_dir=args.data_dir, batch_size=args.batch_size)
    print(f"keras-vit evaluate: the {metrics['split']} split of {metrics['dataset']}: {metrics['images']} images")
    print(
        json.dumps({k: round(float(v), 4) for k, v in metrics.items() if k in ("loss", "accuracy", "top5")}, indent=2)
    )
    return 0


# --- export ------------------------------------------------------------------------------


def _add_export(subparsers, parents):
    parser = subparsers.add_parser(
        "export",
        help="export a trained model to SavedModel (TF Serving), LiteRT and ONNX, with a parity report",
        description="Exports a trained model folder to SavedModel, LiteRT and ONNX, and reports their parity.",
        parents=parents,
    )
    parser.add_argument("model_dir", help="folder with model.keras and keras_vit.json")
    parser.add_argument("--output", required=True, help="folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument(
        "--int8-tolerance",
        type=float,
        default=0.01,
        help="largest accuracy drop (fraction) for keeping full int8 (default: 0.01)",
    )
    parser.add_argument(
        "--dataset",
        help="take test and calibration images from this dataset (as `keras-vit train --dataset`: "
        "a TFDS name, digits or a folder; default: the run's own, unless .npy images are given)",
    )
    parser.add_argument("--data-dir", help="where TFDS keeps --dataset")
    parser.add_argument("--test-images", help=".npy of uint8 (N, H, W, 3) raw test images for the report")
    parser.add_argument("--test-labels", help=".npy of int (N,) class indices of --test-images")
    parser.add_argument("--calibration-images", help=".npy of uint8 (N, H, W, 3) raw training images for int8")
    parser.add_argument("--name", default="vit", help="model name in TF Serving's layout (default: vit)")
    parser.add_argument("--version", type=int, default=1, help="integer model version (default: 1)")
    parser.add_argument(
        "--onnx",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write onnx/vit.onnx for ONNX Runtime (default: when tf2onnx, onnx and onnxruntime are installed; "
        "--onnx requires them and a working conversion, --no-onnx leaves it out)",
    )
    parser.add_argument(
        "--bfloat16",
        action="store_true",
        help="also write saved_model_bfloat16/, computing in bfloat16: faster on CPUs with AVX-512 BF16 or AMX",
    )
    parser.set_defaults(run=_run_export)


def _run_export(args):
    from keras_vit.deploy.export import export_model

    args.writes = args.output
    test_images, test_labels, calibration = _report_images(args, "export", args.calibration_images)
    export_model(
        args.model_dir,
        args.output,
        test_images=test_images,
        test_labels=test_labels,
        calibration_images=calibration,
        int8_tolerance=args.int8_tolerance,
        overwrite=args.overwrite,
        name=args.name,
        version=args.version,
        with_onnx=args.onnx,
        bfloat16=args.bfloat16,
    )
    return 0


def _report_images(args, command, calibration_images=None):
    """`(test images, labels, calibration images)` for a report: .npy files, --dataset, or the run's own dataset."""
    from keras_vit import run_folder
    from keras_vit.training import data

    arrays = (_load_npy(path) for path in (args.test_images, args.test_labels, calibration_images))
    test_images, test_labels, calibration = arrays
    dataset, data_dir = args.dataset, args.data_dir
    metadata = _readable_metadata(args.model_dir)
    if dataset is None and args.test_images is None and calibration_images is None and metadata.get("source"):
        dataset, data_dir = metadata["source"], data_dir or metadata.get("data_dir")  # the run's own, as `evaluate`
        images = "test and calibration images" if command == "export" else "test images"
        print(f"keras-vit {command}: {images} from the run's dataset {dataset} (--dataset: others)")
    if dataset:
        metadata = metadata or run_folder.read_metadata(args.model_dir)  # none: its one-line error
        splits = data.load_for_model(dataset, metadata, data_dir=data_dir)
        test_images, test_labels, calibration = data.report_arrays(splits, metadata["image_size"])
    return test_images, test_labels, calibration


def _readable_metadata(model_dir):
    """The folder's `keras_vit.json`, or `{}` where there is none (`export_model` says what is missing)."""
    from keras_vit import run_folder

    try:
        return run_folder.read_metadata(model_dir)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return {}


def _load_npy(path):
    if path is None:
        return None
    if not path.endswith(".npy"):
        raise ValueError(f"{path}: expected a .npy file (numpy.save).")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such .npy file: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # not .npy data, truncated, or pickled objects
        raise ValueError(f"{path} is not a readable .npy array of numbers ({error}).") from None


# --- quantize ----------------------------------------------------------------------------

# `keras_vit.deploy.quantize.MODES`, written out: the parser is built before Keras is imported.
QUANTIZE_MODES = ("int8", "int4", "float8")


def _add_quantize(subparsers, parents):
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a trained model with Keras' model.quantize into a new run folder, with a parity report",
        description="Writes a run folder whose model.keras is quantized by Keras (weights in int8, int4 or float8), "
        "and a parity report against the float32 model. For on-device speed use LiteRT's int8 (keras-vit export): "
        "Keras' int8 is slower than float32 on CPUs.",
        parents=parents,
    )
    parser.add_argument("model_dir", help="a float32 run folder (model.keras and keras_vit.json)")
    parser.add_argument(
        "--mode", default="int8", choices=QUANTIZE_MODES, help="Keras' quantization mode (default: int8)"
    )
    parser.add_argument("--output", help="the run folder to create (default: <model_dir>-<mode>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing quantized --output")
    parser.add_argument("--dataset", help="take test images from this dataset (default: the run's own)")
    parser.add_argument("--data-dir", help="where TFDS keeps --dataset")
    parser.add_argument("--test-images", help=".npy of uint8 (N, H, W, 3) raw test images for the report")
    parser.add_argument("--test-labels", help=".npy of int (N,) class indices of --test-images")
    parser.set_defaults(run=_run_quantize)


def _run_quantize(args):
    from keras_vit.deploy.quantize import quantize_run

    run = os.path.normpath(args.model_dir)
    run = os.path.dirname(run) or "." if run.endswith(".keras") else run
    output = args.output or f"{run}-{args.mode}"
    args.writes = output
    test_images, test_labels, _ = _report_images(args, "quantize")
    quantize_run(
        args.model_dir, output, args.mode, test_images=test_images, test_labels=test_labels, overwrite=args.overwrite
    )
    print(f"Wrote {output}/: model.keras ({args.mode}), keras_vit.json, parity_report.json, parity_report.md")
    return 0


# --- predict -----------------------------------------------------------------------------


def _add_predict(subparsers, parents):
    parser = subparsers.add_parser(
        "predict",
        help="print the top-k labels of image files",
        description="Top-k labels with probabilities for image files (or folders of them).",
        parents=parents,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument(
        "--model",
        required=True,
        help=".keras file or its folder, SavedModel or export folder, .tflite or .onnx file, or a timm / "
        "transformers checkpoint folder (with its config.json)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="labels per image (default: 5)")
    parser.add_argument(
        "--explain",
        metavar="DIR",
        help="also write attention maps of each image into DIR as PNG "
        "(<name>_rollout.png, <name>_attention.png, and <name>_halting.png, the blocks each patch ran, "
        "for --adaptive-tokens models; .keras models only)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image and line, for scripts")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16"),
        help="compute a .keras model in bfloat16: faster on CPUs with AVX-512 BF16 or AMX (default: float32)",
    )
    parser.set_defaults(run=_run_predict)


def _run_predict(args):
    from keras_vit.deploy.predict import predict_files

    args.writes = args.explain
    failures = predict_files(
        args.images, args.model, top_k=args.top_k, explain=args.explain, as_json=args.json, precision=args.precision
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
