"""Top-k labels for image files with a keras_vit `.tflite` model, on any device with Python.

Needs only `ai-edge-litert`, numpy and Pillow: no TensorFlow, no keras_vit.
Copy this file, the `.tflite` file and `labels.txt` to the device, then:

    python predict_litert.py --model vit_float16.tflite --labels labels.txt photo.jpg more_photos/

The `.tflite` files written by `keras-vit export` take float32 pixels in 0..255
at the model's image size and normalise them themselves; this script only
decodes and resizes (bilinear with antialiasing, as the training pipeline does).
It reads images as `keras_vit.predict.read_image` does; the two are tested on
the same files.
"""

import argparse
import os
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter
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
        self.interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.image_size = tuple(int(n) for n in self.input["shape"][1:3])

    def __call__(self, pixels):
        self.interpreter.resize_tensor_input(self.input["index"], pixels.shape)
        self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self.input["index"], pixels.astype(np.float32))
        self.interpreter.invoke()
        logits = self.interpreter.get_tensor(self.output["index"]).astype(np.float64)
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        return probabilities / probabilities.sum(-1, keepdims=True)


def image_files(paths):
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        else:
            files.append(path)
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description="Top-k labels of image files with a keras_vit .tflite model.")
    parser.add_argument("images", nargs="+", help="image files or folders of them")
    parser.add_argument("--model", required=True, help="the .tflite file")
    parser.add_argument("--labels", help="labels.txt (default: beside the model, or one folder up)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    labels_path = args.labels or next(
        (p for p in (os.path.join(os.path.dirname(os.path.abspath(args.model)), *up, "labels.txt")
                     for up in ((), ("..",))) if os.path.isfile(p)), None)
    if labels_path is None:
        parser.error("no labels.txt beside the model or one folder up; pass --labels")
    with open(labels_path) as f:
        labels = f.read().splitlines()
    classifier = Classifier(args.model, args.threads)
    failures = 0
    for path in image_files(args.images):
        try:
            pixels = read_image(path, classifier.image_size)
        except (ValueError, FileNotFoundError) as error:
            print(f"skipped: {error}", file=sys.stderr)
            failures += 1
            continue
        probabilities = classifier(pixels[None])[0]
        print(path)
        for i in np.argsort(-probabilities)[: args.top_k]:
            print(f"  {probabilities[i]:.4f}  {labels[i]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
