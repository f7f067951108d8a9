"""The ViT's forward graph, written once: `build_model(config)`, and the views that reuse it.

    images -> patch embedding -> [prefix tokens] -> position embedding -> dropout -> [LayerNorm]
           -> blocks -> LayerNorm -> pooling -> [pre-logits Dense + tanh] -> [head]

The prefix tokens are the class token, DeiT's distillation token and
registers, in that order (`[class, distillation, registers..., patches]`),
prepended after the position embedding instead when it covers the patches
only (`embed_prefix_tokens=False`). The final LayerNorm goes after the
pooling with `pooled_norm`; a distilled model averages its two heads.

`ViTLayers` holds the layers of that graph by role, either new ones for a
`ViTConfig` or those of an existing model; `forward` wires them, calling each
block through a hook. The model itself, its attention view
(`attention_model`), token merging (`keras_vit.tome`) and, later, adaptive
tokens and intermediate features are `forward` with another hook over the same
layer objects: the same weights, never a second copy of the graph.

Legend: `B` batch, `N` patches, `T` tokens, `D` hidden_dim, `h` heads.
"""

import dataclasses

import keras

from keras_vit import halting
from keras_vit.config import ViTConfig
from keras_vit.layers import (
    AddPositionEmbedding,
    AttentionPooling,
    ClassToken,
    ClassTokenPooling,
    LayerNorm,
    PatchAveragePooling,
    PatchEmbedding,
    PatchGrid,
    RegisterTokens,
    TokenSlice,
    TransformerBlock,
)


@dataclasses.dataclass
class ViTLayers:
    """The layers of a ViT by their role in the graph (`None` where a model has none)."""

    patch_embedding: keras.layers.Layer
    class_token: keras.layers.Layer
    position_embedding: keras.layers.Layer
    embedding_dropout: keras.layers.Layer
    blocks: list
    encoder_norm: keras.layers.Layer
    pooling: keras.layers.Layer
    pre_logits: keras.layers.Layer
    head: keras.layers.Layer
    # The descendants' parts (see the module docstring).
    distillation_token: keras.layers.Layer = None
    register_tokens: keras.layers.Layer = None
    pre_norm: keras.layers.Layer = None
    distillation_pooling: keras.layers.Layer = None
    head_dist: keras.layers.Layer = None
    head_average: keras.layers.Layer = None
    pooled_norm: bool = False  # `encoder_norm` (then named "pooled_norm") runs after the pooling

    @classmethod
    def create(cls, config):
        """New layers for `config`, named as checkpoints and `summary()` know them."""
        c = config
        policy = keras.config.dtype_policy()
        float32_head = "float32" if policy.name.startswith("mixed") else policy
        dynamic = dict(grid=c.grid, patch_size=c.patch_size) if c.dynamic_image_size else {}
        return cls(
            patch_embedding=PatchEmbedding(c.patch_size, c.hidden_dim, use_bias=c.patch_bias, name="patch_embedding"),
            class_token=ClassToken(name="class_token") if c.class_token else None,
            position_embedding=AddPositionEmbedding(
                c.num_prefix_tokens if c.embed_prefix_tokens else 0, name="position_embedding", **dynamic
            ),
            embedding_dropout=keras.layers.Dropout(c.dropout_rate, name="embedding_dropout"),
            blocks=[
                TransformerBlock(
                    c.num_heads,
                    c.mlp_dim,
                    dropout_rate=c.dropout_rate,
                    attention_dropout_rate=c.attention_dropout_rate,
                    drop_path_rate=c.drop_path_rate * i / max(c.num_layers - 1, 1),
                    layer_norm_epsilon=c.layer_norm_epsilon,
                    activation=c.activation,
                    layer_scale_init=c.layer_scale_init,
                    name=f"block_{i}",
                )
                for i in range(c.num_layers)
            ],
            encoder_norm=LayerNorm(
                epsilon=c.layer_norm_epsilon, name="pooled_norm" if c.pooled_norm else "encoder_norm"
            ),
            pooling=_pooling(c),
            # flax nn.Dense's defaults, which the original code's pre_logits uses: lecun_normal, zero bias.
            pre_logits=keras.layers.Dense(
                c.representation_size, activation="tanh", kernel_initializer="lecun_normal", name="pre_logits"
            )
            if c.representation_size is not None
            else None,
            # Zero-initialised, as the original code; a mixed policy still yields float32 logits.
            head=keras.layers.Dense(c.num_classes, kernel_initializer="zeros", dtype=float32_head, name="head")
            if c.include_top
            else None,
            distillation_token=ClassToken(name="distillation_token") if c.distillation else None,
            register_tokens=RegisterTokens(c.num_register_tokens, name="register_tokens")
            if c.num_register_tokens
            else None,
            pre_norm=LayerNorm(epsilon=c.layer_norm_epsilon, name="pre_norm") if c.pre_norm else None,
            distillation_pooling=ClassTokenPooling(1, name="distillation_pooling") if c.distillation else None,
            head_dist=keras.layers.Dense(
                c.num_classes, kernel_initializer="zeros", dtype=float32_head, name="head_dist"
            )
            if c.distillation and c.include_top
            else None,
            head_average=keras.layers.Average(dtype=float32_head, name="head_average") if c.distillation else None,
            pooled_norm=c.pooled_norm,
        )

    @classmethod
    def of(cls, model):
        """The layers of a model made by `build_model` (or loaded from its `.keras` file)."""
        layers = {layer.name: layer for layer in model.layers}
        blocks = sorted(
            (layer for name, layer in layers.items() if isinstance(layer, TransformerBlock)),
            key=lambda block: int(block.name.rpartition("_")[2]),
        )
        norm = layers.get("encoder_norm") or layers.get("pooled_norm")
        missing = [name for name in ("patch_embedding", "position_embedding") if name not in layers]
        missing += [] if norm is not None else ["encoder_norm"]
        if missing or not blocks:
            raise ValueError(
                f"{model.name!r} is not a keras_vit ViT (it lacks {missing or 'transformer blocks'}); "
                "pass a model made by keras_vit.build_vit or loaded from its .keras file."
            )
        return cls(
            patch_embedding=layers["patch_embedding"],
            class_token=layers.get("class_token"),
            position_embedding=layers["position_embedding"],
            embedding_dropout=layers["embedding_dropout"],
            blocks=blocks,
            encoder_norm=norm,
            pooling=next(layers[name] for name in ("token_pooling", "gap_pooling", "map_pooling") if name in layers),
            pre_logits=layers.get("pre_logits"),
            head=layers.get("head"),
            **{name: layers.get(name) for name in _OPTIONAL_LAYERS},
            pooled_norm=norm.name == "pooled_norm",
        )

    @property
    def prefix_tokens(self):
        """The layers that prepend tokens, in the order they are applied (each prepends at index 0)."""
        return [layer for layer in (self.register_tokens, self.distillation_token, self.class_token) if layer]

    @property
    def num_prefix_tokens(self):
        return (
            int(self.class_token is not None)
            + int(self.distillation_token is not None)
            + (self.register_tokens.num_tokens if self.register_tokens is not None else 0)
        )


_OPTIONAL_LAYERS = ("distillation_token", "register_tokens", "pre_norm", "distillation_pooling", "head_dist",
                    "head_average")  # fmt: skip


def _pooling(config):
    if config.pooling == "token":
        return ClassTokenPooling(name="token_pooling")
    if config.pooling == "map":
        return AttentionPooling(
            config.num_heads, config.mlp_dim, config.layer_norm_epsilon, config.activation, name="map_pooling"
        )
    if config.num_prefix_tokens:
        return PatchAveragePooling(config.num_prefix_tokens, name="gap_pooling")
    return keras.layers.GlobalAveragePooling1D(name="gap_pooling")  # 0.1.0's, kept for its files


def model_config(model):
    """The `ViTConfig` of a model made by `build_model` (or loaded from its `.keras` file), read from its layers."""
    layers = ViTLayers.of(model)
    first, last = layers.blocks[0], layers.blocks[-1]
    position = layers.position_embedding
    dynamic = getattr(position, "patch_size", None) is not None
    patch = layers.patch_embedding.patch_size
    pooling = {ClassTokenPooling: "token", AttentionPooling: "map"}.get(type(layers.pooling), "gap")
    return ViTConfig(
        hidden_dim=layers.patch_embedding.hidden_dim,
        num_layers=len(layers.blocks),
        num_heads=first.num_heads,
        mlp_dim=first.mlp_dim,
        patch_size=patch,
        image_size=tuple(g * p for g, p in zip(position.grid, patch)) if dynamic else tuple(model.input_shape[1:3]),
        num_channels=model.input_shape[-1],
        num_classes=layers.head.units if layers.head is not None else 0,
        include_top=layers.head is not None,
        pooling=pooling,
        representation_size=layers.pre_logits.units if layers.pre_logits is not None else None,
        dropout_rate=layers.embedding_dropout.rate,
        attention_dropout_rate=first.attention_dropout_rate,
        drop_path_rate=last.drop_path_rate,  # the last block's; earlier ones get linearly less
        layer_norm_epsilon=first.layer_norm_epsilon,
        class_token=layers.class_token is not None,
        num_register_tokens=layers.register_tokens.num_tokens if layers.register_tokens is not None else 0,
        distillation=layers.distillation_token is not None,
        embed_prefix_tokens=position.num_prefix_tokens > 0 or layers.num_prefix_tokens == 0,
        layer_scale_init=getattr(first, "layer_scale_init", None),
        pre_norm=layers.pre_norm is not None,
        patch_bias=getattr(layers.patch_embedding, "use_bias", True),
        activation=getattr(first, "activation", "gelu"),
        pooled_norm=layers.pooled_norm,
        dynamic_image_size=dynamic,
        **halting.config_fields(model),
    )


def call_block(block, tokens):
    """The default hook: the block as it is."""
    return block(tokens)


def forward(layers, images, block_hook=call_block):
    """The forward graph over `layers` (a `ViTLayers`): images `(B, H, W, C)` -> logits or features.

    Args:
        layers: a `ViTLayers`.
        images: the input tensor.
        block_hook: `hook(block, tokens) -> tokens`, how each block is
            called: `keras_vit.tome` merges tokens there, `attention_model`
            records attention weights. Defaults to calling the block.
    """
    x = embed(layers, images)  # (B, T, D)
    for block in layers.blocks:
        x = block_hook(block, x)
    return readout(layers, x)


def embed(layers, images):
    """Images `(B, H, W, C)` -> the tokens the first block sees, `(B, T, D)`."""
    position = layers.position_embedding
    dynamic = getattr(position, "patch_size", None) is not None

    def add_position(x):
        return position(x, images) if dynamic else position(x)

    x = layers.patch_embedding(images)  # (B, N, D)
    embed_prefix = position.num_prefix_tokens > 0 or layers.num_prefix_tokens == 0
    if not embed_prefix:
        x = add_position(x)  # the patches only (timm's no_embed_class)
    for prefix in layers.prefix_tokens:
        x = prefix(x)  # (B, T, D): [class, distillation, registers..., patches]
    if embed_prefix:
        x = add_position(x)
    x = layers.embedding_dropout(x)
    return layers.pre_norm(x) if layers.pre_norm is not None else x


def readout(layers, tokens):
    """The last block's tokens `(B, T, D)` -> logits `(B, C)`, or the pooled features `(B, D)` without a head."""
    if not layers.pooled_norm:
        tokens = layers.encoder_norm(tokens)
    x = layers.pooling(tokens)  # (B, D)
    if layers.pooled_norm:
        x = layers.encoder_norm(x)
    for layer in (layers.pre_logits, layers.head):
        if layer is not None:
            x = layer(x)
    if layers.distillation_token is not None:  # DeiT: the class and distillation heads, averaged at inference
        distilled = layers.distillation_pooling(tokens)
        if layers.head_dist is not None:
            distilled = layers.head_dist(distilled)
        x = layers.head_average([x, distilled])
    return x


def build_model(config, name=None):
    """The functional `keras.Model` of a `ViTConfig`, with new (randomly initialised) weights.

    Returns:
        A model with one input named `images`, `(B, H, W, C)` float images,
        returning `(B, num_classes)` logits (float32 under a mixed precision
        policy), or the pooled `(B, D)` features without a head.
    """
    if not isinstance(config, ViTConfig):
        raise TypeError(f"config={config!r} must be a keras_vit.ViTConfig.")
    size = (None, None) if config.dynamic_image_size else config.image_size
    images = keras.Input(shape=(*size, config.num_channels), name="images")
    hook = halting.HaltingHook(config) if config.adaptive_tokens else call_block
    return keras.Model(images, forward(ViTLayers.create(config), images, hook), name=name or default_name(config))


def default_name(config):
    """`vit_b16` for B/16, `vit_b16x8` for a non-square patch, `vit_custom` outside the table."""
    variant = config.variant
    if variant is None:
        return "vit_custom"
    rows, cols = config.patch_size
    return f"vit_{variant.split('/')[0].lower()}{rows if rows == cols else f'{rows}x{cols}'}"


def attention_model(model):
    """A functional model over `model`'s own layers that also returns every block's attention.

    `forward` over `ViTLayers.of(model)`, each block called through
    `BlockWithAttention`: the same layer objects and weights, nothing rebuilt
    or copied. Works for class-token and `gap` models, any image size, with or
    without `pre_logits` and `head`; saved as `.keras`, it loads with
    `safe_mode=True`.

    Args:
        model: a model made by `keras_vit.build_vit` (or loaded from its `.keras` file).

    Returns:
        A `keras.Model` mapping `images` to `{"logits": (B, C), "attention":
        [(B, h, T, T)] * L}` (`"logits"` holds the pooled features for a model
        built with `include_top=False`).
    """
    attention = []

    def record(block, tokens):
        tokens, scores = BlockWithAttention(block, name=f"{block.name}_attention")(tokens)  # (B, T, D), (B, h, T, T)
        attention.append(scores)
        return tokens

    images = keras.Input(shape=model.input_shape[1:], name="images")
    logits = forward(ViTLayers.of(model), images, record)
    return keras.Model(images, {"logits": logits, "attention": attention}, name=f"{model.name}_attention")


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

    >>> model = build_model(ViTConfig.from_variant("tiny/8", image_size=(32, 48), num_register_tokens=2))
    >>> features = features_model(model, blocks=[-1], norm=True, prefix_tokens=True)
    >>> {name: tuple(out.shape) for name, out in features(keras.ops.zeros((1, 32, 48, 3))).items()}
    {'block_1': (1, 4, 6, 64), 'block_1_prefix': (1, 3, 64)}
    """
    layers = ViTLayers.of(model)
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
    x = embed(layers, images)
    outputs = {}
    for i, block in enumerate(layers.blocks[: indices[-1] + 1]):
        x = block(x)
        if i in indices:
            y = layers.encoder_norm(x) if norm else x
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
    images = keras.Input((*image_size, model.input_shape[-1]), name="images")
    return keras.Model(images, forward(ViTLayers.of(model), images), name=f"{model.name}_fixed")


@keras.saving.register_keras_serializable(package="keras_vit")
class BlockWithAttention(keras.layers.Layer):
    """Calls a model's `TransformerBlock` with `return_attention_scores=True`, as one graph node.

    Not the block itself in the new graph: Keras' functional graph takes a
    shared layer's number of outputs from its first call, which in the
    trained model returned the tokens alone, so a second call returning two
    outputs fails the connectivity check. This layer's one call returns both;
    the block inside is the model's own, weights and all.

    Args:
        block: the `TransformerBlock` to call.
    """

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def build(self, input_shape):
        if not self.block.built:  # a block deserialised from a saved attention model
            self.block.build(input_shape)

    def call(self, tokens, training=None):
        return self.block(tokens, training=training, return_attention_scores=True)

    def get_config(self):
        return {**super().get_config(), "block": keras.saving.serialize_keras_object(self.block)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "block": keras.saving.deserialize_keras_object(config["block"])})
