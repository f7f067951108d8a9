"""Models with weights: `build_vit` (a variant, optionally pretrained) and `build_from_checkpoint`.

    model = build_vit("B/16", image_size=384, num_classes=10)                 # new weights
    model = build_vit("B/16", weights="augreg_in21k_ft_in1k")                  # a published file
    model, report = build_from_checkpoint("vit_b16.safetensors", num_classes=5) # the file's own architecture

Both go through one `ViTConfig` (from the variants table, or read from the checkpoint by
`checkpoints.checkpoint.read`) and `keras_vit.model.build_model`; a checkpoint's path is a
straight line: read -> `CheckpointData` -> build -> `checkpoints.load.assign` -> `LoadReport`.
"""

import functools
import logging
import os

from keras_vit.checkpoints import checkpoint
from keras_vit.checkpoints.load import LoadReport, assign, load_weights
from keras_vit.checkpoints.registry import CHECKPOINTS, fetch_checkpoint, find_checkpoint
from keras_vit.config import ViTConfig
from keras_vit.model import build_model

__all__ = ["build_vit", "build_from_checkpoint", "vit_ti16", "vit_s16", "vit_b16", "vit_b32", "vit_l16", "vit_l32",
           "vit_h14"]  # fmt: skip

_logger = logging.getLogger("keras_vit")


def build_vit(variant="B/16", *, weights=None, name=None, **options):
    """Builds a Vision Transformer as a functional `keras.Model`.

    images -> patch embedding -> [class token] -> position embedding -> dropout
    -> blocks -> LayerNorm -> pooling -> [pre-logits Dense + tanh] -> head.

    Args:
        variant: `"<size>/<patch>"` from `VARIANTS`, e.g. `"B/16"`, `"S/32"`,
            `"H/14"`, or a whole `ViTConfig`. Defaults to `"B/16"`.
        weights: `None`, a checkpoint file, or the tag of a published
            checkpoint of this variant (`keras_vit.checkpoints.CHECKPOINTS`,
            e.g. `"augreg_in21k_ft_in1k"`), downloaded once. The position
            embedding is resized to `image_size` and a head with another
            `num_classes` starts at zeros (see `keras_vit.load_weights`).
            Defaults to `None`.
        name: model name. Defaults to e.g. `"vit_b16"`.
        **options: any `ViTConfig` field, overriding the variant's:
            `image_size` (int or `(height, width)`, default `224`),
            `num_classes` (`1000`), `pooling` (`"token"` or `"gap"`),
            `representation_size`, `include_top`, `patch_size`, `hidden_dim`,
            `num_layers`, `num_heads`, `mlp_dim`, `dropout_rate`,
            `attention_dropout_rate`, `drop_path_rate`, `num_channels`,
            `layer_norm_epsilon`, and the descendants' options
            (`class_token`, `num_register_tokens`, `distillation`,
            `embed_prefix_tokens`, `layer_scale_init`, `pre_norm`,
            `patch_bias`, `activation`, `pooling="map"`, `pooled_norm`,
            `dynamic_image_size`: see `ViTConfig`). A `None` keeps the
            variant's value.

    Returns:
        A `keras.Model` with one input named `images`, `(B, H, W, C)` float
        images preprocessed as the weights expect, returning `(B, num_classes)`
        logits (float32 under a mixed precision policy).

    Example:

    >>> model = build_vit("tiny/4", image_size=32, num_classes=10)
    >>> model.output_shape
    (None, 10)
    """
    if isinstance(variant, ViTConfig):
        config = variant.replace(**{k: v for k, v in options.items() if v is not None})
    else:
        config = ViTConfig.from_variant(variant, **options)
    model = build_model(config, name=name)
    if weights is not None:
        load_pretrained(model, weights, config.variant if isinstance(variant, ViTConfig) else variant)
    return model


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


def load_pretrained(model, weights, variant):
    """`build_vit(..., weights=...)`: a registry tag for `variant`, a registry name, or a file."""
    row = find_checkpoint(weights, variant)
    if row is None and not os.path.exists(os.fspath(weights)):
        tags = sorted(r.tag for r in CHECKPOINTS.values() if r.variant == str(variant).strip() and r.family == "ViT")
        raise ValueError(
            f"weights={weights!r} is neither a checkpoint file nor a known checkpoint of {variant!r} "
            f"(known: {tags or 'none'})."
        )
    if row is not None and row.family != "ViT":
        raise ValueError(
            f"weights={weights!r} is a {row.family} checkpoint, whose architecture is not the plain {variant}: "
            f"build it with keras_vit.build_from_checkpoint({row.name!r})."
        )
    path = fetch_checkpoint(row) if row else weights
    report = load_weights(model, path, drop_representation=True)
    report.checkpoint = row
    for line in report.adapted:
        _logger.warning("%s: %s", model.name, line)
    return report


def build_from_checkpoint(
    path_or_name,
    *,
    image_size=None,
    num_classes=None,
    variant=None,
    representation="keep",
    num_channels=3,
    interpolation=None,
    antialias=None,
    strict=True,
    cache_dir=None,
    name=None,
    **options,
):
    """Builds the model a checkpoint describes and loads it: the entry point for fine-tuning.

    The architecture (patch size, width, depth, MLP size, pooling,
    representation layer, classes, native resolution) is read from the tensors
    (`read_config`); the arguments change what fine-tuning needs changed.

    Args:
        path_or_name: a checkpoint file, or a registry name such as
            `"B/16:augreg_in21k_ft_in1k"` (`keras_vit.checkpoints.CHECKPOINTS`),
            fetched once with `keras.utils.get_file`.
        image_size: int or `(height, width)` to fine-tune at; the position
            embedding is resized. Defaults to the checkpoint's.
        num_classes: a new head (zeros) with this many classes. Defaults to
            the checkpoint's head; `0` builds a feature extractor (no head).
        variant: e.g. `"B/16"`; needed only for PyTorch checkpoints whose
            width does not tell the number of heads. One the checkpoint
            contradicts (width, depth, heads, MLP size, patch) is a
            `CheckpointError` naming the differences.
        representation: `"keep"` the checkpoint's `pre_logits` layer (if any)
            or `"drop"` it. Defaults to `"keep"`.
        num_channels: input channels; the patch kernel is adapted. Defaults to `3`.
        interpolation, antialias: how a position table is resized to
            `image_size`, as in `load_weights`. Default to what the
            checkpoint's own library does when it resizes it (`checkpoints.load.source_resize`:
            timm bicubic antialiased, transformers bicubic (antialiased for
            DINOv2 with registers), `.npz` bilinear); the report says which.
        strict: as in `load_weights`.
        cache_dir: where downloads are cached. Defaults to `~/.keras`.
        name: the model's name. Defaults to e.g. `"vit_b16"`.
        **options: other `ViTConfig` fields to change (e.g. `drop_path_rate`);
            `None` keeps the checkpoint's.

    Returns:
        `(model, report)`; `report.variant` names the checkpoint's
        architecture (`"B/16"`, or `None` if it is none of `VARIANTS`),
        `report.config` is the `ViTConfig` built, and `report.checkpoint` is
        the registry row (image size, `scaling` for `keras_vit.preprocessing`,
        label set) when loaded by name.
    """
    if representation not in ("keep", "drop"):
        raise ValueError(f"representation={representation!r} must be 'keep' or 'drop'.")
    changes = {key: value for key, value in options.items() if value is not None}
    data = checkpoint.read(path_or_name, variant=variant, image_size=image_size, options=changes, cache_dir=cache_dir)
    if data.row is not None:
        changes = {**dict(data.row.options), **changes}
    if num_classes is not None:
        changes.update(num_classes=num_classes or 1, include_top=bool(num_classes))
    if representation == "drop":
        changes["representation_size"] = None
    config = data.config.replace(num_channels=num_channels, **changes)
    model = build_model(config, name=name)
    report = LoadReport(
        data.path, data.layout, adapted=list(data.notes), checkpoint=data.row, variant=data.config.variant,
        config=config, family=data.family.name if data.family else None, scaling=data.scaling,
    )  # fmt: skip
    assign(
        model, data.arrays, report, strict=strict, reset_head="auto", drop_representation=representation == "drop",
        interpolation=interpolation, antialias=antialias, source_grid=None,
    )  # fmt: skip
    return model, report
