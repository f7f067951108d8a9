"""Adaptive tokens (A-ViT, Yin et al., CVPR 2022) over a trained model: depth, statistics, the fast path.

    model = keras_vit.build_vit("tiny/4", image_size=32, num_classes=10, adaptive_tokens=True)
    model.fit(...)                                   # task loss + ponder loss + distribution prior
    view = halting_model(model)                      # {"logits": (B, C), "depth": (B, T)}
    halting_statistics(view.predict(images)["depth"], num_layers=2)
    logits, depth = gathered_forward(model, images)      # halted tokens really removed, any batch

The mechanism (the `Halting` layers `build_vit(adaptive_tokens=True)` puts
after every block, the losses, the one halting step) is in
`keras_vit.layers.halting`; this module holds the views that reuse a model's
layers through `keras_vit.model.forward`, as token merging and attention maps do:

- `halting_model`: the masked graph the model trains with, returning each
  token's depth (blocks run) with the logits; also over a model trained
  without halting, to see what the gate would do.
- `plain_model`: the same weights with halting disabled (every token runs
  every block), for accuracy and speed comparisons.
- `gathered_forward`: halted tokens gathered out after every block, at any
  batch size, so later blocks run on fewer tokens, and an image's tokens
  stop once its class token (all the head reads) has halted. Same logits as
  the masked graph.

Legend: `B` batch, `T` tokens (class token first), `D` hidden_dim, `L` blocks, `(R, C)` patch grid.
"""

import dataclasses
import warnings

import keras
import numpy as np
from keras import ops

from keras_vit.layers.halting import MASK_BIAS, halting_step
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
    """`forward`'s hook for a batch: halted tokens leave the computation for every later block.

    After each block, each image's tokens are put in order, active ones first
    (in their sequence order), and the next block runs on the longest active
    prefix in the batch: `T' = max over images of the active tokens`, so it
    costs what the busiest image needs, and at batch 1 exactly the active
    tokens. An image with fewer active tokens than `T'` carries halted ones in
    its prefix: they are masked out of attention as in the masked graph (the
    same -1000 logits bias on their keys) and their halting sums stay as they
    are, so every image's outputs equal the masked graph's. The state's
    `positions` follow the tokens (each one's index in the embedded
    sequence), for position-dependent attention and for the depth count.

    Only the tokens the head reads (the class token, and the distillation
    token of a distilled model) keep their halting-weighted output. With
    `all_tokens=False` an image's tokens all leave once its readout tokens
    have halted (its logits are final); `True` runs every token to its own
    halt, to count every token's depth.

    `T'` depends on the data: eager on every backend, and in a `tf.function`
    (hence a SavedModel) with a dynamic token axis; `jax.jit` and LiteRT need
    static shapes, so they take the masked graph (`halting_model`).
    """

    def __init__(self, config, all_tokens=False):
        self.config, self.all_tokens = config, all_tokens
        self.readout_tokens = 1 + int(config.distillation)  # class [, distillation]: what the head reads
        self.index = 0

    def _start(self, state):
        tokens = state.tokens
        batch, length = ops.shape(tokens)[0], tokens.shape[1]
        self.length = length
        self.score_sum = ops.zeros((batch, length))
        self.remainder = ops.ones((batch, length))
        self.active = ops.ones((batch, length))
        self.depth = ops.zeros((batch, length))
        self.readout = ops.zeros((batch, self.readout_tokens, tokens.shape[-1]))
        positions = ops.broadcast_to(ops.arange(length, dtype="int32")[None], (batch, length))
        return state.replace(positions=positions)

    def __call__(self, block, state):
        c = self.config
        if self.index == 0:
            state = self._start(state)
        last = self.index == c.num_layers - 1
        self.index += 1
        tokens, positions = state.tokens, state.positions
        if tokens.shape[1] == 0:  # every image's readout halted (eager: the shape is known): nothing runs
            return state.replace(tokens=ops.cast(self.readout, tokens.dtype)) if last else state
        with warnings.catch_warnings():  # one token left (the class token) is a softmax over one key: fine
            warnings.filterwarnings("ignore", message="You are using a softmax over axis -1")
            tokens = block(tokens, training=False, **state.block_arguments())  # (B, T', D)
        x = ops.cast(tokens, "float32")
        _, going, weight, self.score_sum, self.remainder = halting_step(
            x[..., 0],
            self.score_sum,
            self.remainder,
            self.active,
            c.adaptive_tokens.gate_scale,
            c.adaptive_tokens.gate_center,
            last,
        )
        # A token dropped while it could still go on (its image's readout had halted) stays out.
        going, weight = going * self.active, weight * self.active
        # (B, T', R) and (B, T', T): which readout slot, which original token, each row is.
        is_readout = ops.cast(positions[..., None] == ops.arange(self.readout_tokens, dtype="int32"), "float32")
        self.readout = self.readout + ops.einsum("btr,btd->brd", is_readout * weight[..., None], x)
        is_token = ops.cast(positions[..., None] == ops.arange(self.length, dtype="int32"), "float32")
        self.depth = self.depth + ops.einsum("btn,bt->bn", is_token, self.active)
        if last:  # (B, R, D): all the readout reads
            return state.replace(tokens=ops.cast(self.readout, tokens.dtype), positions=None, attention_bias=None)
        keep = ops.cast(self.keep(going > 0.5, positions), "float32")
        # Active first, each group in sequence order; then the longest active prefix of the batch.
        order = ops.argsort((1.0 - keep) * (2 * self.length) + ops.cast(positions, "float32"), axis=1)
        count = ops.max(ops.sum(keep, axis=1))
        try:
            count = int(count)  # eager: a plain slice
        except TypeError:  # inside a tf.function: a slice with a tensor bound
            count = ops.cast(count, "int32")
        order = order[:, :count]

        def take(t):  # (B, T, ...) -> (B, T', ...) in `order`
            index = order if len(t.shape) == 2 else ops.broadcast_to(order[..., None], (*ops.shape(order), t.shape[-1]))
            return ops.take_along_axis(t, index, axis=1)

        self.score_sum, self.remainder, self.active = (take(t) for t in (self.score_sum, self.remainder, keep))
        return state.replace(
            tokens=take(tokens),
            positions=take(positions),
            attention_bias=(1.0 - self.active)[:, None, None, :] * MASK_BIAS,  # (B, 1, 1, T'): halted keys out
        )

    def keep(self, going, positions):
        """Which tokens the next block runs on, `(B, T')` bool: those still going, while their image's readout goes.

        Args:
            going: `(B, T')` bool, the tokens that have not halted.
            positions: `(B, T')` int32, their indices in the embedded sequence.
        """
        if self.all_tokens:
            return going
        # Nothing else reaches the head once an image's readout tokens have halted.
        readout_going = ops.any(ops.logical_and(going, positions < self.readout_tokens), axis=1)
        return ops.logical_and(going, readout_going[:, None])


def gathered_forward(model, images, all_tokens=False, **fields):
    """Logits of a batch with halted tokens removed: `(logits (B, C), depth (B, T))`.

    Eager on every backend, or inside a `tf.function` (as `keras_vit.deploy`
    exports it); the same logits as `halting_model` up to float rounding, at
    any batch size (see `GatheredHook`). `depth` counts the blocks each token
    ran; without `all_tokens`, tokens still active when their image's class
    token halts stop there too.

    Args:
        model: a `build_vit` model with adaptive tokens (or any class-token
            model, with `fields` giving the gate).
        images: `(B, H, W, C)`, preprocessed as for the model.
        all_tokens: run every token to its own halt (for depth maps).
            Defaults to `False`.
        **fields: `ViTConfig` halting fields overriding the model's.
    """
    if len(images.shape) != 4:
        raise ValueError(f"gathered_forward takes a batch of images, shape (B, H, W, C); got {tuple(images.shape)}.")
    hook = GatheredHook(_adaptive_config(model, fields), all_tokens=all_tokens)
    logits = forward(ViTLayers.of(model), images, hook)
    return logits, hook.depth
