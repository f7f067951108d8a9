"""keras_vit: the Vision Transformer (Dosovitskiy et al. 2020) for Keras 3."""

from keras_vit.layers import (
    AddPositionEmbedding,
    ClassToken,
    ClassTokenPooling,
    PatchEmbedding,
    TransformerBlock,
    resize_position_embedding,
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
from keras_vit.variants import VARIANTS, Variant, parse_variant
from keras_vit.weights import CheckpointError, build_from_checkpoint, load_weights, save_npz

__version__ = "0.1.0"
