"""Top-k labels for image files with a keras_vit `.tflite` model, on any device with Python.

Needs only `ai-edge-litert`, numpy and Pillow: no TensorFlow, no keras_vit.
Copy this file, the `.tflite` file and `labels.txt` to the device, then:

    python predict_litert.py --model vit_float16.tflite --labels labels.txt photo.jpg more_photos/

The `.tflite` files written by `keras-vit export` take float32 pixels in 0..255
at the model's image size and normalise them themselves; this script only
decodes and resizes (bilinear with antialiasing, as the training pipeline does).
It reads images as `keras_vit.deploy.predict.read_image` does; the two are tested on
the same files. Before answering it checks the model file against the `SHA256SUMS`
that `keras-vit export` writes (copy it along, keeping the file's path below it, e.g.
`tflite/vit_float16.tflite`): a damaged file is refused instead of answering wrong labels. `predict_onnx.py` beside it is the same command for the `.onnx`
file, on ONNX Runtime; it imports this file's image reading and command line.
"""

import argparse
import hashlib
import os
import sys

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def read_image(path, size):
    """Decodes an image file to float32 RGB pixels `(height, width, 3)` in 0..255 at `size`."""
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size[1], size[0]))  # JPEG: decode huge files at a reduced scale
            if image.mode.startswith("I;16") or image.mode in ("I", "F"):  # 16-bit: scale to 8 bits
                values = np.asarray(image, dtype=np.float64)
                values = values / 257 if image.mode.startswith("I;16") or values.max() > 255 else values
                image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
            # Grayscale and palette expand to RGB; alpha is dropped.
            image = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path} is too large to decode safely ({error})") from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"{path} is not an image file") from None
    except OSError as error:
        raise ValueError(f"{path} is a damaged image: {error}") from None
    return np.asarray(image, dtype=np.float32)


class Classifier:
    """`classifier(pixels) -> probabilities` for a batch `(B, H, W, 3)` of float32 pixels."""

    def __init__(self, model_path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter  # here: predict_onnx.py imports this file without it

        self.interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.image_size = tuple(int(n) for n in self.input["shape"][1:3])
        self.num_classes = int(self.output["shape"][-1])

    def __call__(self, pixels):
        self.interpreter.resize_tensor_input(self.input["index"], pixels.shape)
        self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self.input["index"], pixels.astype(np.float32))
        self.interpreter.invoke()
        logits = self.interpreter.get_tensor(self.output["index"]).astype(np.float64)
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        return probabilities / probabilities.sum(-1, keepdims=True)


class UsageError(Exception):
    """A mistake in the command line or its files: printed as one line, exit status 2."""


# keras_vit.deploy.integrity's check, repeated here: this file runs without keras_vit.
RECORD, LEVELS_UP = "SHA256SUMS", 4


def check_integrity(path):
    """Refuses a file that differs from the SHA-256 an export's `SHA256SUMS` (here or a few folders up) lists.

    A file that no record lists (an older export, your own model) is taken as it is.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    for _ in range(LEVELS_UP + 1):
        record = os.path.join(folder, RECORD)
        name = os.path.relpath(path, folder).replace(os.sep, "/")
        expected = _recorded_digest(record, name) if os.path.isfile(record) else None
        if expected:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for piece in iter(lambda: f.read(1 << 20), b""):
                    digest.update(piece)
            if digest.hexdigest() != expected:
                raise UsageError(
                    f"{path} does not match the SHA-256 recorded for it in {record}: the file is damaged or was "
                    "changed after the export; copy it again from the export (or export again)"
                )
            return
        folder = os.path.dirname(folder)


def _recorded_digest(record, name):
    with open(record) as f:
        for line in f:
            digest, _, listed = line.rstrip("\n").partition(" ")
            if len(digest) == 64 and listed[:1] in (" ", "*") and listed[1:] == name:
                return digest.lower()
    return None


def image_files(paths):
    """Expands folders (their image files, sorted) and keeps files as given; refuses what is neither."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise UsageError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise UsageError(f"no such image file or folder: {path}")
    return files


def load_classifier(model_path, num_threads=None):
    """The model, checked first: a missing or non-.tflite file gets its own message, not LiteRT's."""
    if not os.path.isfile(model_path):
        raise UsageError(f"no such model file: {model_path}")
    with open(model_path, "rb") as f:
        header = f.read(8)
    if header[4:8] != b"TFL3":  # the file identifier of every TFLite flatbuffer
        raise UsageError(f"{model_path} is not a .tflite model (no TFL3 identifier); pass the .tflite file as --model")
    check_integrity(model_path)
    try:
        return Classifier(model_path, num_threads)
    except ValueError as error:
        raise UsageError(f"{model_path} is not a valid .tflite model ({error})") from None


def read_labels(labels_path, model_path, num_classes, embedded=None):
    """The label names, one per line, checked against the model's number of outputs.

    Without `labels_path`: the model's own labels (`embedded`, which an `.onnx`
    file carries), else `labels.txt` beside the model or one folder up.
    """
    if labels_path is None and embedded is not None:
        labels, labels_path = list(embedded), f"the labels inside {model_path}"
    else:
        labels_path = labels_path or _find_labels(model_path)
        if not os.path.isfile(labels_path):
            raise UsageError(f"no such labels file: {labels_path}")
        check_integrity(labels_path)
        with open(labels_path) as f:
            labels = f.read().splitlines()
    if len(labels) != num_classes:
        raise UsageError(
            f"{labels_path} has {len(labels)} labels but {model_path} has {num_classes} outputs; "
            "use the labels.txt exported with this model"
        )
    return labels


def _find_labels(model_path):
    folder = os.path.dirname(os.path.abspath(model_path))
    for path in (os.path.join(folder, "labels.txt"), os.path.join(folder, "..", "labels.txt")):
        if os.path.isfile(path):
            return path
    raise UsageError("no labels.txt beside the model or one folder up; pass --labels")


def main(argv=None, model_kind=".tflite", load=None):
    """The command line; `predict_onnx.py` passes its own `model_kind` and `load` (`load_classifier`)."""
    parser = argparse.ArgumentParser(description=f"Top-k labels of image files with a keras_vit {model_kind} model.")
    parser.add_argument("images", nargs="+", help="image files or folders of them")
    parser.add_argument("--model", required=True, help=f"the {model_kind} file")
    parser.add_argument(
        "--labels", help="labels.txt (default: the model's own, or labels.txt beside it or one folder up)"
    )
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.top_k < 1:
            raise UsageError(f"--top-k={args.top_k} must be at least 1")
        files = image_files(args.images)
        classifier = (load or load_classifier)(args.model, args.threads)
        labels = read_labels(args.labels, args.model, classifier.num_classes, getattr(classifier, "labels", None))
    except UsageError as error:  # before any output, so nothing is printed half-way
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a model or labels file this user may not read
        print(f"{parser.prog}: error: {error.filename or args.model}: {error.strerror or error}", file=sys.stderr)
        return 2
    return predict_files(files, classifier, labels, args.top_k)


def predict_files(files, classifier, labels, top_k):
    """Prints the top-k labels of each file; unreadable files are skipped with a message (exit status 1)."""
    failures = 0
    for path in files:
        try:
            pixels = read_image(path, classifier.image_size)
        except (ValueError, OSError) as error:
            print(f"skipped: {error}", file=sys.stderr)
            failures += 1
            continue
        probabilities = classifier(pixels[None])[0]
        print(path)
        for i in np.argsort(-probabilities)[:top_k]:
            print(f"  {probabilities[i]:.4f}  {labels[i]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
