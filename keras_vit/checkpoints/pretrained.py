"""Models with weights: `build_vit` (a variant, optionally pretrained) and `build_from_checkpoint`.

    model = build_vit("B/16", image_size=384, num_classes=10)                 # new weights
    model = build_vit("B/16", weights="augreg_in21k_ft_in1k")                  # a published file
    model, report = build_from_checkpoint("vit_b16.safetensors", num_classes=5) # the file's own architecture

Both go through one `ViTConfig` (from the variants table, or read from the
checkpoint's tensors by `read_config`) and `keras_vit.model.build_model`.
"""

import functools
import logging
import math
import os

from keras_vit.checkpoints import formats
from keras_vit.checkpoints.adapt import (
    CLS,
    DIST,
    EMBEDDING,
    HEAD,
    POSEMB,
    PRE_LOGITS,
    PRE_NORM,
    REGISTERS,
    prefix_count,
)
from keras_vit.checkpoints.formats import CheckpointError
from keras_vit.checkpoints.hub import check_family
from keras_vit.checkpoints.load import LoadReport, apply_checkpoint, load_weights, read_source
from keras_vit.checkpoints.registry import CHECKPOINTS, fetch_checkpoint, find_checkpoint
from keras_vit.config import ViTConfig, parse_variant, to_pair
from keras_vit.model import build_model

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
    interpolation="bicubic",
    antialias=False,
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
        interpolation, antialias, strict: as in `load_weights`.
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
    row = find_checkpoint(path_or_name)
    path = fetch_checkpoint(row, cache_dir) if row else os.fspath(path_or_name)
    variant = variant or (row.variant if row else None)
    source = read_source(path, num_heads=parse_variant(variant)[0].num_heads if variant else None)
    changes = {
        **dict(row.options if row else ()),
        **{key: value for key, value in options.items() if value is not None},
    }
    found = describe(source, image_size or (row.image_size if row else None), given=changes)
    if variant:
        _check_variant(variant, found, path)
    if num_classes is not None:
        changes.update(num_classes=num_classes or 1, include_top=bool(num_classes))
    if representation == "drop":
        changes["representation_size"] = None
    config = found.replace(num_channels=num_channels, **changes)
    model = build_model(config, name=name)
    report = LoadReport(
        path, source.layout, adapted=list(source.notes), checkpoint=row, variant=found.variant, config=config
    )
    report.family = row.family if row else source.hub.family if source.hub else None
    report.scaling = row.scaling if row else source.hub.scaling if source.hub else None
    apply_checkpoint(
        model, source.canonical, report, strict=strict, reset_head="auto",
        drop_representation=representation == "drop", interpolation=interpolation, antialias=antialias,
        source_grid=None,
    )  # fmt: skip
    return model, report


def read_config(path, *, variant=None, image_size=None, **options):
    """The `ViTConfig` of the model a checkpoint file (or hub folder) holds (its native image size unless given).

    Args:
        path: a checkpoint file (any format `load_weights` reads), or a model
            folder as the Hugging Face Hub serves it (weights and `config.json`).
        variant: as in `build_from_checkpoint`, for PyTorch checkpoints whose
            width does not tell the number of heads.
        image_size: the size to describe the model at; needed when the
            checkpoint's grid is not square. Defaults to the checkpoint's.
        **options: `ViTConfig` fields the file cannot tell (e.g. `activation`
            for a CLIP `.safetensors` without its `config.json`).
    """
    source = read_source(path, num_heads=parse_variant(variant)[0].num_heads if variant else None)
    given = {key: value for key, value in options.items() if value is not None}
    return describe(source, image_size, given=given).replace(**given)


def describe(source, image_size=None, given=()):
    """The `ViTConfig` a `load.Source` implies (a feature extractor when it has no head).

    The tensors tell the sizes and which parts exist; the folder's `config.json`
    (`source.hub`) what they cannot (activation, LayerNorm epsilon, pooling,
    native size); failing that, the family's own values. What neither tells and
    matters is an error naming the argument to pass, unless `given` (the
    caller's `ViTConfig` fields) has it.
    """
    canonical, hub_config = source.canonical, source.hub
    if hub_config is not None and hub_config.problems:
        _refuse(source, hub_config.problems)
    try:
        kernel = canonical[EMBEDDING]
        query = canonical["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]
        mlp = canonical["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"]
    except KeyError as e:
        raise CheckpointError(f"The checkpoint has no {e.args[0]!r}: it is not a ViT checkpoint.") from None
    options = {**_family_defaults(source, given), **(hub_config.options if hub_config else {}), **source.facts}
    blocks = {key.split("/")[1] for key in canonical if key.startswith("Transformer/encoderblock_")}
    patch_size = tuple(kernel.shape[:2])
    native = options.pop("image_size", None)
    embedded, grid = _prefix_slots(source, patch_size, native or image_size)
    if image_size is None:
        image_size = native or [g * p for g, p in zip(grid, patch_size)]
    has_probe = "MAPHead_0/probe" in canonical
    layer_scale = "Transformer/encoderblock_0/LayerScale_0/scale" in canonical
    scale = options.pop("layer_scale_init", None)
    config = ViTConfig(
        hidden_dim=kernel.shape[3],
        num_layers=len(blocks),
        num_heads=query.shape[1],
        mlp_dim=mlp.shape[1],
        patch_size=patch_size,
        image_size=image_size,
        pooling=options.pop("pooling", None) or ("map" if has_probe else "token" if CLS in canonical else "gap"),
        class_token=CLS in canonical,
        distillation=DIST in canonical,
        num_register_tokens=canonical[REGISTERS].shape[1] if REGISTERS in canonical else 0,
        embed_prefix_tokens=embedded,
        layer_scale_init=(scale or 1e-5) if layer_scale else None,  # the value only matters for new weights
        pre_norm=PRE_NORM in canonical,
        patch_bias="embedding/bias" in canonical,
        representation_size=canonical[PRE_LOGITS[0]].shape[1] if PRE_LOGITS[0] in canonical else None,
        num_classes=canonical[HEAD[0]].shape[1] if HEAD[0] in canonical else 0,
        include_top=HEAD[0] in canonical,
        **options,
    )
    if hub_config is not None:
        tensor_pooling = "map" if has_probe else "token" if CLS in canonical else "gap"
        problems = check_family(hub_config, config, {"pooling": tensor_pooling})
        if problems:
            _refuse(source, problems)
    return config


def _refuse(source, problems):
    what = f"{source.hub.source} in its config.json" if source.hub else "its tensors"
    raise CheckpointError(
        f"The checkpoint {source.path} ({what}) is not a model keras_vit builds; nothing was built. "
        f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)
    )


def _family_defaults(source, given):
    """What a file without `config.json` cannot say, by the family its tensors show; an error where that is a guess."""
    canonical, layout = source.canonical, source.layout
    if source.hub is not None or layout == formats.KERAS:  # a .keras model says it all (`source.facts`)
        return {}
    defaults = {}
    if "MAPHead_0/probe" in canonical and layout in (formats.BIG_VISION, formats.HUGGING_FACE):
        defaults["activation"] = "gelu_tanh"  # SigLIP as trained (big_vision, transformers); timm runs exact GELU
    if DIST in canonical and layout == formats.HUGGING_FACE:
        defaults["layer_norm_epsilon"] = 1e-12  # transformers' DeiT configs (timm's DeiT: 1e-6)
    if PRE_NORM in canonical:  # CLIP: LayerNorm epsilon 1e-5 in every release; the activation varies
        defaults["layer_norm_epsilon"] = 1e-5
        if "activation" not in given:
            raise CheckpointError(
                f"{source.path} is a CLIP image tower, whose activation its tensors do not tell: pass "
                "activation='quick_gelu' (OpenAI's CLIP weights; timm's *_clip_quickgelu_*) or "
                "activation='gelu' (timm's *_clip_224, OpenCLIP's LAION weights), or pass the model folder "
                "with its config.json."
            )
    return defaults


def _prefix_slots(source, patch_size, image_size):
    """`(whether the position embedding has slots for the prefix tokens, the checkpoint's square grid or None)`.

    timm's `no_embed_class` files (DeiT III, DINOv2 with registers) have none, and nothing but
    the length says so: the grid of `image_size` (the config's or the caller's) decides when it
    fits, else the square one of the two readings.
    """
    canonical = source.canonical
    prefix, length = prefix_count(canonical), canonical[POSEMB].shape[1]
    if image_size is not None:
        rows, cols = (size // p for size, p in zip(to_pair(image_size, "image_size"), patch_size))
        if prefix and length == rows * cols:
            return False, (rows, cols)
        if length == rows * cols + prefix:
            return True, (rows, cols)
    readings = [(True, length - prefix)] + ([(False, length)] if prefix else [])
    for embedded, count in readings:
        if count >= 0 and math.isqrt(count) ** 2 == count:
            return embedded, (math.isqrt(count),) * 2
    if image_size is not None:
        return True, None  # another grid: the resize (or the shape check) says what does not fit
    raise CheckpointError(
        f"The position embedding of {source.path} has {length} tokens, not a square grid, "
        "so its image size is unknown: pass image_size=(height, width)."
    )


def _check_variant(variant, found, path):
    """A `variant` the checkpoint contradicts is a mistake to report, not to build around silently."""
    arch, patch = parse_variant(variant)
    wanted = {key: getattr(arch, key) for key in ("hidden_dim", "num_layers", "num_heads", "mlp_dim")}
    if patch is not None:
        wanted["patch_size"] = (patch, patch)
    differences = [
        f"{k}={getattr(found, k)} (the variant has {v})" for k, v in wanted.items() if getattr(found, k) != v
    ]
    if not differences:
        return
    name = found.variant
    fix = f"it is a {name}: pass variant={name!r}" if name else "it is no variant of the table"
    raise CheckpointError(
        f"variant={variant!r} does not match the checkpoint {path}, which has {', '.join(differences)}; "
        f"{fix}, or leave variant out to build the checkpoint's own architecture."
    )
