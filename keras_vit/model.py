"""The ViT's forward graph, written once: `build_model(config)`, and the views that reuse it.

    images -> patch embedding -> [class token] -> position embedding -> dropout
           -> blocks -> LayerNorm -> pooling -> [pre-logits Dense + tanh] -> [head]

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
    ClassToken,
    ClassTokenPooling,
    LayerNorm,
    PatchEmbedding,
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

    @classmethod
    def create(cls, config):
        """New layers for `config`, named as checkpoints and `summary()` know them."""
        c = config
        policy = keras.config.dtype_policy()
        return cls(
            patch_embedding=PatchEmbedding(c.patch_size, c.hidden_dim, name="patch_embedding"),
            class_token=ClassToken(name="class_token") if c.pooling == "token" else None,
            position_embedding=AddPositionEmbedding(c.num_prefix_tokens, name="position_embedding"),
            embedding_dropout=keras.layers.Dropout(c.dropout_rate, name="embedding_dropout"),
            blocks=[
                TransformerBlock(
                    c.num_heads,
                    c.mlp_dim,
                    dropout_rate=c.dropout_rate,
                    attention_dropout_rate=c.attention_dropout_rate,
                    drop_path_rate=c.drop_path_rate * i / max(c.num_layers - 1, 1),
                    layer_norm_epsilon=c.layer_norm_epsilon,
                    name=f"block_{i}",
                )
                for i in range(c.num_layers)
            ],
            encoder_norm=LayerNorm(epsilon=c.layer_norm_epsilon, name="encoder_norm"),
            pooling=(
                ClassTokenPooling(name="token_pooling")
                if c.pooling == "token"
                else keras.layers.GlobalAveragePooling1D(name="gap_pooling")
            ),
            # flax nn.Dense's defaults, which the original code's pre_logits uses: lecun_normal, zero bias.
            pre_logits=keras.layers.Dense(
                c.representation_size, activation="tanh", kernel_initializer="lecun_normal", name="pre_logits"
            )
            if c.representation_size is not None
            else None,
            # Zero-initialised, as the original code; a mixed policy still yields float32 logits.
            head=keras.layers.Dense(
                c.num_classes,
                kernel_initializer="zeros",
                dtype="float32" if policy.name.startswith("mixed") else policy,
                name="head",
            )
            if c.include_top
            else None,
        )

    @classmethod
    def of(cls, model):
        """The layers of a model made by `build_model` (or loaded from its `.keras` file)."""
        layers = {layer.name: layer for layer in model.layers}
        blocks = sorted(
            (layer for name, layer in layers.items() if isinstance(layer, TransformerBlock)),
            key=lambda block: int(block.name.rpartition("_")[2]),
        )
        missing = [name for name in ("patch_embedding", "position_embedding", "encoder_norm") if name not in layers]
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
            encoder_norm=layers["encoder_norm"],
            pooling=layers.get("token_pooling") or layers["gap_pooling"],
            pre_logits=layers.get("pre_logits"),
            head=layers.get("head"),
        )


def model_config(model):
    """The `ViTConfig` of a model made by `build_model` (or loaded from its `.keras` file), read from its layers."""
    layers = ViTLayers.of(model)
    first, last = layers.blocks[0], layers.blocks[-1]
    return ViTConfig(
        hidden_dim=layers.patch_embedding.hidden_dim,
        num_layers=len(layers.blocks),
        num_heads=first.num_heads,
        mlp_dim=first.mlp_dim,
        patch_size=layers.patch_embedding.patch_size,
        image_size=tuple(model.input_shape[1:3]),
        num_channels=model.input_shape[-1],
        num_classes=layers.head.units if layers.head is not None else 0,
        include_top=layers.head is not None,
        pooling="token" if layers.class_token is not None else "gap",
        representation_size=layers.pre_logits.units if layers.pre_logits is not None else None,
        dropout_rate=layers.embedding_dropout.rate,
        attention_dropout_rate=first.attention_dropout_rate,
        drop_path_rate=last.drop_path_rate,  # the last block's; earlier ones get linearly less
        layer_norm_epsilon=first.layer_norm_epsilon,
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
    x = layers.patch_embedding(images)  # (B, N, D)
    if layers.class_token is not None:
        x = layers.class_token(x)  # (B, N + 1, D)
    x = layers.embedding_dropout(layers.position_embedding(x))  # (B, T, D)
    for block in layers.blocks:
        x = block_hook(block, x)
    x = layers.pooling(layers.encoder_norm(x))  # (B, D)
    for layer in (layers.pre_logits, layers.head):
        if layer is not None:
            x = layer(x)
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
    images = keras.Input(shape=(*config.image_size, config.num_channels), name="images")
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
