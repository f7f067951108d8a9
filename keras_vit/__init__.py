"""keras_vit: the Vision Transformer (Dosovitskiy et al. 2020) for Keras 3.

The core (`config`, `layers`, `model`, `tome`, `visualize`, `preprocessing`)
and `checkpoints` use Keras alone and run on every backend; importing this
package imports no TensorFlow. `training` and `deploy` bring TensorFlow where
it is the point (tf.data, tf.distribute, SavedModel, LiteRT).
"""

import os as _os
import sys as _sys

if _sys.argv and _os.path.basename(_sys.argv[0]) == "keras-vit":
    # The `keras-vit` command: its console script imports this package, and with it Keras and, on
    # the TensorFlow backend, TensorFlow, before `cli.main` runs; so this is the one moment to hide
    # TensorFlow's C++ start-up lines (CUDA, oneDNN), which no log level reaches. Library users keep them.
    from keras_vit.cli import quiet_tensorflow

    quiet_tensorflow()

from keras_vit import _compat, adaptive, preprocessing, visualize  # noqa: F401  (module names users reach as attributes)
from keras_vit.checkpoints import (
    CheckpointError,
    build_from_checkpoint,
    build_vit,
    load_weights,
    read_config,
    resample_position_embedding,
    save_npz,
    save_timm,
    vit_b16,
    vit_b32,
    vit_h14,
    vit_l16,
    vit_l32,
    vit_s16,
    vit_ti16,
)
from keras_vit.config import VARIANTS, Variant, ViTConfig, parse_variant
from keras_vit.layers import (
    AddPositionEmbedding,
    AttentionPooling,
    ClassToken,
    ClassTokenPooling,
    LayerNorm,
    LayerScale,
    PatchAveragePooling,
    PatchEmbedding,
    PatchGrid,
    RegisterTokens,
    SelfAttention,
    TokenSlice,
    TransformerBlock,
)
from keras_vit.lora import enable_lora, load_adapters, save_adapters
from keras_vit.model import attention_model, build_model, features_model
from keras_vit.tome import TokenMerging, apply_token_merging
from keras_vit.training import optimizers  # noqa: F401  (registers the optimisers trained models are saved with)

__version__ = "0.2.0"

__all__ = [
    # the architecture
    "ViTConfig", "VARIANTS", "Variant", "parse_variant", "build_vit", "build_model", "vit_ti16", "vit_s16",
    "vit_b16", "vit_b32", "vit_l16", "vit_l32", "vit_h14",
    # the layers
    "PatchEmbedding", "ClassToken", "AddPositionEmbedding", "TransformerBlock", "SelfAttention", "LayerNorm",
    "ClassTokenPooling", "RegisterTokens", "LayerScale", "AttentionPooling", "PatchAveragePooling", "PatchGrid",
    "TokenSlice",
    # checkpoints
    "build_from_checkpoint", "load_weights", "save_npz", "save_timm", "read_config", "resample_position_embedding",
    "CheckpointError",
    # views of a model
    "attention_model", "features_model", "TokenMerging", "apply_token_merging",
    # fine-tuning
    "enable_lora", "save_adapters", "load_adapters",
]  # fmt: skip
