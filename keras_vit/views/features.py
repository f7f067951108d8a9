"""Intermediate features and fixed-size views: the model's own layers, read or called otherwise.

    features = keras_vit.features_model(model, blocks=[-4, -3, -2, -1], norm=True)   # patch grids per block
    fixed = fixed_size_model(any_size_model, (224, 224))                             # for LiteRT

Legend: `B` batch, `D` hidden_dim, `p` patch size, `P` prefix tokens.
"""

import keras

from keras_vit.layers import PatchGrid, TokenSlice
from keras_vit.model import embed, forward, image_layers


def features_model(model, blocks=None, *, norm=False, prefix_tokens=False):
    """A functional model over `model`'s own layers that returns chosen blocks' tokens, as patch grids.

    Dense tasks (segmentation, depth, retrieval by patch) read a backbone's
    intermediate tokens, as DINOv2's heads do; timm's
    `forward_intermediates` is the reference (its `output_fmt="NHWC"`).
    Blocks after the last one asked for are not run. Works at any input size
    on a model built with `dynamic_image_size=True`.

    Args:
        model: a model made by `keras_vit.build_vit` (or loaded from its `.keras` file).
        blocks: indices of the blocks whose outputs to return (negative ones
            count from the end, `-1` the last). Defaults to every block.
        norm: apply the model's final LayerNorm to each. Defaults to `False`.
        prefix_tokens: also return each block's prefix tokens (class,
            distillation, registers), `(B, P, D)`. Defaults to `False`.

    Returns:
        A `keras.Model` mapping `images` to `{"block_<i>": (B, H/p, W/p, D)}`,
        and `"block_<i>_prefix"` when asked.

    Example:

    >>> import keras_vit
    >>> model = keras_vit.build_vit("tiny/8", image_size=(32, 48), num_register_tokens=2)
    >>> features = features_model(model, blocks=[-1], norm=True, prefix_tokens=True)
    >>> {name: tuple(out.shape) for name, out in features(keras.ops.zeros((1, 32, 48, 3))).items()}
    {'block_1': (1, 4, 6, 64), 'block_1_prefix': (1, 3, 64)}
    """
    layers = image_layers(model, "features_model")
    count = len(layers.blocks)
    chosen = list(range(count)) if blocks is None else list(blocks)
    bad = [i for i in chosen if isinstance(i, bool) or not isinstance(i, int) or not -count <= i < count]
    if bad or not chosen:
        raise ValueError(
            f"blocks={blocks!r} must list indices of the model's {count} blocks "
            f"(0..{count - 1}, or negative from the end), or be None for all."
        )
    indices = sorted({i % count for i in chosen})
    images = keras.Input(shape=model.input_shape[1:], name="images")
    grid = PatchGrid(layers.num_prefix_tokens, layers.patch_embedding.patch_size, name="patch_grid")
    state = embed(layers, images)
    x = state.tokens
    outputs = {}
    for i, block in enumerate(layers.blocks[: indices[-1] + 1]):
        x = block(x, **state.block_arguments())
        if i in indices:
            y = layers.encoder_norm(x) if norm and layers.encoder_norm is not None else x
            outputs[f"block_{i}"] = grid(y, images)
            if prefix_tokens:
                outputs[f"block_{i}_prefix"] = TokenSlice(0, layers.num_prefix_tokens, name=f"block_{i}_prefix")(y)
    return keras.Model(images, outputs, name=f"{model.name}_features")


def fixed_size_model(model, image_size):
    """A model taking any image size (`dynamic_image_size=True`) as a view at one size: same layers, same weights.

    With the size known, the position embedding's resampling is constant matrices (none at
    the learned grid), so the graph converts to LiteRT with built-in ops. The same as
    `build_vit(config.replace(dynamic_image_size=False, image_size=...))` with the weights
    copied (and the embedding resampled), without the copy.
    """
    layers = image_layers(model, "fixed_size_model")
    images = keras.Input((*image_size, model.input_shape[-1]), name="images")
    return keras.Model(images, forward(layers, images), name=f"{model.name}_fixed")
