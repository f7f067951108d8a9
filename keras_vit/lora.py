"""LoRA fine-tuning (Hu et al. 2021) with Keras' own `Dense.enable_lora`, and adapters saved alone.

    enable_lora(model, rank=4)        # low-rank A, B beside each targeted kernel; the rest frozen, heads trained
    model.fit(...)                    # trains A, B and the heads
    save_adapters(model, "adapters.safetensors")        # kilobytes: A, B, the heads, and the base's fingerprint
    load_adapters(base_model, "adapters.safetensors")   # onto the same base, refused on another

Keras does the arithmetic: each targeted Dense computes `x @ (W + (alpha / rank) * A @ B)` with
`W` frozen, `B` starting at zero (so training starts from the base model exactly), and
`model.save` writes the merged kernel: a LoRA model's `.keras` file, and everything exported
from it, is the merged plain model, with no LoRA layers left to convert.

The targets name the Dense layers of every `TransformerBlock` (and of a MAP head):
`"qkv"` (the fused query/key/value projection; our one `(D, 3D)` matmul, so query and value
cannot be adapted without key), `"proj"` (attention's output projection) and `"mlp"` (both MLP
layers). The default, attention only (`qkv` and `proj`), follows the LoRA paper, which adapts
the attention weights alone and finds that enough for most of the gain, and the LoRA-for-ViT
practice (PEFT's image-classification recipes, MeLo) of adapting the attention projections;
`mlp` triples the adapter parameters for the harder transfers.

Legend: `D` hidden_dim.
"""

import hashlib
import json

import keras
import numpy as np

from keras_vit import files
from keras_vit.layers import AttentionPooling, SelfAttention, TransformerBlock

TARGETS = ("qkv", "proj", "mlp")
DEFAULT_TARGETS = ("qkv", "proj")
# The layers trained in full besides the adapters: the classifier heads (DeiT's distillation head too).
HEAD_LAYERS = ("head", "head_dist")
FORMAT = "keras_vit.lora/1"


def targeted_layers(model, targets=DEFAULT_TARGETS):
    """The Dense layers `targets` name in `model`, in a fixed order (by path)."""
    targets = check_targets(targets)
    found = []
    for layer in model._flatten_layers():
        if isinstance(layer, SelfAttention):
            found += [layer.qkv] * ("qkv" in targets) + [layer.output_dense] * ("proj" in targets)
        elif isinstance(layer, TransformerBlock):
            found += [layer.mlp_dense_1, layer.mlp_dense_2] * ("mlp" in targets)
        elif isinstance(layer, AttentionPooling):
            found += [layer.query, layer.key_value] * ("qkv" in targets)
            found += [layer.output_dense] * ("proj" in targets) + [layer.mlp_dense_1, layer.mlp_dense_2] * (
                "mlp" in targets
            )
    if not found:
        raise ValueError(f"{model.name!r} has no transformer blocks to adapt; pass a model made by keras_vit.")
    return sorted(found, key=lambda layer: layer.path)


def check_targets(targets):
    """`targets` as a tuple of `TARGETS` (a comma-separated string works too)."""
    targets = tuple(t.strip() for t in targets.split(",")) if isinstance(targets, str) else tuple(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"LoRA targets={targets!r}: expected some of {TARGETS} (e.g. 'qkv,proj').")
    return targets


def enable_lora(model, rank, targets=DEFAULT_TARGETS, *, alpha=None, train=()):
    """Adds LoRA adapters of `rank` to the targeted Dense layers and freezes everything else.

    Args:
        model: a built keras_vit model (e.g. from `build_vit(..., weights=...)`).
        rank: the adapters' rank `r`, e.g. 4 to 16.
        targets: which Dense layers get adapters (see the module docstring).
            Defaults to `("qkv", "proj")`.
        alpha: LoRA's scale numerator (`alpha / rank` multiplies `A @ B`).
            Defaults to `rank` (a scale of 1), Keras' default.
        train: names of more of the model's layers to train in full (e.g.
            `"map_pooling"`, `"encoder_norm"`) besides the adapters and the
            classifier heads, which always train. Defaults to none.

    Returns:
        The model, for chaining. Compile it afterwards: the optimiser takes
        the trainable variables when it is built.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank={rank!r} must be a positive integer (4 to 16 is usual).")
    names = {layer.name for layer in model.layers}
    unknown = [name for name in train if name not in names]
    if unknown:
        raise ValueError(f"train={unknown} names no layer of {model.name!r}; its layers are {sorted(names)}.")
    layers = targeted_layers(model, targets)
    for variable in model.variables:
        variable.trainable = False
    for layer in layers:
        layer.enable_lora(rank, lora_alpha=alpha)
    for layer in model.layers:
        if layer.name in (*HEAD_LAYERS, *train):
            for variable in layer.variables:
                variable.trainable = True
    return model


def lora_layers(model):
    """The Dense layers of `model` with LoRA enabled, by path."""
    return sorted(
        (layer for layer in model._flatten_layers() if getattr(layer, "lora_enabled", False)),
        key=lambda layer: layer.path,
    )


def trainable_parameters(model):
    """`(trainable, total)` parameter counts."""
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables), model.count_params()


def _fingerprint(model, trained_paths):
    """SHA-256 of the frozen base: every variable that is neither an adapter nor trained, by path and value."""
    digest = hashlib.sha256()
    for variable in sorted(model.variables, key=lambda v: v.path):
        if variable.path in trained_paths or "lora_kernel" in variable.path:
            continue
        digest.update(variable.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable.value)).tobytes())
    return digest.hexdigest()


def save_adapters(model, path):
    """Writes the adapters and the trained heads alone to a `.safetensors` file (no pickle); returns `path`.

    The file also records the rank, scale and targets, and a fingerprint of the frozen base,
    so that `load_adapters` refuses another base. Kilobytes to a few MB, against the whole model.
    """
    from safetensors.numpy import save

    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"{model.name!r} has no LoRA adapters; call keras_vit.enable_lora(model, rank) first.")
    trained = {v.path: v for v in model.trainable_variables}
    tensors = {path: np.ascontiguousarray(keras.ops.convert_to_numpy(v.value)) for path, v in trained.items()}
    metadata = {
        "format": FORMAT,
        "rank": str(layers[0].lora_rank),
        "alpha": str(layers[0].lora_alpha),
        "targets": json.dumps(_targets_of(model, layers)),
        "base_sha256": _fingerprint(model, set(trained)),
    }
    with files.atomic_write(path, "wb") as f:  # whole or not at all
        f.write(save(tensors, metadata=metadata))
    return path


def _targets_of(model, layers):
    enabled = {layer.path for layer in layers}
    return [t for t in TARGETS if {layer.path for layer in targeted_layers(model, (t,))} <= enabled]


def load_adapters(model, path):
    """Loads adapters written by `save_adapters` onto `model`, the same base they were trained on.

    Enables LoRA on `model` as the file says (when not already), assigns the adapters and the
    trained heads, and returns the model. Raises `ValueError` when the file is no adapters file,
    or when `model`'s frozen weights are not the base's (another checkpoint or variant).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable adapters file ({error}).") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a keras_vit LoRA adapters file (written by keras_vit.save_adapters).")
    if not lora_layers(model):
        alpha = float(metadata["alpha"])
        enable_lora(model, int(metadata["rank"]), json.loads(metadata["targets"]), alpha=alpha, train=())
    variables = {v.path: v for v in model.variables}
    missing = sorted(set(tensors) - set(variables))
    if missing:
        raise ValueError(f"{path} holds {missing[:3]}, which {model.name!r} lacks: it was trained on another model.")
    if _fingerprint(model, set(tensors)) != metadata["base_sha256"]:
        raise ValueError(
            f"{path} was trained on another base than {model.name!r} (its frozen weights differ); "
            "load it onto the model built from the same --weights."
        )
    for key, value in tensors.items():
        if tuple(variables[key].shape) != value.shape:
            raise ValueError(f"{path}: {key} has shape {value.shape}, the model's {tuple(variables[key].shape)}.")
        variables[key].assign(value)
    return model
