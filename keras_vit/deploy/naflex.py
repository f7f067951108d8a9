"""Exporting a NaFlex model (SigLIP 2, `ViTConfig.naflex`): its three inputs instead of images.

    saved_model/<name>/<version>/   `serving_default`: patches (B, N, p*p*C) float32, spatial_shapes (B, 2)
                                    int32, patch_mask (B, N) int32, any B and N -> logits (or features)
    tflite/vit_float32.tflite       the same at a fixed N (the patch budget), built-in operators only
    onnx/vit.onnx                   the same at that N, when tf2onnx, onnx and onnxruntime are installed

The model resizes its position table per image with two interpolation matrices built from
`spatial_shapes` (`keras_vit.layers.naflex_resize_weights`): matmuls, floor, comparisons and a
division, which every target has. The SavedModel takes any N; LiteRT and ONNX files are traced at
one N (`fixed_length_model`), which the images are padded to (`keras_vit.preprocessing.naflex_inputs`
with `max_num_patches=N`). Pixels are cut into patches outside the files, by that function.

Legend: `B` batch, `N` patches (padded), `p` patch size, `C` channels.
"""

import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_vit.deploy import litert, parity
from keras_vit.model import ViTLayers, forward, model_config, naflex_inputs

INPUTS = ("patches", "spatial_shapes", "patch_mask")


def _specs(config, num_patches=None):
    rows, cols = config.patch_size
    return (
        tf.TensorSpec((None, num_patches, rows * cols * config.num_channels), tf.float32, name="patches"),
        tf.TensorSpec((None, 2), tf.int32, name="spatial_shapes"),
        tf.TensorSpec((None, num_patches), tf.int32, name="patch_mask"),
    )


def _outputs(model, values, labels, top_k):
    output = tf.cast(model(dict(zip(INPUTS, values)), training=False), tf.float32)
    if not labels:  # a feature extractor (no head)
        return {"features": output}
    probabilities = tf.nn.softmax(output)
    top = tf.math.top_k(probabilities, k=min(top_k, len(labels)))
    return {
        "logits": output,
        "probabilities": probabilities,
        "top_k_probabilities": top.values,
        "top_k_indices": top.indices,
        "top_k_labels": tf.gather(tf.constant(list(labels)), top.indices),
    }


def write_saved_model(model, path, labels=None, top_k=5):
    """`serving_default` over the three inputs (any batch, any N) -> `logits`, `probabilities`, `top_k_*`
    with `labels` (a head's), else `features`."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda patches, spatial_shapes, patch_mask: _outputs(
            model, (patches, spatial_shapes, patch_mask), labels, top_k
        ),
        input_signature=list(_specs(model_config(model))),
    )
    archive.write_out(str(path), verbose=False)
    return path


def fixed_length_model(model, num_patches):
    """The same layers (the same weights) taking exactly `num_patches` patches per image: LiteRT's and ONNX's graph."""
    inputs = naflex_inputs(model_config(model), num_patches)
    return keras.Model(inputs, {"logits": forward(ViTLayers.of(model), inputs)}, name=f"{model.name}_n{num_patches}")


def write_litert(model, path, num_patches):
    """A float32 `.tflite` file of `fixed_length_model(model, num_patches)`, built-in operators only."""
    fixed = fixed_length_model(model, num_patches)
    config = model_config(model)
    archive = keras.export.ExportArchive()
    archive.track(fixed)
    archive.add_endpoint(
        "serve",
        lambda patches, spatial_shapes, patch_mask: fixed(dict(zip(INPUTS, (patches, spatial_shapes, patch_mask)))),
        input_signature=list(_specs(config, num_patches)),
    )
    with tempfile.TemporaryDirectory() as folder:
        archive.write_out(folder, verbose=False)
        return litert.convert(folder, path, "float32")


def write_onnx(model, path, num_patches):
    """An `.onnx` file of `fixed_length_model(model, num_patches)` (tf2onnx), checked by ONNX Runtime."""
    import tf2onnx

    fixed = fixed_length_model(model, num_patches)
    specs = _specs(model_config(model), num_patches)

    @tf.function(input_signature=specs)
    def serve(patches, spatial_shapes, patch_mask):
        return fixed(dict(zip(INPUTS, (patches, spatial_shapes, patch_mask))), training=False)

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=specs)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return path


class NaFlexLiteRT:
    """A NaFlex `.tflite` file: `model(inputs) -> logits` for `naflex_inputs`' dict, any batch size."""

    def __init__(self, path, num_threads=None):
        self.path = str(path)
        self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
        self.inputs = {next(k for k in INPUTS if k in d["name"]): d for d in self.interpreter.get_input_details()}
        self.num_patches = int(self.inputs["patch_mask"]["shape"][1])
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, inputs):
        if inputs["patch_mask"].shape[1] != self.num_patches:
            raise ValueError(
                f"{self.path} takes {self.num_patches} patches per image; got {inputs['patch_mask'].shape[1]}: pad "
                f"with keras_vit.preprocessing.naflex_inputs(..., max_num_patches={self.num_patches})."
            )
        for name, detail in self.inputs.items():
            self.interpreter.resize_tensor_input(detail["index"], inputs[name].shape)
        self.interpreter.allocate_tensors()
        for name, detail in self.inputs.items():
            self.interpreter.set_tensor(detail["index"], np.asarray(inputs[name], detail["dtype"]))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()


class NaFlexONNX:
    """A NaFlex `.onnx` file run by ONNX Runtime: `model(inputs) -> logits`."""

    def __init__(self, path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, inputs):
        feed = {name: np.asarray(inputs[name], "float32" if name == "patches" else "int32") for name in INPUTS}
        return self.session.run(None, feed)[0]


def export_rows(model, metadata, root, name, version, inputs, reference, labels, with_onnx):
    """`keras-vit export` of a NaFlex run: the three files above and their parity rows against the Keras
    model's `reference` logits on `inputs` (`naflex_inputs` of the test images, padded to the budget)."""
    from keras_vit.deploy import onnx

    def row(artifact, path, predict, started):
        written = time.perf_counter()
        latency = litert.latency_ms(predict, {key: value[:1] for key, value in inputs.items()})
        found = parity.artifact_row(artifact, path, predict(inputs), reference, labels, latency, root=root)
        found["seconds"] = {"write": round(written - started, 2), "measure": round(time.perf_counter() - written, 2)}
        print(f"  wrote {found['path']} ({found['size_mb']:.1f} MB) in {found['seconds']['write']:.1f} s", flush=True)
        return found

    started = time.perf_counter()
    path = os.path.join(root, "saved_model", name, str(int(version)))
    write_saved_model(model, path, metadata["labels"])
    signature = tf.saved_model.load(path).signatures["serving_default"]

    def saved(batch):
        return signature(**{key: tf.constant(batch[key]) for key in INPUTS})["logits"].numpy()

    rows = [row("SavedModel (serving_default: patches, spatial_shapes, patch_mask)", path, saved, started)]
    num_patches = inputs["patch_mask"].shape[1]
    os.makedirs(os.path.join(root, "tflite"))
    started = time.perf_counter()
    path = write_litert(model, os.path.join(root, "tflite", "vit_float32.tflite"), num_patches)
    rows.append(row(f"LiteRT float32 (N={num_patches})", path, NaFlexLiteRT(path), started))
    if with_onnx is False or onnx.missing_packages():
        reason = "not asked for (--no-onnx)" if with_onnx is False else f"needs {', '.join(onnx.missing_packages())}"
        return rows + [{"artifact": "ONNX (ONNX Runtime)", "status": "skipped", "reason": reason}]
    os.makedirs(os.path.join(root, "onnx"))
    started = time.perf_counter()
    path = write_onnx(model, os.path.join(root, "onnx", "vit.onnx"), num_patches)
    return rows + [row(f"ONNX (N={num_patches})", path, NaFlexONNX(path), started)]
