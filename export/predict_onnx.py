"""Top-k labels for image files with a keras_vit `.onnx` model, on ONNX Runtime.

Needs only `onnxruntime`, numpy and Pillow: no TensorFlow, no keras_vit. Copy this
file, `predict_litert.py` (whose image reading and command line it uses) and
`vit.onnx` to the machine, then:

    python predict_onnx.py --model vit.onnx photo.jpg more_photos/

The `.onnx` file written by `keras-vit export` takes `pixels`, float32 in 0..255 at
the model's image size, normalises them itself and returns `logits` and
`probabilities`; it carries its labels, so `--labels` is only needed to rename them.
Copy the export's `SHA256SUMS` along (with `vit.onnx` in an `onnx/` folder below it) and a
damaged file is refused before it answers, as `predict_litert.py` does.
"""

import json
import os
import sys

import numpy as np
from predict_litert import UsageError, check_integrity, main


class Classifier:
    """`classifier(pixels) -> probabilities` for a batch `(B, H, W, 3)` of float32 pixels."""

    def __init__(self, model_path, num_threads=None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        inputs = {value.name: value.shape for value in self.session.get_inputs()}
        outputs = {value.name: value.shape for value in self.session.get_outputs()}
        if "pixels" not in inputs or "probabilities" not in outputs:
            raise ValueError(f"it takes {sorted(inputs)} and returns {sorted(outputs)}, not pixels -> probabilities")
        self.image_size = tuple(int(n) for n in inputs["pixels"][1:3])
        self.num_classes = int(outputs["probabilities"][-1])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.labels = json.loads(metadata["labels"]) if "labels" in metadata else None

    def __call__(self, pixels):
        return self.session.run(["probabilities"], {"pixels": pixels.astype(np.float32)})[0].astype(np.float64)


def load_classifier(model_path, num_threads=None):
    """The model, checked first: a missing file or one that is no keras_vit ONNX model gets its own message."""
    if not os.path.isfile(model_path):
        raise UsageError(f"no such model file: {model_path}")
    check_integrity(model_path)  # SHA256SUMS, as predict_litert.py checks it
    try:
        return Classifier(model_path, num_threads)
    except Exception as error:  # ONNX Runtime raises its own classes for an unreadable file
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UsageError(f"{model_path} is not an .onnx model written by keras-vit export ({first})") from None


if __name__ == "__main__":
    sys.exit(main(model_kind=".onnx", load=load_classifier))
