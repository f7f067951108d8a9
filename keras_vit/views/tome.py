"""Token merging (Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023).

    fast = keras_vit.apply_token_merging(model, r=8)   # same weights, no retraining

Between attention and MLP, every block merges its `r` most similar token
pairs, so a 12-block B/16 at 224 ends with 197 - 12 r tokens: less work in
every later attention and MLP. Similarity is the cosine of the attention keys
(averaged over heads); pairs are found by bipartite soft matching (tokens
split alternately into sets A and B; each A token picks its most similar B
token; the `r` best-matched A tokens are averaged into their partners, the
class token never). A merged token stands for `size` patches: it is averaged
with weights `size`, and attention adds `log(size)` to its logits
(proportional attention), as if it were still `size` copies.

Gathers and scatters are one-hot matmuls, so the model converts to LiteRT
with builtin operators only. Legend: `B` batch, `T` tokens, `D` hidden_dim,
`Ta`, `Tb` the sizes of the two sets.
"""

import keras
from keras import ops

from keras_vit.layers import TransformerBlock
from keras_vit.model import forward, image_layers


def _check_r(value, name="r"):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r} must be a non-negative integer.")
    return value


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenMerging(keras.layers.Wrapper):
    """A `TransformerBlock` that merges `r` token pairs between attention and MLP.

    Wraps (and shares the weights of) a trained block; inference only.

    Args:
        layer: the `TransformerBlock`.
        r: token pairs to merge; at most half of the mergeable tokens are.
        class_token: whether token 0 is a class token, never merged.
            Defaults to `True`.

    Call arguments:
        tokens: `(B, T, D)`.
        sizes: `(B, T, 1)` patches each token stands for, or `None` for ones.
        positions: optional `(B, T)` int32, each token's index in the
            embedded sequence (`keras_vit.model.TokenState`); a merged token
            keeps the position of the token it merged into.
        rotary: optional rotary table (`keras_vit.layers.RotaryEmbedding`):
            the block rotates each token by its position's row, so positions
            are tracked (from `arange(T)` when not given).

    Returns:
        `(tokens, sizes)`: `(B, T - r, D)` and `(B, T - r, 1)`; with
        `positions` or `rotary`, `(tokens, sizes, positions)`.
    """

    def __init__(self, layer, r, class_token=True, **kwargs):
        if not isinstance(layer, TransformerBlock):
            raise ValueError(f"layer={layer!r} must be a keras_vit TransformerBlock.")
        super().__init__(layer, **kwargs)
        self.r = _check_r(r)
        self.class_token = bool(class_token)

    def build(self, tokens_shape, sizes_shape=None, positions_shape=None, rotary_shape=None):
        if not self.layer.built:
            self.layer.build(tokens_shape)
        self.built = True

    def merged(self, length):
        """How many pairs merge among `length` tokens."""
        return min(self.r, (length - int(self.class_token)) // 2)

    def call(self, tokens, sizes=None, positions=None, rotary=None):
        block = self.layer
        if sizes is None:
            sizes = ops.ones_like(tokens[..., :1])
        if rotary is not None and positions is None:  # the rotary rows must follow the merged tokens
            positions = ops.broadcast_to(ops.arange(tokens.shape[1], dtype="int32")[None], ops.shape(tokens)[:2])
        where = {} if rotary is None else dict(positions=positions, rotary=rotary)
        r = self.merged(tokens.shape[1])
        if r == 0:
            outputs = block(tokens, training=False, **where), sizes
            return outputs if positions is None else (*outputs, positions)
        # Proportional attention: a token standing for `size` patches counts `size` times.
        bias = ops.expand_dims(ops.transpose(ops.log(sizes), (0, 2, 1)), 1)  # (B, 1, 1, T)
        x, keys = block.attend(tokens, training=False, attention_bias=bias, return_keys=True, **where)
        merge = bipartite_soft_matching(ops.mean(keys, axis=1), r, self.class_token)
        x, sizes = merge_weighted(merge, x, sizes)
        outputs = block.feed_forward(x, training=False), sizes
        return outputs if positions is None else (*outputs, merge.positions(positions))

    def compute_output_shape(self, tokens_shape, sizes_shape=None, positions_shape=None, rotary_shape=None):
        batch, length, dim = tokens_shape
        length = None if length is None else length - self.merged(length)
        shapes = (batch, length, dim), (batch, length, 1)
        return shapes if positions_shape is None and rotary_shape is None else (*shapes, (batch, length))

    def compute_output_spec(self, tokens, sizes=None, positions=None, rotary=None):
        shapes = self.compute_output_shape(
            tokens.shape, None, None if positions is None else positions.shape, None if rotary is None else rotary.shape
        )
        dtypes = (self.compute_dtype, self.compute_dtype, "int32")
        return tuple(keras.KerasTensor(shape, dtype=dtype) for shape, dtype in zip(shapes, dtypes))

    def get_config(self):
        return {**super().get_config(), "r": self.r, "class_token": self.class_token}


def bipartite_soft_matching(metric, r, class_token=True):
    """Plans the merge of `r` pairs of `metric` `(B, T, d)`; returns `merge(x)`.

    `merge` maps any `(B, T, C)` to `(B, T - r, C)`: the unmerged A tokens
    (in their original order, so the class token stays first) followed by
    the B tokens, each plus the sum of the A tokens merged into it.
    """
    metric = metric / ops.norm(metric, axis=-1, keepdims=True)
    a, b = metric[:, ::2], metric[:, 1::2]  # (B, Ta, d), (B, Tb, d)
    size_a, size_b = a.shape[1], b.shape[1]
    scores = ops.matmul(a, ops.swapaxes(b, 1, 2))  # (B, Ta, Tb) cosine similarities
    if class_token:
        protect = ops.cast(ops.arange(size_a) == 0, scores.dtype) * -1e9
        scores = scores + protect[:, None]
    # top_k, not argmax: Keras' TensorFlow argmax bit-casts to tell -0.0 from 0.0, which LiteRT cannot run.
    best, partner = ops.top_k(scores, k=1)
    best, partner = best[..., 0], partner[..., 0]  # (B, Ta): best B partner of each A token
    _, order = ops.top_k(best, k=size_a)  # A tokens, best matched first
    # Back in their original order (class token first); top_k on floats, since TensorFlow sorts
    # integers with a bitwise op that LiteRT lacks.
    unmerged, _ = ops.top_k(-ops.cast(order[:, r:], "float32"), k=size_a - r)
    unmerged = ops.cast(-unmerged, "int32")  # (B, Ta - r)
    src = order[:, :r]  # (B, r)
    dst = ops.take_along_axis(partner, src, axis=1)  # (B, r)

    def merge(x):
        x = ops.convert_to_tensor(x)  # NumPy + torch tensor raises in PyTorch
        x_a, x_b = x[:, ::2], x[:, 1::2]
        keep = ops.matmul(ops.one_hot(unmerged, size_a, dtype=x.dtype), x_a)  # (B, Ta - r, C)
        moved = ops.matmul(ops.one_hot(src, size_a, dtype=x.dtype), x_a)  # (B, r, C)
        into = ops.swapaxes(ops.one_hot(dst, size_b, dtype=x.dtype), 1, 2)  # (B, Tb, r)
        return ops.concatenate([keep, x_b + ops.matmul(into, moved)], axis=1)

    def positions(p):
        """`(B, T)` positions in `merge`'s order: a B token keeps its own, the A tokens merged into it vanish."""
        p = ops.convert_to_tensor(p)
        return ops.concatenate([ops.take_along_axis(p[:, ::2], unmerged, axis=1), p[:, 1::2]], axis=1)

    merge.positions = positions
    return merge


def merge_weighted(merge, x, sizes):
    """Merges tokens as size-weighted averages; returns `(tokens, sizes)`."""
    dim = x.shape[-1]
    merged = merge(ops.concatenate([x * sizes, sizes], axis=-1))  # one pass for both
    sizes = merged[..., dim:]
    return merged[..., :dim] / sizes, sizes


def apply_token_merging(model, r):
    """The same model (same weights, shared) with token merging in every block.

    Args:
        model: a `build_vit` model with a class token (`pooling="token"`),
            trained or not.
        r: pairs merged per block, an int or one int per block. `0` gives
            the original model's outputs exactly.

    Returns:
        A `keras.Model` with the same input and output.

    Example:

    >>> import keras_vit
    >>> model = keras_vit.build_vit("tiny/4", image_size=32, num_classes=10)
    >>> fast = apply_token_merging(model, r=4)
    >>> fast.get_layer("block_1").output[0].shape  # 65 tokens, then 61, then 57
    (None, 57, 64)
    """
    layers = image_layers(model, "apply_token_merging")
    schedule = [r] * len(layers.blocks) if isinstance(r, int) and not isinstance(r, bool) else list(r)
    if len(schedule) != len(layers.blocks):
        raise ValueError(f"r={r!r} must be an int or one int per block ({len(layers.blocks)} blocks).")
    for value in schedule:
        _check_r(value)
    if layers.class_token is None:
        raise ValueError("Token merging needs a class-token model (pooling='token'); this one pools with 'gap'.")
    if layers.num_prefix_tokens > 1:  # merging reorders tokens: only index 0 is kept in place
        raise ValueError(
            f"Token merging keeps only the class token in place; this model has {layers.num_prefix_tokens} prefix "
            "tokens (a distillation token or registers), which merging would move or merge. Use it on a model "
            "with a class token alone."
        )
    if None in model.input_shape[1:3]:
        raise ValueError(
            "Token merging plans its merges for a fixed number of tokens; this model takes any image size "
            "(dynamic_image_size=True): apply it to keras_vit.views.fixed_size_model(model, (height, width))."
        )
    r_of = dict(zip((block.name for block in layers.blocks), schedule))

    def merge(block, state):
        merging = TokenMerging(block, r_of[block.name], name=block.name)
        if state.positions is None and state.rotary is None:  # (B, T, 1) sizes: how many patches each token stands for
            tokens, sizes = merging(state.tokens, state.sizes)
            return state.replace(tokens=tokens, sizes=sizes)
        tokens, sizes, positions = merging(state.tokens, state.sizes, state.positions, rotary=state.rotary)
        return state.replace(tokens=tokens, sizes=sizes, positions=positions)

    images = keras.Input(shape=model.input_shape[1:], name=model.inputs[0].name)
    return keras.Model(images, forward(layers, images, merge), name=f"{model.name}_tome")
