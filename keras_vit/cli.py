"""`keras-vit`: the command line.

Each sub-command lives in the module that does the work; that module has an
`add_parser(subparsers)` which registers its flags and sets `run`. This file
only silences TensorFlow's start-up noise, dispatches, and turns a user's
mistake into one line on stderr instead of a traceback.
"""

import argparse
import contextlib
import importlib
import os
import sys

# Modules that contribute a sub-command, in the order `--help` lists them.
COMMAND_MODULES = ["keras_vit.training.train", "keras_vit.deploy.export", "keras_vit.deploy.predict"]

# The mistakes a user can make on the command line; anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
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
    with _stderr_silenced():
        import tensorflow as tf

        # Probing devices prints its own lines. Physical devices only: creating the runtime here
        # would stop MultiWorkerMirroredStrategy, which must configure it first.
        tf.config.list_physical_devices()
    tf.get_logger().setLevel("ERROR")
    return tf


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vit",
        description="Vision Transformers for Keras: train, evaluate, export, predict.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv=None):
    quiet_tensorflow()
    args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
