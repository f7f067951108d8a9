"""ONNX: one file for ONNX Runtime (and from there TensorRT, OpenVINO, the browser), and its runtime.

`vit.onnx` takes `pixels`, float32 `(B, H, W, 3)` in 0..255 at the model's
image size, like the `.tflite` files: the normalisation is inside, the resize
outside (TensorFlow's antialiased resize has no ONNX operator). It returns
`logits` and `probabilities`, `(B, num_classes)`; `B` is dynamic. The file's
metadata holds the labels, image size and scaling, so it is self-describing.

Conversion is tf2onnx's, from a `tf.function`; the file is loaded into ONNX
Runtime and run before it is written, so a graph ONNX Runtime cannot run fails
here with one message, not on the server. The packages are optional:
`pip install "keras-vision-transformer[onnx]"` (tf2onnx, onnx, onnxruntime).
"""

import importlib.util
import json
import os

import numpy as np

from keras_vit.deploy.litert import checked_pixels, float32_copy
from keras_vit.preprocessing import preprocessing_model

REQUIREMENTS = ("tf2onnx", "onnx", "onnxruntime")
INPUT = "pixels"
OUTPUTS = ("logits", "probabilities")
INSTALL = 'pip install "keras-vision-transformer[onnx]"'


class ONNXExportError(ValueError):
    """The model did not become an ONNX file that ONNX Runtime runs; the message says why, in one line."""


def missing_packages():
    """The packages of `REQUIREMENTS` that are not installed (empty when ONNX export can run)."""
    return [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]


def convert(model, metadata, path, opset=None):
    """Writes `model` as an ONNX file at `path`, checked by loading it into ONNX Runtime first.

    Args:
        model: a Keras model mapping preprocessed images to logits.
        metadata: its `keras_vit.json` contents (`image_size`, `scaling`, `labels`).
        path: the `.onnx` file to write; nothing is written when conversion fails.
        opset: the ONNX opset. Defaults to tf2onnx's default.

    Raises:
        ONNXExportError: a package is missing, tf2onnx failed, or ONNX Runtime
            cannot load or run the result.
    """
    if missing_packages():
        raise ONNXExportError(f"ONNX export needs {', '.join(missing_packages())}: {INSTALL}.")
    import onnx
    import tf2onnx

    function, signature = _serving_function(model, metadata)
    try:
        proto, _ = tf2onnx.convert.from_function(function, signature, opset=opset)
    except Exception as error:  # tf2onnx raises whatever its op handlers raise
        raise ONNXExportError(f"tf2onnx could not convert the model: {_first_line(error)}") from error
    described = {"labels": list(metadata["labels"]), "image_size": list(metadata["image_size"])}
    onnx.helper.set_model_props(
        proto, {**{k: json.dumps(v) for k, v in described.items()}, "scaling": metadata["scaling"]}
    )
    for value in (*proto.graph.input, *proto.graph.output):  # tf2onnx names the free batch axis "unk__<n>"
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    data = proto.SerializeToString()
    _check_runs(data, metadata)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _serving_function(model, metadata):
    """`pixels -> {"logits", "probabilities"}` as a `tf.function`, and its input signature."""
    import tensorflow as tf

    height, width = metadata["image_size"]
    model = float32_copy(model)  # tf2onnx, like LiteRT, needs float32 graphs
    normalize = preprocessing_model((height, width), metadata["scaling"]).layers[-1]
    normalize.build((None, height, width, 3))
    # Constants made inside the function: tf2onnx turns tensors captured from outside (the
    # Normalization layer's mean and variance) into extra graph inputs instead of constants.
    mean, std = np.asarray(normalize.mean, "float32"), np.sqrt(np.asarray(normalize.variance, "float32"))
    signature = [tf.TensorSpec((None, height, width, 3), tf.float32, name=INPUT)]

    @tf.function(input_signature=signature)
    def serve(pixels):
        logits = tf.cast(model((pixels - tf.constant(mean)) / tf.constant(std), training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    return serve, signature


def _check_runs(data, metadata):
    try:
        ONNXModel(data)(np.zeros((2, *metadata["image_size"], 3), np.float32))
    except Exception as error:  # ONNX Runtime's errors are several classes, all of one meaning here
        cause = error.__cause__ or error
        raise ONNXExportError(f"ONNX Runtime cannot run the converted model: {_first_line(cause)}") from error


def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class ONNXModel:
    """An ONNX file written here, run by ONNX Runtime: `model(pixels) -> logits`, any batch size.

    Args:
        path: the `.onnx` file (or its bytes).
        num_threads: intra-op threads. Defaults to ONNX Runtime's choice.
    """

    def __init__(self, path, num_threads=None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        source = path if isinstance(path, bytes) else str(path)
        if isinstance(source, str) and not os.path.isfile(source):
            raise FileNotFoundError(f"No such .onnx file: {source}")
        self.path = source if isinstance(source, str) else "<bytes>"
        try:
            self.session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime's own classes (InvalidProtobuf, Fail, ...), none a ValueError
            raise ValueError(f"{self.path} is not a valid .onnx model ({_first_line(error)}).") from error
        if [value.name for value in self.session.get_inputs()] != [INPUT]:
            raise ValueError(
                f"{self.path} is not an .onnx model written by keras-vit export (no single input {INPUT!r})."
            )
        self.image_size = tuple(self.session.get_inputs()[0].shape[1:3])
        props = self.session.get_modelmeta().custom_metadata_map
        self.labels = json.loads(props["labels"]) if "labels" in props else None

    def __call__(self, pixels):
        pixels = checked_pixels(pixels, self.image_size, self.path)
        return self.session.run(["logits"], {INPUT: pixels})[0]
