"""Published checkpoints: read any ViT layout, adapt it to a model, write it back.

families.py     the family table: one record per family (names per source, facts, published rows)
registry.py     the published checkpoints (the table's rows), downloaded once
formats.py      which files a path holds, their format (by content), their arrays, their layout
canonical.py    the canonical layout: every key, the prefix slots, which model variable holds which tensor
big_vision.py   the original and big_vision `.npz` layouts <-> canonical
timm.py         timm's state dicts and config.json <-> canonical
transformers.py transformers' state dicts and config.json -> canonical
checkpoint.py   `read`: any path -> one `CheckpointData` (canonical arrays, ViTConfig, family, scaling)
adapt.py        grid resizing, new heads, channels, the prefix tokens' position slots
resample.py     position-embedding resizing, the same numbers as PyTorch
load.py         `assign` (planned in full, then assigned), `load_weights`, `save_npz`, `save_timm`

The builders (`build_vit`, `build_from_checkpoint`, the `vit_*` aliases) are `keras_vit.builders`;
importing them from here still works, with a `DeprecationWarning` (`keras_vit/_compat.py`).
"""

from keras_vit.checkpoints.canonical import CheckpointError
from keras_vit.checkpoints.checkpoint import CheckpointData, read, read_checkpoint, read_config
from keras_vit.checkpoints.families import FAMILIES, Family
from keras_vit.checkpoints.load import LoadReport, load_weights, save_npz, save_timm
from keras_vit.checkpoints.registry import CHECKPOINTS, Checkpoint, fetch_checkpoint, find_checkpoint
from keras_vit.checkpoints.resample import resample_position_embedding

__all__ = [
    "read", "read_config", "read_checkpoint", "CheckpointData", "load_weights", "save_npz", "save_timm", "LoadReport",
    "CheckpointError", "FAMILIES", "Family", "CHECKPOINTS", "Checkpoint", "find_checkpoint", "fetch_checkpoint",
    "resample_position_embedding",
]  # fmt: skip
