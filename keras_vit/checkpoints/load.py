"""Loading the published ViT checkpoints into `keras_vit` models, and writing them back.

    report = load_weights(model, "B_16-i21k-...-res_224.npz")  # any supported format
    save_npz(model, "fine_tuned.npz")                           # back to JAX / timm

A load is planned in full before any variable is touched: the checkpoint is
read, translated to the original layout (`formats`), adapted to the
model (position embedding grid, head, representation layer, input channels)
and checked tensor by tensor. Only then are the variables assigned, so a
failed load leaves the model exactly as it was.
"""

import dataclasses
import os

import numpy as np
from safetensors.numpy import save as safetensors_save

from keras_vit import files
from keras_vit.checkpoints import big_vision, formats, timm
from keras_vit.checkpoints.adapt import adapt, adapt_prefix_slots
from keras_vit.checkpoints.canonical import QUERY, CheckpointError, model_variables
from keras_vit.checkpoints.checkpoint import read_arrays
from keras_vit.model import model_config


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
        config: the `ViTConfig` of the model built (`build_from_checkpoint` only).
        family: `"DINOv2"`, `"SigLIP"`, `"CLIP"`, `"DeiT"`, ... as the registry
            row or the folder's `config.json` names it (`build_from_checkpoint`
            only), else `None`.
        scaling: the pixel scaling the weights expect (`keras_vit.preprocessing`
            `SCALINGS` name) when the registry row or `config.json` tells it.
    """

    path: str
    format: str
    loaded: list = dataclasses.field(default_factory=list)
    adapted: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    checkpoint: object = None
    variant: str = None
    config: object = None
    family: str = None
    scaling: str = None

    def __str__(self):
        lines = [f"Loaded {len(self.loaded)} tensors from {self.path} ({self.format} layout)."]
        lines += [f"  adapted: {line}" for line in self.adapted]
        lines += [f"  skipped: {line}" for line in self.skipped]
        return "\n".join(lines)


def load_weights(
    model,
    path,
    *,
    strict=True,
    interpolation=None,
    antialias=None,
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
        interpolation: `"bicubic"` or `"bilinear"`, for resizing the position
            embedding to the model's patch grid; the same numbers as torch's
            `F.interpolate(align_corners=False)`. Defaults to what the
            checkpoint's own library uses (`source_resize`).
        antialias: torch's `antialias=True` filters. Defaults to what the
            checkpoint's own library uses (`source_resize`: timm antialiases
            when it loads state dicts).
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
    data = read_arrays(path, num_heads=_model_num_heads(model))
    return assign(
        model,
        data.arrays,
        LoadReport(
            os.fspath(path), data.layout, adapted=list(data.notes), family=data.family.name if data.family else None
        ),
        strict=strict,
        reset_head=reset_head,
        drop_representation=drop_representation,
        interpolation=interpolation,
        antialias=antialias,
        source_grid=source_grid,
    )


def model_grid(model):
    """`(rows, cols)` of the model's patch grid."""
    layers = {layer.name: layer for layer in model.layers}
    position = layers.get("position_embedding") or layers.get("rotary_embedding")  # DINOv3 has no table
    if getattr(position, "grid", None) is not None:  # a model of any input size: the grid it learned at
        return position.grid
    patch = model.get_layer("patch_embedding").patch_size
    return tuple(size // p for size, p in zip(model.input_shape[1:3], patch))


def _model_num_heads(model):
    query = model_variables(model).get(QUERY)
    return None if query is None else query.shape[1]


def source_resize(layout, family, registers):
    """`(interpolation, antialias)` a position table is resized with by the library that wrote it.

    timm's state-dict loader (`checkpoint_filter_fn` -> `resample_abs_pos_embed`) filters bicubic
    with antialiasing; its `.npz` loader (the original and big_vision files) bilinear without;
    transformers resizes bicubic at run time (`interpolate_pos_encoding`), antialiased only in
    DINOv2 with registers. A keras_vit `.keras` model: bicubic.
    """
    if layout == formats.TIMM:
        return "bicubic", True
    if layout in (formats.ORIGINAL, formats.BIG_VISION):
        return "bilinear", False
    return "bicubic", layout == formats.HUGGING_FACE and family == "DINOv2" and registers > 0


def assign(model, canonical, report, *, strict, reset_head, drop_representation, **resize):
    """Adapts, checks and assigns arrays in the canonical layout, all or none; see `load_weights`.

    `resize`'s `interpolation` and `antialias` left `None` are the checkpoint's library's (`source_resize`).
    """
    interpolation, antialias = source_resize(report.format, report.family, model_config(model).num_register_tokens)
    resize["interpolation"] = resize.get("interpolation") or interpolation
    resize["antialias"] = antialias if resize.get("antialias") is None else resize["antialias"]
    targets = model_variables(model)
    source = dict(canonical)
    grid = model_grid(model)
    adapt_prefix_slots(
        targets, source, report.adapted, resize["source_grid"], grid, insert=report.format == formats.TIMM
    )
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
        f"{key}: unexpected in the checkpoint {tuple(source[key].shape)}" + _hint(key)
        for key in source
        if key not in targets
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
        arrays = big_vision.to_big_vision(arrays)
    path = os.fspath(path)
    with files.atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def save_timm(model, path, *, scaling=None):
    """Writes a `build_vit` model (any family) in timm's layout, to run it in PyTorch.

    Args:
        model: a model from `build_vit` or `build_from_checkpoint`.
        path: a `.safetensors` file (the state dict alone), or a folder, which
            gets the hub's layout: `model.safetensors` and timm's `config.json`
            (`architecture` and `model_args`), so that
            `timm.create_model(config["architecture"], **config["model_args"])`
            builds the model the state dict fits. Written atomically.
        scaling: the pixel scaling the model expects (`"imagenet"`, `"clip"`,
            `"vit"`), recorded as `pretrained_cfg`'s mean and std. Defaults
            to `None` (not recorded).

    Returns:
        The path written.

    Raises:
        ValueError: for a model timm's `VisionTransformer` cannot express (a
            representation layer, a LayerNorm epsilon other than 1e-6 or CLIP's
            1e-5, a patch bias that is not `not pre_norm`).
    """
    config = model_config(model)
    eva = timm.eva_problems(config)
    if eva:  # EVA-02, Perception Encoder: timm builds them with eva.py's own names, which this does not write
        raise ValueError(f"timm's VisionTransformer cannot express {', '.join(eva)} (timm's EVA-02 / PE models).")
    arrays = {key: np.asarray(variable.numpy(), "float32") for key, variable in model_variables(model).items()}
    state = timm.to_timm(arrays, pooled_norm=config.pooled_norm, eva=config.rotary is not None)
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        _write_safetensors(state, path)
        return path
    timm_config = timm.write_config(config, scaling)
    os.makedirs(path, exist_ok=True)
    _write_safetensors(state, os.path.join(path, formats.WEIGHTS))
    files.write_json(os.path.join(path, formats.CONFIG), timm_config)
    return path


def _write_safetensors(state, path):
    with files.atomic_write(path, "wb") as f:
        f.write(safetensors_save(state))
