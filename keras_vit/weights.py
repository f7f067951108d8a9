"""Loading the published ViT checkpoints into `keras_vit` models, and writing them back.

    report = load_weights(model, "B_16-i21k-...-res_224.npz")  # any supported format
    save_npz(model, "fine_tuned.npz")                           # back to JAX / timm
    model, report = build_from_checkpoint("B/16:augreg_in21k_ft_in1k", image_size=384)

A load is planned in full before any variable is touched: the checkpoint is
read, translated to the original layout (`checkpoint_formats`), adapted to the
model (position embedding grid, head, representation layer, input channels)
and checked tensor by tensor. Only then are the variables assigned, so a
failed load leaves the model exactly as it was.
"""

import dataclasses
import logging
import math
import os

import numpy as np

from keras_vit import checkpoint_formats as formats
from keras_vit import files
from keras_vit.checkpoint_formats import CheckpointError
from keras_vit.checkpoint_adapt import CLS, EMBEDDING, HEAD, POSEMB, PRE_LOGITS, adapt, adapt_class_slot
from keras_vit.checkpoints import fetch_checkpoint, find_checkpoint
from keras_vit.checkpoint_keys import model_variables

_logger = logging.getLogger("keras_vit")

@dataclasses.dataclass
class LoadReport:
    """What a load did: which tensors it assigned, adapted, skipped.

    Attributes:
        path: the checkpoint file.
        format: `"original"`, `"big_vision"`, `"timm"`, `"hugging_face"` or
            `"keras"` (a `.keras` model saved by keras_vit).
        loaded: checkpoint keys (original layout) assigned to the model.
        adapted: one sentence per adaptation (resized grid, new head, ...).
        skipped: problems ignored by a partial load (`strict=False`).
        checkpoint: the registry row when loaded by name, else `None`.
        variant: the checkpoint's architecture as a `VARIANTS` name such as
            `"B/16"` (`build_from_checkpoint` only), or `None` for one that is
            no row of the table.
    """

    path: str
    format: str
    loaded: list = dataclasses.field(default_factory=list)
    adapted: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    checkpoint: object = None
    variant: str = None

    def __str__(self):
        lines = [f"Loaded {len(self.loaded)} tensors from {self.path} ({self.format} layout)."]
        lines += [f"  adapted: {line}" for line in self.adapted]
        lines += [f"  skipped: {line}" for line in self.skipped]
        return "\n".join(lines)


def read_checkpoint(path, num_heads=None):
    """Reads any supported file into `(layout, arrays in the original layout)`.

    Args:
        path: an `.npz`, `.safetensors` or keras_vit `.keras` file; the format
            comes from its content.
        num_heads: heads of the attention layers, needed for PyTorch layouts
            (which store them flattened); guessed from the width if `None`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint at {path}.")
    kind = formats.sniff_format(path)
    if kind == "keras":
        return formats.KERAS, formats.read_keras(path)  # already in the original layout
    arrays = formats.read_npz(path) if kind == "npz" else formats.read_safetensors(path)
    layout = formats.detect_layout(arrays)
    if layout in (formats.TIMM, formats.HUGGING_FACE) and num_heads is None:
        num_heads = _guess_num_heads(arrays)
    return layout, formats.to_canonical(arrays, layout, num_heads)


def _guess_num_heads(arrays):
    from keras_vit.variants import VARIANTS

    kernel = next(v for k, v in arrays.items() if k.endswith(("patch_embed.proj.weight", "projection.weight")))
    heads = {row.num_heads for row in VARIANTS.values() if row.hidden_dim == kernel.shape[0]}
    if len(heads) != 1:
        raise CheckpointError(
            f"Cannot tell the number of attention heads of a width-{kernel.shape[0]} PyTorch checkpoint; "
            "pass variant= (or num_heads=)."
        )
    return heads.pop()


def load_weights(
    model,
    path,
    *,
    strict=True,
    interpolation="bicubic",
    antialias=False,
    source_grid=None,
    reset_head="auto",
    drop_representation=False,
):
    """Loads a ViT checkpoint into a `build_vit` model, adapting what can be adapted.

    Formats, told apart by the file's content: the original and AugReg `.npz`
    (google-research/vision_transformer), big_vision `.npz`, timm or
    Hugging Face ViT state dicts in safetensors, and `.keras` models saved by
    keras_vit (a run's `model.keras`, to fine-tune from).

    Args:
        model: a model from `build_vit`.
        path: the checkpoint file.
        strict: if `True` (default), any missing, unexpected or wrong-shaped
            tensor raises one `CheckpointError` listing all of them, and the
            model is left untouched. If `False`, the tensors that fit are
            loaded and the rest is listed in `report.skipped`.
        interpolation: `"bicubic"` (default) or `"bilinear"`, for resizing the
            position embedding to the model's patch grid; the same numbers as
            torch's `F.interpolate(align_corners=False)`.
        antialias: torch's `antialias=True` filters (timm's default when it
            loads state dicts). Defaults to `False`.
        source_grid: `(rows, cols)` of the checkpoint's patch grid, needed only
            when it is not square and differs from the model's.
        reset_head: `"auto"` (default) gives the model a new zero head when
            the checkpoint's head has another number of classes (or there is
            none); `True` always does; `False` treats a mismatch as an error.
        drop_representation: load a checkpoint with a `pre_logits` layer into a
            model without one (the head is then re-initialised too, since it
            was trained on the dropped layer's outputs). Defaults to `False`.

    Returns:
        A `LoadReport`.
    """
    layout, canonical = read_checkpoint(path, num_heads=_model_num_heads(model))
    options = dict(interpolation=interpolation, antialias=antialias, source_grid=source_grid)
    return apply_checkpoint(
        model, canonical, LoadReport(os.fspath(path), layout), strict=strict, reset_head=reset_head,
        drop_representation=drop_representation, **options,
    )


def model_grid(model):
    """`(rows, cols)` of the model's patch grid."""
    patch = model.get_layer("patch_embedding").patch_size
    return tuple(size // p for size, p in zip(model.input_shape[1:3], patch))


def _model_num_heads(model):
    query = model_variables(model).get("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
    return None if query is None else query.shape[1]


def apply_checkpoint(model, canonical, report, *, strict, reset_head, drop_representation, **resize):
    """Adapts, checks and assigns arrays in the original layout; see `load_weights`."""
    targets = model_variables(model)
    source = dict(canonical)
    grid = model_grid(model)
    if report.format == formats.TIMM:
        adapt_class_slot(targets, source, report.adapted, resize["source_grid"])
    problems = adapt(targets, source, report.adapted, grid, reset_head, drop_representation, **resize)
    reported = {problem.split(":")[0] for problem in problems}
    problems += [p for p in _check(targets, source) if p.split(":")[0] not in reported]
    if problems and strict:
        raise CheckpointError(
            f"The checkpoint {report.path} ({report.format} layout) does not fit the model "
            f"{model.name!r}; nothing was loaded. {len(problems)} problem(s):\n  "
            + "\n  ".join(problems)
            + "\nPass strict=False to load only the tensors that fit."
        )
    bad = {p.split(":")[0] for p in problems}
    for key, variable in targets.items():
        if key in source and key not in bad:
            variable.assign(np.asarray(source[key], dtype=variable.dtype))
            report.loaded.append(key)
    report.skipped.extend(problems)
    return report


def _check(targets, source):
    problems = [f"{key}: missing from the checkpoint" for key in targets if key not in source]
    problems += [
        f"{key}: unexpected in the checkpoint {tuple(source[key].shape)}" + _hint(key) for key in source if key not in targets
    ]
    problems += [
        f"{key}: checkpoint shape {tuple(source[key].shape)} != model shape {tuple(var.shape)}"
        for key, var in targets.items()
        if key in source and tuple(source[key].shape) != tuple(var.shape)
    ]
    return problems


def _hint(key):
    if key.startswith("pre_logits/"):
        return " (the model has no representation layer: pass drop_representation=True to drop it)"
    return ""


def save_npz(model, path, *, layout="original"):
    """Writes a `build_vit` model as a ViT `.npz` checkpoint.

    Args:
        model: a model from `build_vit`.
        path: the file to write (atomically: a temporary file, then renamed).
        layout: `"original"` (google-research/vision_transformer, read by
            timm's `load_pretrained` and the JAX code) or `"big_vision"`
            (`params/` prefix, position embedding without the class slot).
            Defaults to `"original"`.

    Returns:
        The path written.
    """
    if layout not in (formats.ORIGINAL, formats.BIG_VISION):
        raise ValueError(f"Unknown layout={layout!r}; expected 'original' or 'big_vision'.")
    arrays = {key: np.asarray(variable.numpy(), "float32") for key, variable in model_variables(model).items()}
    unknown = [key for key in arrays if key.startswith("keras:")]
    if unknown:
        raise ValueError(f"The model has weights with no place in a ViT checkpoint: {unknown}.")
    if layout == formats.BIG_VISION:
        arrays = formats.to_big_vision(arrays)
    path = os.fspath(path)
    with files.atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return path


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
    **build_kwargs,
):
    """Builds the model a checkpoint describes and loads it: the entry point for fine-tuning.

    The architecture (patch size, width, depth, MLP size, pooling,
    representation layer, classes, native resolution) is read from the tensors;
    the arguments change what fine-tuning needs changed.

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
        **build_kwargs: passed to `build_vit` (e.g. `drop_path_rate`).

    Returns:
        `(model, report)`; `report.variant` names the checkpoint's
        architecture (`"B/16"`, or `None` if it is none of `VARIANTS`) and
        `report.checkpoint` is the registry row (image size, `scaling` for
        `keras_vit.preprocessing`, label set) when loaded by name.
    """
    from keras_vit.model import build_vit
    from keras_vit.variants import parse_variant

    if representation not in ("keep", "drop"):
        raise ValueError(f"representation={representation!r} must be 'keep' or 'drop'.")
    row = find_checkpoint(path_or_name)
    path = fetch_checkpoint(row, cache_dir) if row else os.fspath(path_or_name)
    variant = variant or (row.variant if row else None)
    layout, canonical = read_checkpoint(path, num_heads=parse_variant(variant)[0].num_heads if variant else None)
    found = describe_checkpoint(canonical, layout)
    if variant:
        _check_variant(variant, found, path)
    name = variant_name(found)
    build_kwargs.setdefault("name", None if name else "vit_custom")
    if num_classes is None:
        num_classes = found["num_classes"] or 0
    model = build_vit(
        name.split("/")[0] if name else "tiny",
        image_size=image_size or (row.image_size if row else _native_image_size(found, canonical, path)),
        num_classes=num_classes or 1,
        include_top=bool(num_classes),
        pooling=found["pooling"],
        representation_size=found["representation_size"] if representation == "keep" else None,
        num_channels=num_channels,
        **{k: found[k] for k in _ARCHITECTURE},
        **build_kwargs,
    )
    report = LoadReport(path, layout, checkpoint=row, variant=name)
    apply_checkpoint(
        model, canonical, report, strict=strict, reset_head="auto", drop_representation=representation == "drop",
        interpolation=interpolation, antialias=antialias, source_grid=None,
    )
    return model, report


_ARCHITECTURE = ("patch_size", "hidden_dim", "num_layers", "num_heads", "mlp_dim")


def describe_checkpoint(canonical, layout=formats.ORIGINAL):
    """The architecture a checkpoint in the original layout implies, as `build_vit` arguments.

    `grid` is the square patch grid of its position embedding, or `None` when
    the length is no square (a rectangular grid, which the tensors cannot tell).
    """
    try:
        kernel = canonical[EMBEDDING]
        query = canonical["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]
        mlp = canonical["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"]
    except KeyError as e:
        raise CheckpointError(f"The checkpoint has no {e.args[0]!r}: it is not a ViT checkpoint.") from None
    blocks = {key.split("/")[1] for key in canonical if key.startswith("Transformer/encoderblock_")}
    prefix = int(CLS in canonical)
    # timm's position embedding may lack the class slot (`no_embed_class`): then its whole length is the grid.
    length = canonical[POSEMB].shape[1]
    lengths = [length - prefix] + ([length] if prefix and layout == formats.TIMM else [])
    side = next((math.isqrt(n) for n in lengths if math.isqrt(n) ** 2 == n), None)
    return {
        "patch_size": tuple(kernel.shape[:2]),
        "hidden_dim": kernel.shape[3],
        "num_heads": query.shape[1],
        "num_layers": len(blocks),
        "mlp_dim": mlp.shape[1],
        "pooling": "token" if prefix else "gap",
        "representation_size": canonical[PRE_LOGITS[0]].shape[1] if PRE_LOGITS[0] in canonical else None,
        "num_classes": canonical[HEAD[0]].shape[1] if HEAD[0] in canonical else None,
        "grid": (side, side) if side else None,
    }


def variant_name(found):
    """`"B/16"` for an architecture (from `describe_checkpoint`) that is a row of `VARIANTS`, else `None`.

    A non-square patch gets the bare row name (`"B"`), which `build_vit` takes with `patch_size`.
    """
    from keras_vit.variants import VARIANTS

    shape = tuple(found[k] for k in ("hidden_dim", "num_layers", "num_heads", "mlp_dim"))
    names = [n for n, v in VARIANTS.items() if (v.hidden_dim, v.num_layers, v.num_heads, v.mlp_dim) == shape]
    rows, cols = found["patch_size"]
    if not names:
        return None
    return f"{names[0]}/{rows}" if rows == cols else names[0]


def _check_variant(variant, found, path):
    """A `variant` the checkpoint contradicts is a mistake to report, not to build around silently."""
    from keras_vit.variants import parse_variant

    arch, patch = parse_variant(variant)
    wanted = {k: getattr(arch, k) for k in _ARCHITECTURE[1:]}
    if patch is not None:
        wanted["patch_size"] = (patch, patch)
    differences = [f"{k}={found[k]} (the variant has {v})" for k, v in wanted.items() if found[k] != v]
    if not differences:
        return
    name = variant_name(found)
    fix = f"it is a {name}: pass variant={name!r}" if name else "it is no variant of the table"
    raise CheckpointError(
        f"variant={variant!r} does not match the checkpoint {path}, which has {', '.join(differences)}; "
        f"{fix}, or leave variant out to build the checkpoint's own architecture."
    )


def _native_image_size(found, canonical, path):
    """The image size the checkpoint was trained at, from its square grid; else it must be given."""
    if found["grid"] is None:
        raise CheckpointError(
            f"The position embedding of {path} has {canonical[POSEMB].shape[1]} tokens, not a square grid, "
            "so its image size is unknown: pass image_size=(height, width)."
        )
    return [g * p for g, p in zip(found["grid"], found["patch_size"])]


def load_pretrained(model, weights, variant):
    """`build_vit(..., weights=...)`: a registry tag for `variant`, a registry name, or a file."""
    row = find_checkpoint(weights, variant)
    if row is None and not os.path.exists(os.fspath(weights)):
        from keras_vit.checkpoints import CHECKPOINTS

        tags = sorted(r.tag for r in CHECKPOINTS.values() if r.variant == str(variant).strip())
        raise ValueError(
            f"weights={weights!r} is neither a checkpoint file nor a known checkpoint of {variant!r} "
            f"(known: {tags or 'none'})."
        )
    path = fetch_checkpoint(row) if row else weights
    report = load_weights(model, path, drop_representation=True)
    report.checkpoint = row
    for line in report.adapted:
        _logger.warning("%s: %s", model.name, line)
    return report
