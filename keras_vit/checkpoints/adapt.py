"""Adapting a checkpoint (in the original layout) to the model it is loaded into.

Each step edits the `source` dict of arrays in place, appends one sentence per
change to `notes`, and leaves anything it cannot adapt for the shape check to
report. `targets` maps the same keys to the model's variables.
"""

import math

import numpy as np

from keras_vit.checkpoints.canonical import (
    EMBEDDING,
    HEAD,
    MAP_ATTENTION,
    POSEMB,
    PRE_LOGITS,
    fold_prefix_slots,
    insert_prefix_slots,
    prefix_count,
)
from keras_vit.checkpoints.resample import resample_position_embedding, square_grid
from keras_vit.config import to_pair


def adapt(targets, source, notes, grid, reset_head, drop_representation, **resize):
    """Runs every adaptation; returns the problems found on the way (strings)."""
    # A head trained on the dropped layer's outputs is meaningless without it.
    dropped = adapt_representation(targets, source, drop_representation, notes)
    adapt_head(targets, source, True if dropped else reset_head, notes)
    adapt_channels(targets, source, notes)
    split_map_heads(targets, source)
    return adapt_position_embedding(targets, source, notes, grid, **resize)


def split_map_heads(targets, source):
    """The MAP head's projections split into the model's MAP heads, where the file was read with the blocks' heads.

    A PyTorch file stores them flat (`H*d`), and its reader splits them by the blocks' heads; a MAP
    head with its own count (Perception Encoder's 8) takes the same numbers in another split.
    """
    for key, target in targets.items():
        array = source.get(key)
        shape = tuple(target.shape)
        # The same `D x D` (or `D`) numbers: a kernel of another width has another size, left to the shape check.
        if (
            key.startswith(MAP_ATTENTION)
            and array is not None
            and array.shape != shape
            and array.size == math.prod(shape)
        ):
            source[key] = np.reshape(array, shape)


def adapt_prefix_slots(targets, source, notes, source_grid, grid, insert=True):
    """Position-embedding slots for the prefix tokens, as the model has them.

    The original layout has a slot per prefix token (class, distillation, registers) unless the
    model was built with `embed_prefix_tokens=False` (timm's `no_embed_class`). A file with slots
    loaded into a model without them folds each slot into its token (the same sums). A file
    without them (timm stores no_embed_class models so, and its state dict does not say which)
    loaded into a model with slots gets zero slots (`insert`, for timm files); whether it has
    them is told by token counts: `source_grid`'s when given, else the model's (the same grid,
    with or without the slots). Only for a checkpoint at another, unnamed grid does the shape
    decide, and then the reading is said, since a square length is the only hint.
    """
    count = prefix_count(source)
    if not count or POSEMB not in source or POSEMB not in targets or prefix_count(targets) != count:
        return
    embedding = source[POSEMB]
    length, model_length = embedding.shape[1], targets[POSEMB].shape[1]
    patches = grid[0] * grid[1]
    if model_length == patches:  # the model adds no embedding to its prefix tokens
        if length == patches + count:
            fold_prefix_slots(source)
            notes.append(f"folded the position embedding's {count} prefix slot(s) into the tokens")
        return
    if not insert:
        return
    if source_grid is not None:
        rows, cols = to_pair(source_grid, "source_grid")
        has_slots = length != rows * cols  # a length fitting neither is reported by the resize
    elif length in (model_length, model_length - count):
        has_slots = length == model_length
    else:
        has_slots = _is_square(length - count) or not _is_square(length)  # timm's default is the slots
        if not has_slots:
            notes.append(
                f"read the position embedding's {length} tokens as a square grid without "
                f"{'a class slot' if count == 1 else f'{count} prefix slots'} (timm's no_embed_class); "
                "pass source_grid=(rows, cols) if the grid is another"
            )
    if not has_slots:
        insert_prefix_slots(source)  # timm adds no embedding to the prefix tokens


def _is_square(n):
    return n >= 0 and math.isqrt(n) ** 2 == n


def adapt_representation(targets, source, drop, notes):
    """Drops the checkpoint's `pre_logits` when asked and the model has none; says if it did."""
    if not (drop and PRE_LOGITS[0] in source and PRE_LOGITS[0] not in targets):
        return False
    for key in PRE_LOGITS:
        source.pop(key, None)
    notes.append("dropped the checkpoint's pre_logits layer")
    return True


def adapt_head(targets, source, reset_head, notes):
    """A new head at zeros where the class count differs (or when asked); DeiT's distillation head alike."""
    for head, name in ((HEAD, "head"), (DISTILLATION_HEAD, "distillation head")):
        _adapt_one_head(head, name, targets, source, reset_head, notes)


DISTILLATION_HEAD = ("head_dist/kernel", "head_dist/bias")


def _adapt_one_head(head, name, targets, source, reset_head, notes):
    if head[0] not in targets:
        if head[0] in source:
            for key in head:
                source.pop(key, None)
            notes.append(f"the model has no {name}: the checkpoint's {name} was not loaded")
        return
    ours = tuple(targets[head[0]].shape)
    theirs = tuple(source[head[0]].shape) if head[0] in source else None
    if reset_head is True or (reset_head == "auto" and theirs != ours):
        for key in head:
            source[key] = np.zeros(targets[key].shape, "float32")
        was = f"{theirs[-1]} classes" if theirs else f"no {name}"
        notes.append(f"new {name} at zeros for {ours[-1]} classes (the checkpoint has {was})")
    elif theirs == ours and not np.any(source[head[0]]):
        notes.append(f"the checkpoint's {name} is all zeros (an ImageNet-21k pre-training file): fine-tune it")


def adapt_channels(targets, source, notes):
    """Grayscale (or other channel counts) from an RGB kernel, as timm's `adapt_input_conv`."""
    if EMBEDDING not in source or EMBEDDING not in targets:
        return
    kernel, shape = source[EMBEDDING], tuple(targets[EMBEDDING].shape)
    theirs, ours = kernel.shape[2], shape[2]
    if theirs == ours or kernel.shape[:2] + kernel.shape[3:] != shape[:2] + shape[3:]:
        return
    if ours == 1:
        # A gray image is R = G = B, so summing the RGB filters gives the same response.
        source[EMBEDDING] = kernel.sum(axis=2, keepdims=True)
        notes.append(f"summed the patch kernel's {theirs} input channels into 1")
    else:
        repeats = -(-ours // theirs)
        source[EMBEDDING] = np.tile(kernel, (1, 1, repeats, 1))[:, :, :ours] * (theirs / ours)
        notes.append(f"repeated the patch kernel's {theirs} input channels to {ours}, scaled by {theirs}/{ours}")


def adapt_position_embedding(targets, source, notes, grid, *, interpolation, antialias, source_grid):
    if POSEMB not in source or POSEMB not in targets:
        return []
    embedding, shape = source[POSEMB], tuple(targets[POSEMB].shape)
    prefix = shape[1] - grid[0] * grid[1]  # the model's prefix slots: 0 with embed_prefix_tokens=False
    if (
        embedding.ndim != 3
        or embedding.shape[2] != shape[2]
        or prefix_count(source) != prefix_count(targets)
        or prefix not in (0, prefix_count(targets))
    ):
        return []  # another width, pooling or prefix: reported by the shape check
    if source_grid is None and embedding.shape[1] == shape[1]:
        return []  # same number of tokens: the same grid (pass source_grid if it is not)
    try:
        if source_grid is None:
            old = square_grid(embedding.shape[1] - prefix, "checkpoint's position embedding")
        else:
            old = to_pair(source_grid, "source_grid")
        source[POSEMB] = resample_position_embedding(embedding, grid, old, prefix, interpolation, antialias)
    except ValueError as e:
        return [f"{POSEMB}: {e}"]
    filtered = ", antialiased" if antialias else ""
    notes.append(f"position embedding resized from a {old} grid to {grid} ({interpolation}{filtered})")
    return []
