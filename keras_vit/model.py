"""The ViT's forward graph, written once: `build_model(config)`, and the views that reuse it.

    images -> patch embedding -> [norm] -> [prefix tokens] -> [position embedding] -> dropout -> [LayerNorm]
           -> blocks -> LayerNorm -> pooling -> [pre-logits Dense + tanh] -> [head]
    images -> [rotary embedding: the sine/cosine table every block's attention rotates with]

The prefix tokens are the class token, DeiT's distillation token and
registers, in that order (`[class, distillation, registers..., patches]`),
prepended after the position embedding instead when it covers the patches
only (`embed_prefix_tokens=False`). The final LayerNorm goes after the
pooling with `pooled_norm`; a distilled model averages its two heads.

`ViTLayers` holds the layers of that graph by role, either new ones for a
`ViTConfig` or those of an existing model; `forward` wires them, calling each
block through a hook that takes and returns a `TokenState`: the tokens and
what each one carries (its position in the embedded sequence, the attention
bias, how many patches it stands for). The model itself, A-ViT's masked
halting (`HaltingHook`) and the views in `keras_vit.views` (attention maps,
intermediate features, token merging, the adaptive-token paths) are `forward`
with another hook over the same layer objects: the same weights, never a
second copy of the graph.

Legend: `B` batch, `N` patches, `T` tokens, `D` hidden_dim, `h` heads.
"""

import dataclasses
import re

import keras

from keras_vit.config import AdaptiveTokens, ViTConfig
from keras_vit.layers import (
    AddPositionEmbedding,
    AttentionPooling,
    ClassToken,
    ClassTokenPooling,
    NaFlexPositionEmbedding,
    PaddingBias,
    PatchAveragePooling,
    PatchEmbedding,
    RegisterTokens,
    RotaryEmbedding,
    TransformerBlock,
)
from keras_vit.layers.functions import make_norm
from keras_vit.layers.halting import Halting, HaltingLoss

# Every layer of the graph by its role, named once. `ViTLayers` holds them; layer-wise decay
# (`training.optimizers`), freezing the backbone, the checkpoints' key mapping and the layout
# map of model parallelism read which layer is which from here, so a layer renamed in one place
# cannot silently fall out of the others.
ROLES = {
    # before the first block (layer-wise decay's depth 0)
    "embedding": ("patch_embedding", "class_token", "distillation_token", "register_tokens", "position_embedding",
                  "embedding_dropout", "pre_norm", "rotary_embedding", "padding_bias", "patch_norm"),
    # after the last block, before the heads
    "readout": ("encoder_norm", "pooled_norm", "token_pooling", "gap_pooling", "map_pooling", "distillation_pooling",
                "pre_logits"),
    # what a new task replaces and a linear probe trains
    "head": ("head", "head_dist", "head_average"),
}  # fmt: skip
BLOCK_NAME = re.compile(r"block_(\d+)")  # "block", at depth i + 1


def layer_role(name):
    """`"embedding"`, `"block"`, `"readout"` or `"head"` for a layer's name; `None` for others (A-ViT's weightless halting layers)."""
    if BLOCK_NAME.fullmatch(name):
        return "block"
    return next((role for role, names in ROLES.items() if name in names), None)


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
    rotary_embedding: keras.layers.Layer = None  # weightless: the table of a rotary position embedding
    padding_bias: keras.layers.Layer = None  # NaFlex: the padding mask -> the attention bias
    patch_norm: keras.layers.Layer = None  # AIMv2's norm on the patch embedding

    @classmethod
    def create(cls, config):
        """New layers for `config`, named as checkpoints and `summary()` know them."""
        c = config
        policy = keras.config.dtype_policy()
        float32_head = "float32" if policy.name.startswith("mixed") else policy
        dynamic = dict(grid=c.grid, patch_size=c.patch_size) if c.dynamic_image_size else {}
        rotary = c.rotary
        if c.naflex:  # SigLIP 2: the table resized to each image's grid
            position = NaFlexPositionEmbedding(c.grid, name="position_embedding")
        elif c.position_embedding:
            prefix = c.num_prefix_tokens if c.embed_prefix_tokens else 0
            position = AddPositionEmbedding(prefix, name="position_embedding", **dynamic)
        else:
            position = None
        return cls(
            patch_embedding=PatchEmbedding(
                c.patch_size, c.hidden_dim, use_bias=c.patch_bias, patchified=c.naflex, name="patch_embedding"
            ),
            class_token=ClassToken(name="class_token") if c.class_token else None,
            position_embedding=position,
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
                    **_block_options(c),
                    name=f"block_{i}",
                )
                for i in range(c.num_layers)
            ],
            encoder_norm=make_norm(
                c.norm, c.layer_norm_epsilon, name="pooled_norm" if c.pooled_norm else "encoder_norm"
            )
            if c.encoder_norm
            else None,
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
            pre_norm=make_norm(c.norm, c.layer_norm_epsilon, name="pre_norm") if c.pre_norm else None,
            patch_norm=make_norm(c.norm, c.layer_norm_epsilon, name="patch_norm") if c.patch_norm else None,
            distillation_pooling=ClassTokenPooling(1, name="distillation_pooling") if c.distillation else None,
            head_dist=keras.layers.Dense(
                c.num_classes, kernel_initializer="zeros", dtype=float32_head, name="head_dist"
            )
            if c.distillation and c.include_top
            else None,
            head_average=keras.layers.Average(dtype=float32_head, name="head_average") if c.distillation else None,
            pooled_norm=c.pooled_norm,
            # float32 under a mixed policy: the angles of far patches need it (the rotation casts back).
            rotary_embedding=RotaryEmbedding(
                c.hidden_dim // c.num_heads,
                c.patch_size,
                c.num_prefix_tokens,
                grid=c.grid,
                **dataclasses.asdict(rotary),
                dtype=float32_head,
                name="rotary_embedding",
            )
            if rotary is not None
            else None,
            padding_bias=PaddingBias(name="padding_bias") if c.naflex else None,
        )

    @classmethod
    def of(cls, model):
        """The layers of a model made by `build_model` (or loaded from its `.keras` file)."""
        layers = {layer.name: layer for layer in model.layers}
        blocks = sorted(
            (layer for name, layer in layers.items() if isinstance(layer, TransformerBlock)),
            key=lambda block: int(block.name.rpartition("_")[2]),
        )
        norm = layers.get("encoder_norm") or layers.get("pooled_norm")  # None: no final norm (PE lang, spatial)
        missing = [name for name in ("patch_embedding",) if name not in layers]
        if missing or not blocks:
            raise ValueError(
                f"{model.name!r} is not a keras_vit ViT (it lacks {missing or 'transformer blocks'}); "
                "pass a model made by keras_vit.build_vit or loaded from its .keras file."
            )
        return cls(
            patch_embedding=layers["patch_embedding"],
            class_token=layers.get("class_token"),
            position_embedding=layers.get("position_embedding"),
            embedding_dropout=layers["embedding_dropout"],
            blocks=blocks,
            encoder_norm=norm,
            pooling=next(layers[name] for name in ("token_pooling", "gap_pooling", "map_pooling") if name in layers),
            pre_logits=layers.get("pre_logits"),
            head=layers.get("head"),
            **{name: layers.get(name) for name in _OPTIONAL_LAYERS},
            pooled_norm=norm is not None and norm.name == "pooled_norm",
            rotary_embedding=layers.get("rotary_embedding"),
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


def image_layers(model, view):
    """`ViTLayers.of(model)` for a view that feeds images (`view` names it); a NaFlex model is refused in one line."""
    layers = ViTLayers.of(model)
    if layers.padding_bias is not None:
        raise ValueError(
            f"{view} takes a model of images; {model.name!r} is a NaFlex model (patches, spatial_shapes, "
            "patch_mask), which it does not take yet."
        )
    return layers


_OPTIONAL_LAYERS = ("distillation_token", "register_tokens", "pre_norm", "distillation_pooling", "head_dist",
                    "head_average", "padding_bias", "patch_norm")  # fmt: skip


def _block_options(config):
    """`TransformerBlock`'s arguments for the 2025-26 families' options of `config`."""
    c = config
    return dict(
        norm=c.norm,
        mlp=c.mlp,
        mlp_norm=c.mlp_norm,
        qkv_bias=c.qkv_bias,
        key_bias=c.key_bias,
        proj_bias=c.proj_bias,
        mlp_bias=c.mlp_bias,
        qk_norm=c.qk_norm,
        attention_norm=c.attention_norm,
        rotate_half=c.rotary.rotate_half if c.rotary is not None else True,
    )


def _pooling(config):
    if config.pooling == "token":
        return ClassTokenPooling(name="token_pooling")
    if config.pooling == "map":
        return AttentionPooling(
            config.map_num_heads or config.num_heads,
            config.map_mlp_dim or config.mlp_dim,
            config.layer_norm_epsilon,
            config.activation,
            norm=config.norm,
            name="map_pooling",
        )
    if config.num_prefix_tokens:
        return PatchAveragePooling(config.num_prefix_tokens, name="gap_pooling")
    return keras.layers.GlobalAveragePooling1D(name="gap_pooling")  # 0.1.0's, kept for its files


def model_config(model):
    """The `ViTConfig` of a model made by `build_model` (or loaded from its `.keras` file), read from its layers."""
    layers = ViTLayers.of(model)
    first, last = layers.blocks[0], layers.blocks[-1]
    position, rotary = layers.position_embedding, layers.rotary_embedding
    naflex = isinstance(position, NaFlexPositionEmbedding)  # three inputs: patches, their grids, a mask
    dynamic = not naflex and None in model.input_shape[1:3]
    grid = position.grid if position is not None else rotary.grid if rotary is not None else None
    patch = layers.patch_embedding.patch_size
    if dynamic or naflex:  # the input's size is not fixed: the learned grid is the model's size
        image_size = tuple(g * p for g, p in zip(grid, patch))
    else:
        image_size = tuple(model.input_shape[1:3])
    pooling = {ClassTokenPooling: "token", AttentionPooling: "map"}.get(type(layers.pooling), "gap")
    return ViTConfig(
        hidden_dim=layers.patch_embedding.hidden_dim,
        num_layers=len(layers.blocks),
        num_heads=first.num_heads,
        mlp_dim=first.mlp_dim,
        patch_size=patch,
        image_size=image_size,
        num_channels=layers.patch_embedding.projection.kernel.shape[2],
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
        embed_prefix_tokens=position is None or position.num_prefix_tokens > 0 or layers.num_prefix_tokens == 0,
        layer_scale_init=getattr(first, "layer_scale_init", None),
        pre_norm=layers.pre_norm is not None,
        patch_bias=getattr(layers.patch_embedding, "use_bias", True),
        activation=getattr(first, "activation", "gelu"),
        pooled_norm=layers.pooled_norm,
        dynamic_image_size=dynamic,
        **_halting_fields(model),
        **_block_fields(first),
        position_embedding=position is not None,
        rotary=rotary.settings if rotary is not None else None,
        **_map_fields(layers.pooling, first),
        naflex=naflex,
        patch_norm=layers.patch_norm is not None,
        encoder_norm=layers.encoder_norm is not None,
    )


def _block_fields(block):
    """The `ViTConfig` fields of the 2025-26 options as a block holds them (0.2.0's blocks: the defaults)."""
    options = ("norm", "mlp_norm", "qkv_bias", "key_bias", "proj_bias", "mlp_bias", "qk_norm", "attention_norm")
    fields = {key: getattr(block, key) for key in options if hasattr(block, key)}
    return {**fields, "mlp": getattr(block, "mlp_kind", "mlp")}


def _map_fields(pooling, block):
    """`map_num_heads` and `map_mlp_dim` of a MAP head, `None` where they are the blocks' own."""
    if not isinstance(pooling, AttentionPooling):
        return {}
    return dict(
        map_num_heads=None if pooling.num_heads == block.num_heads else pooling.num_heads,
        map_mlp_dim=None if pooling.mlp_dim == block.mlp_dim else pooling.mlp_dim,
    )


def _halting_fields(model):
    """The `ViTConfig` fields of adaptive tokens as `model`'s layers hold them (`{}` without them)."""
    layers = {layer.name: layer for layer in model.layers}
    if "halting_loss" not in layers:
        return {}
    gate, loss = layers["halting_0"], layers["halting_loss"]
    return dict(
        adaptive_tokens=AdaptiveTokens(
            gate_scale=gate.gate_scale,
            gate_center=gate.gate_center,
            ponder_loss_weight=loss.ponder_loss_weight,
            distribution_prior_weight=loss.distribution_prior_weight,
            target_depth=loss.target_depth,
        )
    )


@dataclasses.dataclass(frozen=True)
class TokenState:
    """What flows from block to block: the tokens, and what each one carries.

    `embed` makes it, every block hook takes one and returns one
    (`state.replace(tokens=...)`), `readout` reads its tokens. A hook that
    drops, merges or reorders tokens keeps the other fields in step, so a
    layer that needs them downstream (a rotary embedding reading positions,
    attention reading the bias) sees the right ones whatever ran before.

    Attributes:
        tokens: `(B, T, D)`.
        positions: `(B, T)` int32, each token's index in the sequence `embed`
            made (`[prefix..., patches]`: patch `(r, c)` of an `R x C` grid is
            `num_prefix_tokens + r * C + c`), or `None` while no hook has
            moved a token (the index then is the token's place).
        attention_bias: a logits bias broadcastable to `(B, h, T, T)`, or
            `None`: A-ViT's mask of halted keys, token merging's `log(size)`.
        sizes: `(B, T, 1)`, the patches each token stands for (token
            merging), or `None` for ones.
        num_prefix_tokens: class, distillation and register tokens at the front.
        rotary: the `(T0, 2d)` sine/cosine table of a rotary embedding
            (`keras_vit.layers.RotaryEmbedding`), indexed by `positions`; or
            `None` for a model without one.
        padding_bias: `(B, 1, 1, T)`, the bias that hides padding tokens
            (SigLIP 2's NaFlex input), or `None` without padding: the MAP
            pooling reads it (`attention_bias` starts as the same tensor).
    """

    tokens: object
    positions: object = None
    attention_bias: object = None
    sizes: object = None
    num_prefix_tokens: int = 0
    rotary: object = None
    padding_bias: object = None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def block_arguments(self):
        """What a `TransformerBlock` call takes from the state besides the tokens (what is not `None`)."""
        fields = {"attention_bias": self.attention_bias, "positions": self.positions, "rotary": self.rotary}
        return {name: value for name, value in fields.items() if value is not None}


def call_block(block, state):
    """The default hook: the block as it is."""
    return state.replace(tokens=block(state.tokens, **state.block_arguments()))


def forward(layers, images, block_hook=call_block):
    """The forward graph over `layers` (a `ViTLayers`): images `(B, H, W, C)` -> logits or features.

    Args:
        layers: a `ViTLayers`.
        images: the input tensor; for a NaFlex model (`ViTConfig.naflex`)
            the dict of its three inputs (`patches`, `spatial_shapes`, `patch_mask`).
        block_hook: `hook(block, state) -> state` (a `TokenState`), how each
            block is called: token merging merges tokens there, attention maps
            record the weights, A-ViT halts tokens. Defaults to calling the block.
    """
    state = embed(layers, images)  # tokens (B, T, D)
    for block in layers.blocks:
        state = block_hook(block, state)
    return readout(layers, state.tokens, state.padding_bias)


def embed(layers, images):
    """Images `(B, H, W, C)` -> the `TokenState` the first block sees, its tokens `(B, T, D)`."""
    if layers.padding_bias is not None:
        return _embed_patches(layers, images)
    position = layers.position_embedding
    dynamic = getattr(position, "patch_size", None) is not None

    def add_position(x):
        if position is None:  # no absolute table (DINOv3, Naver's RoPE ViTs): positions come from the rotary
            return x
        return position(x, images) if dynamic else position(x)

    x = layers.patch_embedding(images)  # (B, N, D)
    x = layers.patch_norm(x) if layers.patch_norm is not None else x  # AIMv2: before the position embedding
    embed_prefix = position is None or position.num_prefix_tokens > 0 or layers.num_prefix_tokens == 0
    if not embed_prefix:
        x = add_position(x)  # the patches only (timm's no_embed_class)
    for prefix in layers.prefix_tokens:
        x = prefix(x)  # (B, T, D): [class, distillation, registers..., patches]
    if embed_prefix:
        x = add_position(x)
    x = layers.embedding_dropout(x)
    x = layers.pre_norm(x) if layers.pre_norm is not None else x
    rotary = layers.rotary_embedding(images) if layers.rotary_embedding is not None else None  # (T, 2d)
    return TokenState(x, num_prefix_tokens=layers.num_prefix_tokens, rotary=rotary)


def _embed_patches(layers, inputs):
    """NaFlex: `{"patches": (B, N, p*p*C), "spatial_shapes": (B, 2), "patch_mask": (B, N)}` -> the first `TokenState`."""
    x = layers.patch_embedding(inputs["patches"])  # (B, N, D)
    x = layers.position_embedding(x, inputs["spatial_shapes"])  # each image's table, at its own grid
    x = layers.embedding_dropout(x)
    x = layers.pre_norm(x) if layers.pre_norm is not None else x
    bias = layers.padding_bias(inputs["patch_mask"])  # (B, 1, 1, N): padding keys hidden from every query
    return TokenState(x, attention_bias=bias, padding_bias=bias)


def readout(layers, tokens, padding_bias=None):
    """The last block's tokens `(B, T, D)` -> logits `(B, C)`, or the pooled features `(B, D)` without a head.

    `padding_bias`: the `TokenState`'s, which the MAP pooling takes (NaFlex).
    """
    if not layers.pooled_norm and layers.encoder_norm is not None:
        tokens = layers.encoder_norm(tokens)
    x = layers.pooling(tokens) if padding_bias is None else layers.pooling(tokens, attention_bias=padding_bias)
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


class HaltingHook:
    """`forward`'s block hook for adaptive tokens (A-ViT): each block, then its `Halting` layer.

    The masked graph the model trains with: halted tokens stay in the
    sequence, zeroed and masked out of attention through the state's
    attention bias. The hook carries the halting sums from block to block and
    returns, after the last block, the halting-weighted output that the
    encoder norm and the head read. Afterwards `depth` holds the `(B, T)`
    blocks each token ran. `Halting` layers carry no weights, so a hook over a
    trained model's blocks (`keras_vit.views.adaptive`) computes what the model does.
    """

    def __init__(self, config):
        self.config = config
        self.output = self.sums = self.depth = None
        self.mean_scores = []

    def __call__(self, block, state):
        c, index = self.config.adaptive_tokens, len(self.mean_scores)
        tokens = block(state.tokens, **state.block_arguments())
        last = index == self.config.num_layers - 1
        # float32 under a mixed policy too: Keras would otherwise cast the sums carried between blocks to half.
        halting = Halting(c.gate_scale, c.gate_center, last=last, dtype="float32", name=f"halting_{index}")
        tokens, bias, self.output, self.sums, mean_score = halting(tokens, self.output, self.sums)
        self.mean_scores.append(mean_score)
        if not last:
            return state.replace(tokens=tokens, attention_bias=bias)
        loss = HaltingLoss(
            c.ponder_loss_weight, c.distribution_prior_weight, c.target_depth, dtype="float32", name="halting_loss"
        )
        output, self.depth = loss(self.output, self.sums, self.mean_scores)
        return state.replace(tokens=output, attention_bias=None)


def build_model(config, name=None):
    """The functional `keras.Model` of a `ViTConfig`, with new (randomly initialised) weights.

    Returns:
        A model with one input named `images`, `(B, H, W, C)` float images
        (a NaFlex model: three, `patches` `(B, N, p*p*C)` float,
        `spatial_shapes` `(B, 2)` int32 and `patch_mask` `(B, N)` int32),
        returning `(B, num_classes)` logits (float32 under a mixed precision
        policy), or the pooled `(B, D)` features without a head.
    """
    if not isinstance(config, ViTConfig):
        raise TypeError(f"config={config!r} must be a keras_vit.ViTConfig.")
    if config.naflex:
        images = naflex_inputs(config)
    else:
        size = (None, None) if config.dynamic_image_size else config.image_size
        images = keras.Input(shape=(*size, config.num_channels), name="images")
    hook = HaltingHook(config) if config.adaptive_tokens else call_block
    return keras.Model(images, forward(ViTLayers.create(config), images, hook), name=name or default_name(config))


def naflex_inputs(config, num_patches=None):
    """The three `keras.Input`s of a NaFlex model, by name; `num_patches` fixes `N` (`None`: any)."""
    rows, cols = config.patch_size
    return {
        "patches": keras.Input(shape=(num_patches, rows * cols * config.num_channels), name="patches"),
        "spatial_shapes": keras.Input(shape=(2,), dtype="int32", name="spatial_shapes"),
        "patch_mask": keras.Input(shape=(num_patches,), dtype="int32", name="patch_mask"),
    }


def default_name(config):
    """`vit_b16` for B/16, `vit_b16x8` for a non-square patch, `vit_custom` outside the table."""
    variant = config.variant
    if variant is None:
        return "vit_custom"
    rows, cols = config.patch_size
    size = variant.split("/")[0].lower().replace("+", "plus")  # DINOv3's S+: vit_splus16
    return f"vit_{size}{rows if rows == cols else f'{rows}x{cols}'}"
