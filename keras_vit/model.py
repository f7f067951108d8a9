"""`build_vit`: the layers composed into the paper's functional model."""

import functools

import keras

from keras_vit.layers import (
    AddPositionEmbedding,
    ClassToken,
    ClassTokenPooling,
    LayerNorm,
    PatchEmbedding,
    TransformerBlock,
    _positive_int,
    _rate,
    to_pair,
)
from keras_vit.variants import parse_variant

POOLINGS = ("token", "gap")


def build_vit(
    variant="B/16",
    *,
    image_size=224,
    num_classes=1000,
    pooling="token",
    representation_size=None,
    include_top=True,
    patch_size=None,
    hidden_dim=None,
    num_layers=None,
    num_heads=None,
    mlp_dim=None,
    dropout_rate=None,
    attention_dropout_rate=None,
    drop_path_rate=0.0,
    num_channels=3,
    name=None,
    weights=None,
):
    """Builds a Vision Transformer as a functional `keras.Model`.

    images -> patch embedding -> [class token] -> position embedding -> dropout
    -> blocks -> LayerNorm -> pooling -> [pre-logits Dense + tanh] -> head.

    Args:
        variant: `"<size>/<patch>"` from `VARIANTS`, e.g. `"B/16"`, `"S/32"`,
            `"H/14"`. Every explicit argument below overrides the variant's.
        image_size: int or `(height, width)`, each a multiple of the patch
            size. Defaults to `224`.
        num_classes: outputs of the head. Defaults to `1000`.
        pooling: `"token"` (the class token's output) or `"gap"` (mean of the
            patch tokens; the model then has no class token at all, as in the
            original code). Defaults to `"token"`.
        representation_size: size of the pre-logits Dense + tanh layer, or
            `None` for none. Defaults to `None`.
        include_top: add the head; if `False` the model returns the pooled
            `(B, D)` features. Defaults to `True`.
        patch_size, hidden_dim, num_layers, num_heads, mlp_dim, dropout_rate,
            attention_dropout_rate: override the variant's value.
        drop_path_rate: stochastic depth of the last block; earlier blocks get
            linearly less (Huang et al. 2016). Defaults to `0.0`.
        num_channels: image channels. Defaults to `3`.
        name: model name. Defaults to e.g. `"vit_b16"`.
        weights: `None`, a checkpoint file, or the tag of a published
            checkpoint of this variant (`keras_vit.checkpoints.CHECKPOINTS`,
            e.g. `"augreg_in21k_ft_in1k"`), downloaded once. The position
            embedding is resized to `image_size` and a head with another
            `num_classes` starts at zeros (see `keras_vit.load_weights`).
            Defaults to `None`.

    Returns:
        A `keras.Model` with one input named `images`, `(B, H, W, C)` float
        images preprocessed as the weights expect, returning `(B, num_classes)`
        logits (float32 under a mixed precision policy).

    Example:

    >>> model = build_vit("tiny/4", image_size=32, num_classes=10)
    >>> model.output_shape
    (None, 10)
    """
    c = _resolve(locals())  # locals() here is exactly the arguments, by name
    images = keras.Input(shape=(*c["image_size"], c["num_channels"]), name="images")
    x = PatchEmbedding(c["patch_size"], c["hidden_dim"], name="patch_embedding")(images)  # (B, N, D)
    if pooling == "token":
        x = ClassToken(name="class_token")(x)  # (B, N + 1, D)
    x = AddPositionEmbedding(int(pooling == "token"), name="position_embedding")(x)
    x = keras.layers.Dropout(c["dropout_rate"], name="embedding_dropout")(x)
    for i in range(c["num_layers"]):
        x = TransformerBlock(
            c["num_heads"],
            c["mlp_dim"],
            dropout_rate=c["dropout_rate"],
            attention_dropout_rate=c["attention_dropout_rate"],
            drop_path_rate=c["drop_path_rate"] * i / max(c["num_layers"] - 1, 1),
            name=f"block_{i}",
        )(x)
    x = LayerNorm(epsilon=1e-6, name="encoder_norm")(x)
    x = _pool_and_head(x, pooling, representation_size, num_classes if include_top else None)
    model = keras.Model(images, x, name=name or _default_name(variant, c["patch_size"]))
    if weights is not None:
        from keras_vit.weights import load_pretrained  # weights.py builds models with this module

        load_pretrained(model, weights, variant)
    return model


def _resolve(args):
    """The variant's row overridden by the explicit arguments, every value checked."""
    arch, variant_patch = parse_variant(args["variant"])
    patch_size = _pick(args["patch_size"], variant_patch)
    if patch_size is None:
        raise ValueError(
            f"variant={args['variant']!r} names no patch size; write e.g. '{args['variant']}/16' or pass patch_size."
        )
    c = {"patch_size": to_pair(patch_size, "patch_size"), "image_size": to_pair(args["image_size"], "image_size")}
    for size, patch in zip(c["image_size"], c["patch_size"]):
        if size % patch:
            raise ValueError(
                f"image_size={c['image_size']} is not divisible by patch_size={c['patch_size']}; "
                "use an image size that is a multiple of the patch size."
            )
    for key in ("hidden_dim", "num_layers", "num_heads", "mlp_dim"):
        c[key] = _positive_int(_pick(args[key], getattr(arch, key)), key)
    if c["hidden_dim"] % c["num_heads"]:
        raise ValueError(f"hidden_dim={c['hidden_dim']} is not divisible by num_heads={c['num_heads']}.")
    for key in ("dropout_rate", "attention_dropout_rate"):
        c[key] = _rate(_pick(args[key], getattr(arch, key)), key)
    c["drop_path_rate"] = _rate(args["drop_path_rate"], "drop_path_rate")
    if args["pooling"] not in POOLINGS:
        raise ValueError(f"Unknown pooling={args['pooling']!r}; expected one of {POOLINGS}.")
    if args["representation_size"] is not None:
        _positive_int(args["representation_size"], "representation_size")
    if args["include_top"]:
        _positive_int(args["num_classes"], "num_classes")
    c["num_channels"] = _positive_int(args["num_channels"], "num_channels")
    return c


def _pool_and_head(x, pooling, representation_size, num_classes):
    """`(B, T, D)` -> pooled `(B, D)` -> [pre-logits] -> [head logits]."""
    if pooling == "token":
        x = ClassTokenPooling(name="token_pooling")(x)  # (B, D)
    else:
        x = keras.layers.GlobalAveragePooling1D(name="gap_pooling")(x)  # (B, D)
    if representation_size is not None:
        # flax nn.Dense's defaults, which the original code's pre_logits uses: lecun_normal, zero bias.
        x = keras.layers.Dense(
            representation_size, activation="tanh", kernel_initializer="lecun_normal", name="pre_logits"
        )(x)
    if num_classes is not None:
        # Zero-initialised, as the original code; a mixed policy still yields float32 logits.
        policy = keras.config.dtype_policy()
        x = keras.layers.Dense(
            num_classes,
            kernel_initializer="zeros",
            dtype="float32" if policy.name.startswith("mixed") else policy,
            name="head",
        )(x)
    return x


def _pick(value, default):
    return default if value is None else value


def _default_name(variant, patch_size):
    size = str(variant).split("/")[0].lower()
    patch = patch_size[0] if patch_size[0] == patch_size[1] else f"{patch_size[0]}x{patch_size[1]}"
    return f"vit_{size}{patch}"


def _alias(variant):
    builder = functools.partial(build_vit, variant)
    builder.__doc__ = f"`build_vit({variant!r}, **kwargs)`: ViT-{variant}."
    return builder


vit_ti16 = _alias("Ti/16")
vit_s16 = _alias("S/16")
vit_b16 = _alias("B/16")
vit_b32 = _alias("B/32")
vit_l16 = _alias("L/16")
vit_l32 = _alias("L/32")
vit_h14 = _alias("H/14")
