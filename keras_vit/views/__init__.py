"""Views over a trained model: its own layers, through the one forward graph, read or called otherwise.

    attention.py   attention_model: every block's attention weights with the logits
    features.py    features_model (chosen blocks' patch grids), fixed_size_model (an any-size model at one size)
    tome.py        apply_token_merging: token merging (Bolya et al. 2023), same weights, faster
    adaptive.py    halting_model, plain_model, gathered_forward: adaptive tokens (A-ViT) after training

Each is `keras_vit.model.forward` over `ViTLayers.of(model)` with its own
block hook (a `TokenState` in, a `TokenState` out), so no view copies a layer
or re-implements the block; a view saved as `.keras` loads in safe mode.
"""

from keras_vit.views.adaptive import depth_map, gathered_forward, halting_model, halting_statistics, plain_model
from keras_vit.views.attention import BlockWithAttention, attention_model
from keras_vit.views.features import features_model, fixed_size_model
from keras_vit.views.tome import TokenMerging, apply_token_merging, bipartite_soft_matching

__all__ = [
    "BlockWithAttention",
    "TokenMerging",
    "apply_token_merging",
    "attention_model",
    "bipartite_soft_matching",
    "depth_map",
    "features_model",
    "fixed_size_model",
    "gathered_forward",
    "halting_model",
    "halting_statistics",
    "plain_model",
]
