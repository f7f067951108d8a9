"""`keras-vit predict`: top-k labels for image files from a `.keras`, SavedModel, `.tflite` or `.onnx` model.

Image files are read by `keras_vit.images.read_image`, the reader training
uses too.
"""

import json
import os
import sys

import keras
import numpy as np
from PIL import Image

from keras_vit import run_folder
from keras_vit.deploy import integrity, onnx
from keras_vit.deploy.litert import LiteRTModel, resized_pixels
from keras_vit.deploy.precision import with_precision
from keras_vit.deploy.saved_model import load_signature, version_folder
from keras_vit.images import IMAGE_EXTENSIONS, MAX_SIDE, read_image  # noqa: F401  (0.2.0 read them from here)
from keras_vit.model import model_config
from keras_vit.preprocessing import naflex_inputs, preprocessing_model
from keras_vit.views.adaptive import depth_map, halting_model
from keras_vit.views.attention import attention_model
from keras_vit.visualize import (
    display_size,
    grid_shape,
    has_class_token,
    last_block_maps,
    num_prefix_tokens,
    rollout_map,
    save_attention_figure,
    save_overlay,
)


def image_files(paths):
    """Expands folders (their image files, sorted) and keeps files as given."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}.")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"No such image file or folder: {path}")
    return files


def load_predictor(path, top_k=5, precision="float32"):
    """Returns `predict(image) -> [(label, probability), ...]` (top-k, best first) for a model file.

    Args:
        path: a `.keras` file or its folder (with `keras_vit.json`), a
            SavedModel folder written by `keras-vit export`, or a `.tflite`
            file (with `labels.txt` beside it or one folder up), or an `.onnx`
            file written by `keras-vit export` (its labels inside). A folder of
            SavedModel versions (`saved_model/vit`) means its highest version,
            as for TF Serving. A checkpoint folder (timm's or transformers',
            with its `config.json`) is built from its files; without a head it
            predicts the pooled features (an array instead of the labels).
            A NaFlex model (SigLIP 2, `ViTConfig.naflex`) sees each image at
            its own aspect ratio.
        top_k: how many labels to return per image. Defaults to `5`.
        precision: `"bfloat16"` computes a `.keras` model in bfloat16
            (`keras_vit.deploy.precision`). Defaults to `"float32"`.

    Raises:
        keras_vit.deploy.integrity.IntegrityError: an exported file differs
            from the SHA-256 its export recorded in `SHA256SUMS`.
    """
    path = str(path)
    if precision != "float32" and not run_folder.model_path(path):
        raise ValueError(
            f"--precision {precision} applies to .keras models; --model {path} is an exported file "
            "(export a bfloat16 SavedModel with keras-vit export --bfloat16)."
        )
    saved_model = version_folder(path)  # a version folder, or TF Serving's base path holding them
    if saved_model:
        return _saved_model_predictor(saved_model, top_k)
    if path.endswith(".tflite"):
        return _tflite_predictor(path, top_k)
    if path.endswith(".onnx"):
        return _onnx_predictor(path, top_k)
    if run_folder.model_path(path):
        return _keras_predictor(path, top_k, precision)
    saved_model = _saved_model_below(path)
    if saved_model:
        return _saved_model_predictor(saved_model, top_k)
    if os.path.isfile(os.path.join(path, "config.json")):
        return _checkpoint_predictor(path, top_k)
    raise ValueError(
        f"--model {path} is none of: a .keras file or its folder, a SavedModel folder "
        "(with saved_model.pb) or a folder holding one (an export folder), a .tflite file, an .onnx file, "
        "a checkpoint folder with its config.json."
    )


def _saved_model_below(path):
    """The SavedModel in a folder that holds one, as `keras-vit export` lays them out.

    `RUN/export` and `RUN/export/saved_model` hold `saved_model/<name>/<version>/`; taken only
    when there is exactly one model name, so that the choice is never a guess.
    """
    for base in (path, os.path.join(path, "saved_model")):
        if os.path.isdir(base):
            found = [version_folder(os.path.join(base, name)) for name in sorted(os.listdir(base))]
            found = [folder for folder in found if folder]
            if len(found) == 1:
                return found[0]
    return None


def _keras_predictor(path, top_k, precision="float32"):
    model, metadata, _ = run_folder.load_model(path)
    model = with_precision(model, precision)
    preprocess = input_preprocessor(model, metadata)
    return lambda image: _top_k(model.predict_on_batch(preprocess(image[None]))[0], metadata["labels"], top_k)


def input_preprocessor(model, metadata):
    """`(B, H, W, C)` uint8 images -> `model`'s input: resized to `keras_vit.json`'s size, or for a NaFlex
    model cut into patches at each image's own aspect ratio (within `max_num_patches` of the metadata,
    else as many patches as the position table has: SigLIP 2's processors' 256)."""
    if not run_folder.takes_patches(model):
        return preprocessing_model(metadata["image_size"], metadata["scaling"])
    config = model_config(model)
    budget = metadata.get("max_num_patches") or config.grid[0] * config.grid[1]
    return lambda images: naflex_inputs(list(images), config.patch_size, budget, metadata["scaling"])


def _checkpoint_predictor(path, top_k):
    """A timm or transformers folder: its model built from its files; the pooled features without a head."""
    from keras_vit.builders import build_from_checkpoint
    from keras_vit.checkpoints.families import family

    model, report = build_from_checkpoint(path)
    scaling = report.scaling or (family(report.family).scaling if report.family else None) or "vit"
    config = report.config
    metadata = {"image_size": config.image_size, "scaling": scaling}
    preprocess = input_preprocessor(model, metadata)
    if not config.include_top:
        return lambda image: np.asarray(model.predict_on_batch(preprocess(image[None]))[0])
    labels = [f"class_{i}" for i in range(config.num_classes)]  # a checkpoint folder names no labels
    return lambda image: _top_k(model.predict_on_batch(preprocess(image[None]))[0], labels, top_k)


def _saved_model_predictor(path, top_k):
    integrity.verify(path)
    signature = load_signature(path, "serving_uint8")
    exported_k = signature.outputs["top_k_labels"].shape[-1]
    num_classes = signature.outputs["probabilities"].shape[-1]
    if top_k > exported_k and exported_k < num_classes:  # k is fixed inside the graph at export
        raise ValueError(
            f"--top-k={top_k} but the SavedModel {path} returns its top {exported_k} only "
            f"(fixed at export); ask for at most {exported_k}, or use the .keras or .tflite model."
        )

    def predict(image):
        outputs = signature(image[None])
        labels = [label.decode() for label in outputs["top_k_labels"][0]]
        return list(zip(labels, outputs["top_k_probabilities"][0].tolist()))[:top_k]

    return predict


def _tflite_predictor(path, top_k):
    integrity.verify(path)
    model = LiteRTModel(path)
    labels = _read_labels(path)
    if len(labels) != model.num_classes:
        raise ValueError(
            f"{path} has {model.num_classes} outputs but the labels.txt found for it has "
            f"{len(labels)} lines; use the labels.txt exported with this model."
        )
    return lambda image: _top_k(model(resized_pixels(image[None], model.image_size))[0], labels, top_k)


def _onnx_predictor(path, top_k):
    if onnx.missing_packages():
        raise ValueError(f"--model {path} needs ONNX Runtime: {onnx.INSTALL}.")
    integrity.verify(path)
    model = onnx.ONNXModel(path)
    labels = model.labels or _read_labels(path)
    return lambda image: _top_k(model(resized_pixels(image[None], model.image_size))[0], labels, top_k)


def _read_labels(model_path):
    folder = os.path.dirname(os.path.abspath(model_path))
    for candidate in (os.path.join(folder, "labels.txt"), os.path.join(os.path.dirname(folder), "labels.txt")):
        if os.path.isfile(candidate):
            integrity.verify(candidate)
            with open(candidate) as f:
                return f.read().splitlines()
    raise FileNotFoundError(f"No labels.txt beside {model_path} or one folder up; `keras-vit export` writes one.")


def explain_names(files):
    """A distinct name per image file for its attention maps: `a/1.png`, `b/1.png` -> `1`, `1_2`.

    Files from different folders may share a name, and each would overwrite
    the maps of the one before.
    """
    names, taken = [], set()
    for path in files:
        stem = name = os.path.splitext(os.path.basename(path))[0]
        count = 1
        while name in taken:
            count += 1
            name = f"{stem}_{count}"
        taken.add(name)
        names.append(name)
    return names


def _top_k(logits, labels, top_k):
    """`[(label, probability)]` of the `top_k` most probable classes."""
    logits = np.asarray(logits, dtype=np.float64)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    return [(labels[i], float(probabilities[i])) for i in np.argsort(-probabilities)[:top_k]]


def predict_files(paths, model, *, top_k=5, explain=None, as_json=False, precision="float32"):
    """`keras-vit predict`: prints each image's top-k labels; returns how many files could not be read.

    Args:
        paths: image files or folders of them.
        model: what `load_predictor` takes.
        top_k: labels per image. Defaults to `5`.
        explain: a folder to write each image's attention maps into (`.keras`
            models only), or `None`.
        as_json: print one JSON object per image and line instead (for scripts):
            `{"path", "top_k": [{"label", "probability"}], "explained": [...]}`, or
            `{"path", "error"}` for a file that could not be read.
        precision: `"float32"` or `"bfloat16"` (`.keras` models). Defaults to `"float32"`.
    """
    if top_k < 1:
        raise ValueError(f"--top-k={top_k} must be at least 1.")
    if explain and os.path.exists(explain) and not os.path.isdir(explain):
        raise ValueError(f"--explain {explain} is a file; give a folder for the attention maps.")
    files = image_files(paths)
    predict = load_predictor(model, top_k, precision)
    explainer = Explainer(model) if explain else None
    failures, unwritable = 0, None
    for path, name in zip(files, explain_names(files)):
        try:
            image = read_image(path)
        except ValueError as error:  # one bad file among many: say so and go on
            if as_json:
                print(json.dumps({"path": path, "error": str(error)}))
            print(f"skipped: {error}", file=sys.stderr)
            failures += 1
            continue
        top = predict(image)
        if isinstance(top, np.ndarray):  # a feature extractor: its pooled features, not labels
            _print_features(path, top, as_json)
            continue
        written = []
        if explainer and unwritable is None:
            try:
                written = explainer.write(image, name, explain)
            except OSError as error:  # a read-only or full --explain folder: the predictions still print
                unwritable = error
        if as_json:
            top = [{"label": label, "probability": probability} for label, probability in top]
            print(json.dumps({"path": path, "top_k": top, **({"explained": written} if explainer else {})}))
            continue
        print(path)
        for label, probability in top:
            print(f"  {probability:.4f}  {label}")
        for file in written:
            print(f"  wrote {file}")
    if unwritable is not None:
        raise unwritable  # once every prediction is out: `keras-vit predict` says it in one line
    return failures


def _print_features(path, features, as_json):
    if as_json:
        print(json.dumps({"path": path, "features": features.tolist()}))
        return
    shown = ", ".join(f"{value:.4f}" for value in features[:4])
    print(f"{path}\n  features ({features.shape[0]},), norm {np.linalg.norm(features):.4f}: [{shown}, ...]")


# --- explaining predictions: attention maps ----------------------------------------


class Explainer:
    """Attention maps of a trained model folder (or `.keras` file) for raw images.

    Args:
        path: what `keras-vit train` wrote: a folder with `model.keras` and
            `keras_vit.json`, or the `.keras` file itself.
    """

    def __init__(self, path):
        path = str(path)
        if run_folder.model_path(path) is None:
            raise ValueError(
                f"--explain needs the Keras model (a .keras file or its folder), not {path}: "
                "SavedModel and LiteRT files do not expose attention weights."
            )
        model, self.metadata, _ = run_folder.load_model(path)
        if run_folder.takes_patches(model):
            raise ValueError(
                f"--explain draws maps on one fixed patch grid; {path} is a NaFlex model (each image at its own "
                "grid), which it does not explain yet: leave --explain out."
            )
        self.model = attention_model(model)
        # An A-ViT model also shows how many blocks each patch ran through (its rollout is of every token).
        self.halting = halting_model(model) if model_config(model).adaptive_tokens else None
        self.num_layers = model_config(model).num_layers
        self.grid = grid_shape(model, self.metadata["image_size"])  # images are resized to it
        self.prefix, self.class_token = num_prefix_tokens(model), has_class_token(model)
        self.preprocess = preprocessing_model(self.metadata["image_size"], self.metadata["scaling"])

    def __call__(self, image):
        """`(label, rollout (R, C), last block's heads (h, R, C))` for one uint8 `(H, W, 3)` image."""
        outputs = keras.tree.map_structure(
            keras.ops.convert_to_numpy, self.model(self.preprocess(np.asarray(image)[None]), training=False)
        )
        attention = outputs["attention"]
        label = self.metadata["labels"][int(np.argmax(outputs["logits"][0]))]
        return (
            label,
            rollout_map(attention, self.grid, self.prefix, self.class_token)[0],
            last_block_maps(attention, self.grid, self.prefix, self.class_token)[0],
        )

    def halting_depth(self, image):
        """`(R, C)` blocks each patch ran through (A-ViT models), from 1 to the model's depth."""
        depth = self.halting(self.preprocess(np.asarray(image)[None]), training=False)["depth"]
        return depth_map(keras.ops.convert_to_numpy(depth), self.grid)[0]

    def write(self, image, name, folder):
        """Writes `<name>_rollout.png` (overlay) and `<name>_attention.png` (all panels), and for an
        A-ViT model `<name>_halting.png` (depth per patch, deep = red); returns their paths."""
        os.makedirs(folder, exist_ok=True)
        label, rollout, heads = self(image)
        image = np.asarray(image)
        shown = np.asarray(Image.fromarray(image).resize(display_size(image.shape)[::-1], Image.Resampling.NEAREST))
        written = [
            save_overlay(os.path.join(folder, f"{name}_rollout.png"), shown, rollout),
            save_attention_figure(
                os.path.join(folder, f"{name}_attention.png"), shown, rollout, heads, title=f"predicted: {label}"
            ),
        ]
        if self.halting is not None:  # coloured over 1..L, not the map's own range: all-early stays blue
            depth = self.halting_depth(image)
            path = os.path.join(folder, f"{name}_halting.png")
            written.append(save_overlay(path, shown, depth, limits=(1, self.num_layers)))
        return written
