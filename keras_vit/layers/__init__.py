"""The layers of the Vision Transformer (Dosovitskiy et al. 2020) and its descendants.

    image -> PatchEmbedding -> ClassToken (RegisterTokens) -> AddPositionEmbedding   embedding.py
          -> TransformerBlock x L (SelfAttention, LayerScale)                        blocks.py
          -> LayerNorm -> ClassTokenPooling | PatchAveragePooling | AttentionPooling  pooling.py
    images -> RotaryEmbedding: the sine/cosine table the attention rotates with  rotary.py
    LayerNorm and GELU with hand-written gradients, the MLP's activation             functions.py

Every layer takes its sizes in `__init__`, creates all its weights in `build`
with the layer's dtype policy, and returns exactly its constructor arguments
from `get_config`. Only `keras` and `keras.ops` are used, no TensorFlow. Every
layer is registered as `keras_vit>Name`, so `.keras` files load in safe mode
whichever module a layer lives in; import them from here.
"""

from keras_vit.layers.blocks import LayerScale, SelfAttention, TransformerBlock
from keras_vit.layers.embedding import (
    AddPositionEmbedding,
    ClassToken,
    NaFlexPositionEmbedding,
    PaddingBias,
    PatchEmbedding,
    RegisterTokens,
    antialiased_bicubic_matrix,
    naflex_resize_weights,
)
from keras_vit.layers.functions import LayerNorm, activate, gelu, gelu_for_training, layer_norm
from keras_vit.layers.pooling import (
    AttentionPooling,
    ClassTokenPooling,
    PatchAveragePooling,
    PatchGrid,
    TokenSlice,
)
from keras_vit.layers.rotary import RotaryEmbedding, apply_rotary, rotary_angles

__all__ = [
    "AddPositionEmbedding",
    "AttentionPooling",
    "ClassToken",
    "ClassTokenPooling",
    "LayerNorm",
    "LayerScale",
    "NaFlexPositionEmbedding",
    "PaddingBias",
    "PatchAveragePooling",
    "PatchEmbedding",
    "PatchGrid",
    "RegisterTokens",
    "RotaryEmbedding",
    "SelfAttention",
    "TokenSlice",
    "TransformerBlock",
    "activate",
    "antialiased_bicubic_matrix",
    "apply_rotary",
    "gelu",
    "gelu_for_training",
    "layer_norm",
    "naflex_resize_weights",
    "rotary_angles",
]
