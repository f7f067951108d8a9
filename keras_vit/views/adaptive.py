"""Adaptive tokens (A-ViT, Yin et al., CVPR 2022) over a trained model: depth, statistics, the fast path.

    model = keras_vit.build_vit("tiny/4", image_size=32, num_classes=10, adaptive_tokens=True)
    model.fit(...)                                   # task loss + ponder loss + distribution prior
    view = halting_model(model)                      # {"logits": (B, C), "depth": (B, T)}
    halting_statistics(view.predict(images)["depth"], num_layers=2)
    logits, depth = gathered_forward(model, images[:1])   # halted tokens really removed

The mechanism (the `Halting` layers `build_vit(adaptive_tokens=True)` puts
after every block, the losses, the one halting step) is in
`keras_vit.layers.halting`; this module holds the views that reuse a model's
layers through `keras_vit.model.forward`, as token merging and attention maps do:

- `halting_model`: the masked graph the model trains with, returning each
  token's depth (blocks run) with the logits; also over a model trained
  without halting, to see what the gate would do.
- `plain_model`: the same weights with halting disabled (every token runs
  every block), for accuracy and speed comparisons.
- `gathered_forward`: one image at a time, halted tokens gathered out, so
  later blocks run on fewer tokens, and no block runs once the class token
  (all the head reads) has halted. Same logits as the masked graph.

Legend: `B` batch, `T` tokens (class token first), `D` hidden_dim, `L` blocks, `(R, C)` patch grid.
"""

import dataclasses
import warnings

import keras
import numpy as np
from keras import ops

from keras_vit.layers.halting import halting_step
from keras_vit.model import HaltingHook, ViTLayers, forward, model_config


def _adaptive_config(model, fields):
    config = model_config(model)
    if config.pooling != "token":
        raise ValueError(f"{model.name!r} pools with {config.pooling!r}; adaptive tokens need a class token.")
    return dataclasses.replace(config, adaptive_tokens=config.adaptive_tokens or True, **fields)


def halting_model(model, **fields):
    """The model's masked halting graph, also returning every token's depth.

    Args:
        model: a `build_vit` model, with adaptive tokens or (to try the gate
            on it) without.
        **fields: `ViTConfig` halting fields overriding the model's, such as
            `halting_gate_center`.

    Returns:
        A `keras.Model` mapping `images` to `{"logits": (B, C), "depth": (B, T)}`,
        `depth` the number of blocks each token ran through (1 to `L`).
    """
    hook = HaltingHook(_adaptive_config(model, fields))
    images = keras.Input(shape=model.input_shape[1:], name="images")
    logits = forward(ViTLayers.of(model), images, hook)
    return keras.Model(images, {"logits": logits, "depth": hook.depth}, name=f"{model.name}_halting")


def plain_model(model):
    """The same layers and weights with halting disabled: every token runs every block."""
    images = keras.Input(shape=model.input_shape[1:], name="images")
    return keras.Model(images, forward(ViTLayers.of(model), images), name=f"{model.name}_plain")


def halting_statistics(depth, num_layers):
    """`{"mean_depth", "active_fraction"}` of depths `(B, T)` (any batch of `halting_model` outputs).

    `mean_depth`: the mean number of blocks a token runs through (all tokens,
    class token included). `active_fraction[l]`: the share of tokens block
    `l` still updates (block 0: all of them).
    """
    depth = np.asarray(depth, dtype=np.float64)
    return {
        "mean_depth": float(depth.mean()),
        "active_fraction": [float((depth > block).mean()) for block in range(num_layers)],
    }


def depth_map(depth, grid):
    """The patch tokens' depths `(B, T)` as maps `(B, R, C)` (the class token dropped)."""
    depth = np.asarray(depth)
    return depth[:, 1:].reshape(-1, *grid)


class GatheredHook:
    """`forward`'s hook for one image: runs each block on the active tokens only.

    After each block the halted tokens are gathered out (`ops.where` +
    `ops.take`), so the token count shrinks, and the state's `positions`
    follow them (each active token's index in the embedded sequence). The
    halting arithmetic is the masked graph's (`halting_step`); only the
    class token's weighted output is kept, as only it reaches the head. With
    `all_tokens=False` every token is dropped once the class token halts (the
    logits are then final); `True` runs the rest too, to count every token's depth.
    """

    def __init__(self, config, all_tokens=False):
        self.config, self.all_tokens = config, all_tokens
        self.index = 0

    def __call__(self, block, state):
        c, tokens = self.config, state.tokens
        if self.index == 0:
            length = tokens.shape[1]
            state = state.replace(positions=ops.arange(length, dtype="int32")[None])  # (1, T)
            self.score_sum = ops.zeros((length,))
            self.remainder = ops.ones((length,))
            self.depth = ops.zeros((length,))
            self.class_output = ops.zeros((1, 1, tokens.shape[-1]))
        last = self.index == c.num_layers - 1
        self.index += 1
        with warnings.catch_warnings():  # one token left (the class token) is a softmax over one key: fine
            warnings.filterwarnings("ignore", message="You are using a softmax over axis -1")
            tokens = block(tokens, training=False, **state.block_arguments())  # (1, Ta, D): every token here is active
        x = ops.cast(tokens[0], "float32")  # (Ta, D)
        positions = state.positions[0]  # (Ta,)
        _, going, weight, self.score_sum, self.remainder = halting_step(
            x[:, 0],
            self.score_sum,
            self.remainder,
            1.0,
            c.adaptive_tokens.gate_scale,
            c.adaptive_tokens.gate_center,
            last,
        )
        is_class = ops.cast(positions == 0, "float32")
        self.class_output = self.class_output + ops.sum(x * (weight * is_class)[:, None], axis=0)[None, None]
        self.depth = self.depth + ops.scatter(positions[:, None], ops.ones_like(weight), ops.shape(self.depth))
        if last:
            return state.replace(tokens=ops.cast(self.class_output, tokens.dtype))  # (1, 1, D): all the pooling reads
        keep = going > 0.5
        if not self.all_tokens:  # nothing else reaches the head once the class token has halted
            keep = ops.logical_and(keep, ops.any(ops.logical_and(keep, positions == 0)))
        index = ops.where(keep)[0]  # a data-dependent shape: the point of this path
        self.score_sum, self.remainder = (ops.take(t, index, axis=0) for t in (self.score_sum, self.remainder))
        return state.replace(tokens=ops.take(tokens, index, axis=1), positions=ops.take(state.positions, index, axis=1))


def gathered_forward(model, images, all_tokens=False, **fields):
    """Logits of one image with halted tokens removed: `(logits (1, C), depth (1, T))`.

    Eager (or inside a `tf.function`, as `keras_vit.deploy` exports it);
    the same logits as `halting_model` up to float rounding. `depth` counts
    the blocks each token ran; without `all_tokens`, tokens still active
    when the class token halts stop there too (see `GatheredHook`).

    Args:
        model: a `build_vit` model with adaptive tokens (or any class-token
            model, with `fields` giving the gate).
        images: `(1, H, W, C)`, preprocessed as for the model.
        all_tokens: run every token to its own halt (for depth maps).
            Defaults to `False`.
        **fields: `ViTConfig` halting fields overriding the model's.
    """
    if images.shape[0] != 1:
        raise ValueError(f"gathered_forward takes one image, shape (1, H, W, C); got {tuple(images.shape)}.")
    hook = GatheredHook(_adaptive_config(model, fields), all_tokens=all_tokens)
    logits = forward(ViTLayers.of(model), images, hook)
    return logits, hook.depth[None]
