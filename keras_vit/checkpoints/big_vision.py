"""big_vision and the original google-research/vision_transformer `.npz` files <-> the canonical layout.

The original layout is the canonical one (optionally under `opt/target/`). big_vision differs by
a `params/` prefix, other module indices, optionally a scanned (stacked) encoder, and a position
embedding added *before* the class token is prepended, so it has no class slot. Its two-tower
models (SigLIP, LiT) hold the image tower under `params/img/`, with the MAP head named as the
canonical layout names it (`MAPHead_0/...`).
"""

import re

from keras_vit.checkpoints.canonical import CLS, ORIGINAL_BLOCK, POSEMB, fold_prefix_slots, insert_prefix_slots

# The module names that differ between the original code and big_vision.
_RENAMES = {
    "MultiHeadDotProductAttention_1/": "MultiHeadDotProductAttention_0/",
    "LayerNorm_2/": "LayerNorm_1/",
    "MlpBlock_3/": "MlpBlock_0/",
}
TWO_TOWER_EXTRAS = re.compile(r"(params/)?(txt/|t$|b$)")  # the text tower, the loss' temperature and bias


def from_original(arrays):
    """The original layout, as its training checkpoints store it (optionally under `opt/target/`)."""
    return {re.sub(r"^opt/target/", "", k): v for k, v in arrays.items()}


def from_big_vision(arrays):
    params = {re.sub(r"^(params/|opt/target/)", "", k): v for k, v in arrays.items()}
    if any(key.startswith("img/") for key in params):
        # A two-tower model (SigLIP, LiT): its image tower, without the text tower and the
        # temperature and bias (`t`, `b`) of the contrastive loss.
        params = {key[len("img/") :]: value for key, value in params.items() if key.startswith("img/")}
    params = _unscan(params)
    out = {}
    for key, value in params.items():
        for original, big_vision in _RENAMES.items():
            key = key.replace(big_vision, original) if key.startswith("Transformer/encoderblock_") else key
        out[key] = value
    if "pos_embedding" in out:
        out[POSEMB] = out.pop("pos_embedding")
        # big_vision adds the embedding before prepending the class token: a zero class slot gives the
        # same sums, since our model adds it after.
        insert_prefix_slots(out, tokens=(CLS,))
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
            for original, big_vision in _RENAMES.items():
                key = key.replace(original, big_vision)
        out[key] = value
    fold_prefix_slots(out, tokens=(CLS,))  # cls + pos[0] is what the first block sees
    out["pos_embedding"] = out.pop(POSEMB)
    return {f"params/{k}": v for k, v in out.items()}
