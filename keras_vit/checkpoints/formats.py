"""Reading and writing the published ViT checkpoint layouts.

Every format is translated to and from one canonical form: the flat key ->
array dict of the original google-research/vision_transformer `.npz` files,
in Flax's shapes. Those shapes are exactly Keras': a Conv2D kernel is
`(p, p, C, D)` in both, and Keras' `MultiHeadAttention` projections are
`EinsumDense`s shaped like Flax's `DenseGeneral` (`(D, heads, head_dim)` for
query/key/value, `(heads, head_dim, D)` for the output). So only the other
layouts need arithmetic:

- big_vision: a `params/` prefix, other module indices, optionally a scanned
  (stacked) encoder, and a position embedding added *before* the class token
  is prepended, so it has no class slot.
- big_vision two-tower models (SigLIP): the image tower under `params/img/`, with its
  MAP head named as the canonical layout names it (`MAPHead_0/...`).
- timm and Hugging Face (PyTorch, in `torch_layouts.py`): `(out, in)` Linear
  weights, `(D, C, p, p)` convolutions, fused `qkv` / `kv` / `in_proj`
  projections, and the families' extra tensors (LayerScale, registers,
  distillation token and head, CLIP's pre-norm, SigLIP's MAP head), one table
  per library. timm's position
  embedding is left as stored: with `no_embed_class` it has no prefix slots,
  and nothing in the state dict says so; `pretrained.describe` and
  `adapt.adapt_prefix_slots` tell from token counts.

Legend: `D` hidden_dim, `H` heads, `d` head_dim, `C` channels, `p` patch.
"""

import re
import struct
import zipfile

import keras
import numpy as np
from safetensors.numpy import load_file

from keras_vit.checkpoints.keys import model_variables
from keras_vit.checkpoints.torch_layouts import HUGGING_FACE_KEYS, ORIGINAL_BLOCK, TIMM_KEYS, from_torch

ORIGINAL, BIG_VISION, TIMM, HUGGING_FACE = "original", "big_vision", "timm", "hugging_face"
KERAS = "keras"  # a `.keras` model saved by keras_vit (a previous run's model.keras)
FORMATS = (ORIGINAL, BIG_VISION, TIMM, HUGGING_FACE, KERAS)

# The module names that differ between the original code and big_vision.
_BIG_VISION_RENAMES = {
    "MultiHeadDotProductAttention_1/": "MultiHeadDotProductAttention_0/",
    "LayerNorm_2/": "LayerNorm_1/",
    "MlpBlock_3/": "MlpBlock_0/",
}


_NO_PICKLES = (
    "PyTorch .bin/.pth pickles are not read, because unpickling runs code: convert them with "
    "`safetensors.torch.save_file(state_dict, 'model.safetensors')`."
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model; says every reason."""


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
    if "patch_embed.proj.weight" in keys:
        return TIMM
    if any(
        k.endswith(("embeddings.patch_embeddings.projection.weight", "embeddings.patch_embedding.weight")) for k in keys
    ):
        return HUGGING_FACE
    raise CheckpointError(
        f"Unrecognised checkpoint layout (first keys {sorted(keys)[:5]}); expected the original ViT "
        ".npz, big_vision .npz (ViT or SigLIP), or a timm / Hugging Face state dict of a ViT, DeiT, "
        "DINOv2, SigLIP or CLIP image model."
    )


def to_canonical(arrays, layout, num_heads):
    """Any supported layout -> the original layout (see the module docstring).

    Keys that have no place in a plain ViT (a MAP head, timm's `fc_norm`...)
    are passed through under their own names, so that loading reports them.
    `num_heads` is needed only for the PyTorch layouts, whose projections
    store heads flattened.
    """
    if layout == ORIGINAL:
        return {re.sub(r"^opt/target/", "", k): v for k, v in arrays.items()}
    if layout == BIG_VISION:
        return from_big_vision(arrays)
    return from_torch(arrays, TIMM_KEYS if layout == TIMM else HUGGING_FACE_KEYS, num_heads)


# --- big_vision --------------------------------------------------------------------


def from_big_vision(arrays):
    params = {re.sub(r"^(params/|opt/target/)", "", k): v for k, v in arrays.items()}
    if any(key.startswith("img/") for key in params):
        # A two-tower model (SigLIP, LiT): its image tower, without the text tower and the
        # temperature and bias (`t`, `b`) of the contrastive loss.
        params = {key[len("img/") :]: value for key, value in params.items() if key.startswith("img/")}
    params = _unscan(params)
    out = {}
    for key, value in params.items():
        for original, big_vision in _BIG_VISION_RENAMES.items():
            key = key.replace(big_vision, original) if key.startswith("Transformer/encoderblock_") else key
        out[key] = value
    if "pos_embedding" in out:
        posemb = out.pop("pos_embedding")
        if "cls" in out:
            # big_vision adds the embedding before prepending the class token: an all-zero class slot
            # here gives the same sums, since our model adds it after.
            posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
        out["Transformer/posembed_input/pos_embedding"] = posemb
    return out


def _unscan(params):
    """A scanned encoder (`encoderblock/...` stacked on axis 0) -> one entry per block."""
    out = {}
    for key, value in params.items():
        if key.startswith("Transformer/encoderblock/"):
            rest = key[len("Transformer/encoderblock/") :]
            for i, block in enumerate(value):
                out[ORIGINAL_BLOCK.format(i) + rest] = block
        else:
            out[key] = value
    return out


def to_big_vision(canonical):
    """The original layout -> big_vision's (`params/` prefix, posemb without class slot)."""
    out = {}
    for key, value in canonical.items():
        if key.startswith("Transformer/encoderblock_"):
            for original, big_vision in _BIG_VISION_RENAMES.items():
                key = key.replace(original, big_vision)
        out[key] = value
    posemb = out.pop("Transformer/posembed_input/pos_embedding")
    if "cls" in out:
        # Fold the class slot into the token itself: cls + pos[0] is what the first block sees.
        out["cls"] = out["cls"] + posemb[:, :1]
        posemb = posemb[:, 1:]
    out["pos_embedding"] = posemb
    return {f"params/{k}": v for k, v in out.items()}
