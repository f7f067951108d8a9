"""keras_vit: the Vision Transformer (Dosovitskiy et al. 2020) for Keras 3.

The core (`config`, `layers`, `model`, `views`, `visualize`, `preprocessing`)
and `checkpoints` use Keras alone and run on every backend; importing this
package imports no TensorFlow. `training` and `deploy` bring TensorFlow where
it is the point (tf.data, tf.distribute, SavedModel, LiteRT).
"""

import os as _os
import sys as _sys

# Modules users reach as attributes (`keras_vit.visualize`); `adaptive` is `keras_vit.views.adaptive`.
_MODULES = ("adaptive", "preprocessing", "views", "visualize")


def _is_command_line():
    """Whether this process is the `keras-vit` command (or `python -m keras_vit.cli`, whose package is
    imported while `sys.argv[0]` is still "-m")."""
    return bool(_sys.argv) and _os.path.basename(_sys.argv[0]) in ("keras-vit", "-m")


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
    # model parallelism (keras.distribution, JAX)
    "get_layout_map", "check_layout",
]  # fmt: skip


def import_public_names():
    """Imports every public name (and with them Keras, and the layers and optimisers registered)."""
    from keras_vit import _public

    globals().update({name: getattr(_public, name) for name in (*__all__, *_MODULES)})


def __getattr__(name):
    # Only reached for a name not imported yet: in the `keras-vit` command before its arguments are parsed.
    if name in __all__ or name in _MODULES:
        import_public_names()
        return globals()[name]
    raise AttributeError(f"module 'keras_vit' has no attribute {name!r}")


if not _is_command_line():
    import_public_names()
