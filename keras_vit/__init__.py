"""keras_vit: the Vision Transformer (Dosovitskiy et al. 2020) for Keras 3."""

import os as _os
import sys as _sys

if _sys.argv and _os.path.basename(_sys.argv[0]) == "keras-vit":
    # The command line: hide TensorFlow's C++ start-up lines (CUDA, oneDNN), which no log level
    # reaches, before anything imports TensorFlow. Library users keep them.
    from keras_vit.cli import quiet_tensorflow

    quiet_tensorflow()

from keras_vit.layers import (
    AddPositionEmbedding,
    ClassToken,
    ClassTokenPooling,
    LayerNorm,
    PatchEmbedding,
    SelfAttention,
    TransformerBlock,
)
from keras_vit.model import (
    build_vit,
    vit_b16,
    vit_b32,
    vit_h14,
    vit_l16,
    vit_l32,
    vit_s16,
    vit_ti16,
)
from keras_vit.resample import resample_position_embedding
from keras_vit.tome import TokenMerging, apply_token_merging
from keras_vit.variants import VARIANTS, Variant, parse_variant
from keras_vit import recipes  # noqa: E402  (registers the optimizers that trained models are saved with)
from keras_vit.weights import CheckpointError, build_from_checkpoint, load_weights, save_npz

__version__ = "0.1.0"
