"""LiteRT (TFLite) artifacts: float32, float16, dynamic-range int8 and full int8.

Every `.tflite` file here takes float32 pixels `pixels` `(B, H, W, 3)` in
0..255 at the model's image size (`B` is dynamic: the runtime resizes the
input) and returns `(B, num_classes)` logits named `logits`. A model that takes
any size (`dynamic_image_size=True`) is converted at its `keras_vit.json` size:
LiteRT files have one input size. The normalisation of
`keras_vit.preprocessing.preprocessing_model` is inside the file, so a device
only has to resize; the resize itself stays outside because TensorFlow's
antialiased resize is not a LiteRT built-in op.

Conversion is Keras' LiteRT path (ExportArchive -> SavedModel -> converter),
with the SavedModel written once for all four files, and built-in ops only: if
a TensorFlow (Flex) op were needed the conversion fails here, instead of on a
phone whose runtime does not carry it.
"""

import contextlib
import functools
import os
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_vit.preprocessing import preprocessing_model
from keras_vit.views.features import fixed_size_model

QUANTIZATIONS = ("float32", "float16", "dynamic_int8", "int8")


def float32_copy(model):
    """Returns `model` rebuilt in float32 with the same weights (`model` itself if already float32).

    A model trained under `mixed_float16` does not convert: exact GELU in half
    precision lowers to `tf.Erfc`, which LiteRT lacks. Its variables are float32
    anyway, so a float32 twin of the architecture can take them unchanged.
    """
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model._flatten_layers()):
        return model
    clone = model.__class__.from_config(_float32_config(model.get_config()))
    clone.set_weights(model.get_weights())
    return clone


def _float32_config(config):
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return "float32"
        return {key: _float32_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    return config


def pixels_model(model, metadata):
    """The model inside every `.tflite` file: pixels at the model's size -> normalise -> `{"logits": ...}`.

    The dict names the file's output `logits` (a bare tensor would be `output_0`).
    """
    height, width = metadata["image_size"]
    # preprocessing_model is (resize, normalise); the device resizes, the file normalises.
    normalize = preprocessing_model((height, width), metadata["scaling"]).layers[-1]
    pixels = keras.Input((height, width, 3), name="pixels")
    model = float32_copy(model)
    if None in model.input_shape[1:3]:
        model = fixed_size_model(model, (height, width))
    return keras.Model(pixels, {"logits": model(normalize(pixels))}, name="vit_pixels")


def resized_pixels(images, image_size):
    """Raw images `(B, any, any, 3)` -> float32 pixels `(B, H, W, 3)`, as the `.tflite` files take them.

    The resize of `preprocessing_model`, on float input: given uint8, Keras'
    `Resizing` would round its output back to uint8, unlike the whole
    preprocessing model (whose float32 input casts first).
    """
    resize = preprocessing_model(image_size).layers[0]
    return np.asarray(resize(np.asarray(images, dtype=np.float32)), dtype=np.float32)


@contextlib.contextmanager
def saved_for_conversion(model):
    """Yields a temporary SavedModel of `model` (from `pixels_model`) for several `convert` calls.

    Keras' LiteRT export is ExportArchive -> SavedModel -> converter, the
    SavedModel traced and written anew for every file; that is about half of
    each conversion (a Ti/16 at 64 px: 27 of 53 s on a loaded 2-core machine),
    so the export writes it once for its four files.
    """
    spec = tf.TensorSpec(model.inputs[0].shape, tf.float32, name=model.inputs[0].name)
    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", functools.partial(model.__call__, training=False), input_signature=[spec])
        archive.write_out(folder, verbose=False)
        yield folder


@contextlib.contextmanager
def _native_lines_held():
    """Holds back what LiteRT's C++ writes to stderr ("Created TensorFlow Lite XNNPACK delegate",
    the quantizer's "fully_quantize: 0, inference_type: 6 ...") and shows it only if the block fails.

    Those lines bypass Python and every log level, and name nothing a user can act on. Set
    `KERAS_VIT_DEBUG=1` (as `keras-vit --debug` does) to see them.
    """
    if os.environ.get("KERAS_VIT_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def convert(model, path, quantization, calibration_pixels=None):
    """Writes `model` (from `pixels_model`) to `path` as a `.tflite` file.

    Args:
        model: a Keras model taking float32 pixels, or the folder of
            `saved_for_conversion` (to convert one model several times).
        path: the `.tflite` file to write.
        quantization: one of `QUANTIZATIONS`: `"float32"`; `"float16"`
            weights; `"dynamic_int8"` (int8 weights, activations quantized on
            the fly); `"int8"` (weights and activations, calibrated).
        calibration_pixels: `(N, H, W, 3)` float32 pixels for `"int8"`: a few
            hundred training images, resized.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantization={quantization!r}; expected one of {QUANTIZATIONS}.")
    if quantization == "int8" and (calibration_pixels is None or not len(calibration_pixels)):
        raise ValueError("quantization='int8' needs calibration images (a few hundred training images).")
    if not isinstance(model, (str, os.PathLike)):
        with saved_for_conversion(model) as folder:
            return convert(folder, path, quantization, calibration_pixels)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(model))
    converter.experimental_enable_resource_variables = True  # as Keras' own LiteRT export
    # Built-in ops only: a TensorFlow (Flex) op fails here, not on the device.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        # Int8 kernels first; an op without one stays float (still a built-in op).
        converter.target_spec.supported_ops.insert(0, tf.lite.OpsSet.TFLITE_BUILTINS_INT8)
        calibration_pixels = np.asarray(calibration_pixels, dtype=np.float32)
        converter.representative_dataset = lambda: ([pixels[None]] for pixels in calibration_pixels)
    with _native_lines_held():
        flatbuffer = converter.convert()
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


class LiteRTModel:
    """A `.tflite` file run by LiteRT's interpreter: `model(pixels) -> logits`, any batch size.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads. Defaults to LiteRT's choice.
    """

    def __init__(self, path, num_threads=None):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"No such .tflite file: {self.path}")
        try:
            with _native_lines_held():
                self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except ValueError as error:  # LiteRT's message does not say which file
            raise ValueError(f"{self.path} is not a valid .tflite model ({error}).") from None
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.image_size = tuple(int(n) for n in self._input["shape"][1:3])
        self.num_classes = int(self._output["shape"][-1])

    def __call__(self, pixels):
        pixels = checked_pixels(pixels, self.image_size, self.path)
        if pixels.shape[0] != self.interpreter.get_input_details()[0]["shape"][0]:
            self.interpreter.resize_tensor_input(self._input["index"], pixels.shape)
            self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self._input["index"], pixels)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"]).copy()

    def op_names(self):
        """The distinct operators in the file, e.g. `["ADD", "BATCH_MATMUL", ...]`."""
        return sorted({op["op_name"] for op in self.interpreter._get_ops_details()})


def checked_pixels(pixels, image_size, path):
    """`pixels` as float32, refused with a message naming `path` and the shape it takes unless `(B, H, W, 3)`."""
    pixels = np.asarray(pixels, dtype=np.float32)
    expected = (*image_size, 3)
    if pixels.ndim != 4 or pixels.shape[1:] != expected:
        raise ValueError(
            f"{path} expects float32 pixels of shape (B, {', '.join(map(str, expected))}); got shape {pixels.shape}."
        )
    return pixels


def latency_ms(predict, image, repeats=20):
    """Median milliseconds of `predict(image)` for a batch of one, after one warm-up call."""
    predict(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(image)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
