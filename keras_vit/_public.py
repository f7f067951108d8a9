# ruff: noqa: F401  (every name here is imported to be re-exported by keras_vit/__init__.py)
"""The names `keras_vit` exports, imported: the facade's imports, kept apart from its `__init__`.

`import keras_vit` imports this module at once (so that the layers and optimisers a `.keras` file
names are registered); the `keras-vit` command imports it only once its arguments are parsed
(`--help` answers without Keras), through `keras_vit.__getattr__` or `cli.main`.
"""

from keras_vit import adaptive, preprocessing, visualize  # noqa: F401  (module names users reach as attributes)
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
from keras_vit.model import attention_model, build_model, features_model
from keras_vit.tome import TokenMerging, apply_token_merging
from keras_vit.training import optimizers  # noqa: F401  (registers the optimisers trained models are saved with)
