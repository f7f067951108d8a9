# ruff: noqa: F401  (every name here is imported to be re-exported by keras_vit/__init__.py)
"""The names `keras_vit` exports, imported: the facade's imports, kept apart from its `__init__`.

`import keras_vit` imports this module at once (so that the layers and optimisers a `.keras` file
names are registered); the `keras-vit` command imports it only once its arguments are parsed
(`--help` answers without Keras), through `keras_vit.__getattr__` or `cli.main`.
"""

from keras_vit import _compat, preprocessing, views, visualize  # module names users reach as attributes
from keras_vit.builders import (
    build_from_checkpoint,
    build_vit,
    vit_b16,
    vit_b32,
    vit_h14,
    vit_l16,
    vit_l32,
    vit_s16,
    vit_ti16,
)
from keras_vit.checkpoints import (
    CheckpointError,
    load_weights,
    read_config,
    resample_position_embedding,
    save_npz,
    save_timm,
)
from keras_vit.config import VARIANTS, Variant, ViTConfig, parse_variant
from keras_vit.distribution import check_layout, get_layout_map
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
from keras_vit.model import build_model
from keras_vit.training import optimizers  # noqa: F401  (registers the optimisers trained models are saved with)
from keras_vit.views import (
    TokenMerging,
    adaptive,  # noqa: F401  (keras_vit.adaptive, as in 0.2.0)
    apply_token_merging,
    attention_model,
    features_model,
)

# 0.1.0's and 0.2.0's module paths and moved names, with a DeprecationWarning (it imports keras_vit.model)
_compat.install()
