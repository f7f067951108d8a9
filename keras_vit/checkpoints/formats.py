"""Checkpoint files: which files a path holds, what format each is (by content), their arrays, their layout.

A path is a file (`.npz`, `.safetensors`, a keras_vit `.keras`) or a model folder as the Hugging
Face Hub serves it (`model.safetensors` or shards listed in `model.safetensors.index.json`, and a
`config.json`). The format comes from the bytes, never the name; PyTorch pickles are refused
(unpickling runs code). `detect_layout` names the library that wrote a dict of arrays; the
source modules (`big_vision.py`, `timm.py`, `transformers.py`) translate it to the canonical one.
"""

import json
import os
import re
import struct
import zipfile

import keras
import numpy as np
from safetensors.numpy import load_file

from keras_vit.checkpoints import timm, transformers
from keras_vit.checkpoints.canonical import CheckpointError, model_variables

WEIGHTS, SHARD_INDEX, CONFIG = "model.safetensors", "model.safetensors.index.json", "config.json"
PREPROCESSOR = "preprocessor_config.json"  # transformers' image processor: the pixel statistics
ORIGINAL, BIG_VISION, TIMM, HUGGING_FACE = "original", "big_vision", "timm", "hugging_face"
KERAS = "keras"  # a `.keras` model saved by keras_vit (a previous run's model.keras)
FORMATS = (ORIGINAL, BIG_VISION, TIMM, HUGGING_FACE, KERAS)

_NO_PICKLES = (
    "PyTorch .bin/.pth pickles are not read, because unpickling runs code: convert them with "
    "`safetensors.torch.save_file(state_dict, 'model.safetensors')`."
)


__all__ = ["CheckpointError", "FORMATS", "find_files", "sniff_format", "detect_layout"]
# --- reading files -----------------------------------------------------------------


def sniff_format(path):
    """`"npz"`, `"keras"` or `"safetensors"` from the file's content (never its name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder; pass the checkpoint file inside it.") from None
    if head.startswith(b"PK"):
        return "keras" if _is_keras_archive(path) else "npz"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise CheckpointError(
        f"{path} is neither an .npz archive nor a safetensors file (first bytes {head[:8]!r}). {_NO_PICKLES}"
    )


def _is_keras_archive(path):
    """A `.keras` file is a zip too, holding `config.json` and the weights instead of `.npy` arrays."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False  # read_npz says what is wrong with it
    return "config.json" in names and any(name.startswith("model.weights") for name in names)


def read_keras(path):
    """`(weights in the original layout, the model)` of a `.keras` keras_vit model (the keys `save_npz` writes)."""
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a file it cannot rebuild
        raise CheckpointError(
            f"{path} is a .keras file that Keras cannot load ({type(e).__name__}: {e}). Only models "
            "saved by keras_vit (such as a run's model.keras) can be read as checkpoints."
        ) from e
    return {key: np.asarray(variable.numpy(), "float32") for key, variable in model_variables(model).items()}, model


def read_npz(path):
    """All arrays of an `.npz`, read eagerly and without unpickling."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable .npz archive (truncated or corrupt?): {e}") from e
    arrays = {}
    with archive:
        if any(name.endswith(".pkl") for name in archive.files):
            raise CheckpointError(f"{path} is a PyTorch pickle (torch.save), not an .npz. {_NO_PICKLES}")
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise CheckpointError(
                        f"{path} holds a pickled object array at key {key!r}. Pickles can run code "
                        "when loaded, so they are refused; a real checkpoint holds only numeric arrays."
                    ) from e
                raise CheckpointError(f"{path}: array {key!r} cannot be read: {e}") from e
            except (zipfile.BadZipFile, EOFError, OSError, struct.error) as e:
                raise CheckpointError(f"{path}: array {key!r} is truncated or corrupt: {e}") from e
    return arrays


def read_safetensors(path):
    """All tensors of a safetensors file as NumPy arrays (no torch needed)."""
    try:
        return dict(load_file(path))
    except Exception as e:  # safetensors raises its own error type for corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e


def find_files(path):
    """`(weight files, config dict or None)` for a file or a hub folder."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return [path], None
    index = os.path.join(path, SHARD_INDEX)
    if os.path.exists(index):
        shards = sorted(set(read_json(index)["weight_map"].values()))
        weights = [os.path.join(path, shard) for shard in shards]
    elif os.path.exists(os.path.join(path, WEIGHTS)):
        weights = [os.path.join(path, WEIGHTS)]
    else:
        found = sorted(name for name in os.listdir(path) if name.endswith((".safetensors", ".npz")))
        if len(found) != 1:
            raise CheckpointError(
                f"{path} is a folder without {WEIGHTS} (it holds {found or 'no weights'}); pass the checkpoint "
                "file itself, or a model folder as downloaded from the Hugging Face Hub."
            )
        weights = [os.path.join(path, found[0])]
    config = os.path.join(path, CONFIG)
    return weights, read_json(config) if os.path.exists(config) else None


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable JSON file: {e}") from e


# --- detecting a layout ------------------------------------------------------------


def detect_layout(arrays):
    """Names the layout of a flat key -> array dict."""
    keys = {re.sub(r"^opt/target/", "", k) for k in arrays}
    if (
        any(k.startswith("params/") for k in keys)
        or "pos_embedding" in keys
        or any(k.startswith("Transformer/encoderblock/") for k in keys)
    ):
        return BIG_VISION
    if "embedding/kernel" in keys:
        return ORIGINAL
    if timm.WIDTH_KEY in keys or timm.NAFLEX_WIDTH_KEY in keys:
        return TIMM
    if any(k.endswith(transformers.WIDTH_KEYS) for k in keys):
        return HUGGING_FACE
    raise CheckpointError(
        f"Unrecognised checkpoint layout (first keys {sorted(keys)[:5]}); expected the original ViT "
        ".npz, big_vision .npz (ViT or SigLIP), or a timm / Hugging Face state dict of a ViT, DeiT, "
        "DINOv2, SigLIP or CLIP image model."
    )
