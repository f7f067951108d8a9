"""Published checkpoints: read any ViT layout, adapt it to a model, write it back.

registry.py    the well-known checkpoints, as data, downloaded once
formats.py     each file layout <-> the one canonical layout (the original .npz)
torch_layouts.py  timm's and transformers' key tables (every family); timm's written back
keys.py        which canonical tensor each model variable holds
adapt.py       grid resizing, new heads, channels, the prefix tokens' position slots
resample.py    position-embedding resizing, the same numbers as PyTorch
hub.py         hub folders: what timm's and transformers' config.json add to the tensors
load.py        `load_weights` (planned in full, then assigned), `save_npz`, `save_timm`
pretrained.py  `build_vit` (optionally pretrained) and `build_from_checkpoint`
"""

from keras_vit.checkpoints.formats import CheckpointError
from keras_vit.checkpoints.load import LoadReport, load_weights, read_checkpoint, save_npz, save_timm
from keras_vit.checkpoints.pretrained import (
    build_from_checkpoint,
    build_vit,
    read_config,
    vit_b16,
    vit_b32,
    vit_h14,
    vit_l16,
    vit_l32,
    vit_s16,
    vit_ti16,
)
from keras_vit.checkpoints.registry import CHECKPOINTS, Checkpoint, fetch_checkpoint, find_checkpoint
from keras_vit.checkpoints.resample import resample_position_embedding

__all__ = [
    "build_vit", "build_from_checkpoint", "read_config", "load_weights", "save_npz", "save_timm", "read_checkpoint", "LoadReport",
    "CheckpointError", "CHECKPOINTS", "Checkpoint", "find_checkpoint", "fetch_checkpoint",
    "resample_position_embedding", "vit_ti16", "vit_s16", "vit_b16", "vit_b32", "vit_l16", "vit_l32", "vit_h14",
]  # fmt: skip
