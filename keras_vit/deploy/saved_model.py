"""A SavedModel for TF Serving with three signatures, all ending in the same named outputs.

Signatures (B is dynamic in all three; H, W the model's image size):
- `serving_default`: `images`, float32 `(B, H, W, 3)`, already preprocessed; any
  `H, W` (multiples of the patch) for a model built with `dynamic_image_size=True`.
- `serving_uint8`: `images`, uint8 `(B, any, any, 3)` raw pixels; resized and
  normalised inside by `keras_vit.preprocessing.preprocessing_model`.
- `serving_bytes`: `image_bytes`, string `(B,)` encoded JPEG/PNG/GIF/BMP (TF
  Serving's REST `{"b64": ...}`); decoded to RGB (grayscale and alpha are
  converted, 16-bit is scaled to 8-bit), then as `serving_uint8`.

Outputs: `logits` and `probabilities` `(B, num_classes)`; `top_k_probabilities`,
`top_k_indices` and `top_k_labels` `(B, k)`.
"""

import os

import keras
import tensorflow as tf

from keras_vit.preprocessing import preprocessing_model
from keras_vit.views.adaptive import gathered_forward

SIGNATURES = ("serving_default", "serving_uint8", "serving_bytes")


def serving_archive(model, metadata, top_k=5):
    """Returns a `keras.export.ExportArchive` holding `model` behind the three signatures.

    Args:
        model: a Keras model mapping preprocessed images to logits.
        metadata: the model's `keras_vit.json` contents (`image_size`,
            `scaling`, `labels`).
        top_k: how many classes the `top_k_*` outputs hold. Defaults to `5`.
    """
    height, width = metadata["image_size"]
    preprocess = preprocessing_model((height, width), metadata["scaling"])
    preprocess.build((None, None, None, 3))  # ExportArchive tracks built layers only
    labels = list(metadata["labels"])
    top_k = min(top_k, len(labels))

    def from_preprocessed(images):
        return _named_outputs(tf.cast(model(images, training=False), tf.float32), labels, top_k)

    def from_uint8(images):
        return from_preprocessed(preprocess(images))

    def decode(image_bytes):
        # Any size, mode or bit depth in; uint8 RGB out (a GIF gives its first frame).
        image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
        return preprocess(image[None])[0]

    def from_bytes(image_bytes):
        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec((height, width, 3), tf.float32))
        return from_preprocessed(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(preprocess)
    size = tuple(model.input_shape[1:3])  # (None, None) for a model that takes any size
    specs = {
        "serving_default": (from_preprocessed, tf.TensorSpec((None, *size, 3), tf.float32, name="images")),
        "serving_uint8": (from_uint8, tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")),
        "serving_bytes": (from_bytes, tf.TensorSpec((None,), tf.string, name="image_bytes")),
    }
    for name, (function, spec) in specs.items():
        archive.add_endpoint(name, function, input_signature=[spec])
    return archive


def gathered_archive(model):
    """An A-ViT model's path with halted tokens removed (`keras_vit.views.adaptive.gathered_forward`) as `serve`.

    `images`: float32 `(B, H, W, 3)`, preprocessed, any batch -> `(B, num_classes)`
    logits. Halted tokens are gathered out after every block, so the token
    axis is data-dependent: TensorFlow and TF Serving run it; LiteRT's
    converter does not take it with builtin operators only (docs/deployment.md).
    """
    height, width, channels = model.input_shape[1:]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda images: gathered_forward(model, images)[0],
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.float32, name="images")],
    )
    return archive


def _named_outputs(logits, labels, top_k):
    probabilities = tf.nn.softmax(logits)
    top = tf.math.top_k(probabilities, k=top_k)
    return {
        "logits": logits,
        "probabilities": probabilities,
        "top_k_probabilities": top.values,
        "top_k_indices": top.indices,
        "top_k_labels": tf.gather(tf.constant(labels), top.indices),
    }


def write_saved_model(model, metadata, path, top_k=5):
    """Writes the SavedModel of `serving_archive` to `path` (a version folder)."""
    serving_archive(model, metadata, top_k).write_out(str(path), verbose=False)
    return path


def load_signature(path, name="serving_uint8"):
    """Loads one signature of a SavedModel written here, checking its inputs before TF does.

    Returns a function `signature(array) -> dict of numpy outputs` that raises
    a `ValueError` naming the expected input when the rank or dtype is wrong,
    instead of TensorFlow's binding error.
    """
    signatures = tf.saved_model.load(str(path)).signatures
    if name not in signatures:
        raise ValueError(
            f"The SavedModel {path} has no signature {name!r} (it has: {', '.join(sorted(signatures)) or 'none'}): "
            f"it is not a keras-vit export, which has {', '.join(SIGNATURES)}. Export the model with "
            "`keras-vit export` (keras_vit.deploy.export.export_model)."
        )
    function = signatures[name]
    ((key, spec),) = function.structured_input_signature[1].items()

    def signature(array):
        tensor = tf.convert_to_tensor(array)
        if tensor.dtype != spec.dtype or not spec.shape.is_compatible_with(tensor.shape):
            raise ValueError(
                f"Signature {name!r} expects input {key!r} as {spec.dtype.name} with shape "
                f"{_shape_text(spec.shape)}; got {tensor.dtype.name} with shape {_shape_text(tensor.shape)}."
            )
        return {output: value.numpy() for output, value in function(**{key: tensor}).items()}

    signature.outputs = function.structured_outputs  # {name: TensorSpec}, e.g. to read k of top_k_*
    return signature


def version_folder(path):
    """The SavedModel folder at `path`: `path` itself, or its highest integer version below it.

    TF Serving is pointed at `<base>/<name>/` and serves the highest version;
    doing the same here lets that one path work everywhere. Returns `None`
    when `path` is neither.
    """
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        return None
    versions = [
        int(v) for v in os.listdir(path) if v.isdigit() and os.path.isfile(os.path.join(path, v, "saved_model.pb"))
    ]
    return os.path.join(path, str(max(versions))) if versions else None


def _shape_text(shape):
    return "(" + ", ".join("any" if n is None else str(n) for n in shape.as_list()) + ")"
