"""Reading a checkpoint: any path -> one `CheckpointData` (canonical arrays, `ViTConfig`, family, scaling, origin).

    data = read("B/16:augreg_in21k_ft_in1k")      # a registry name (fetched once), a file, or a hub folder
    data.config, data.family.name, data.scaling  # ViTConfig(...), 'ViT', 'vit'

The path is a straight line, each module entered once: `formats` finds the files and reads their
arrays; the source module of their layout (`big_vision`, `timm`, `transformers`) translates them
to the canonical layout and reads its `config.json`, naming the family from the table
(`families`); `describe` reads the `ViTConfig` from the tensors, completed by what the
config.json or the family's record says. `builders.build_from_checkpoint` builds that config and
`load.assign` puts the arrays into the model.
"""

import dataclasses
import math
import os

from keras_vit.checkpoints import big_vision, families, formats, registry, timm, transformers
from keras_vit.checkpoints.canonical import (
    BLOCK_ATTENTION,
    CLS,
    DIST,
    EMBEDDING,
    HEAD,
    IGNORED,
    LAYER_SCALE,
    MAP_MLP_IN,
    MLP_IN,
    ORIGINAL_BLOCK,
    PATCH_NORM,
    POSEMB,
    PRE_LOGITS,
    PRE_NORM,
    PROBE,
    QUERY,
    REGISTERS,
    SWIGLU_IN,
    CheckpointError,
    prefix_count,
    unflatten_patch_kernel,
)
from keras_vit.config import VARIANTS, ViTConfig, parse_variant, to_pair
from keras_vit.model import model_config

# ViTConfig fields no tensor shows, read from a `.keras` model's layers instead.
_UNSEEN_FIELDS = (
    "activation",
    "layer_norm_epsilon",
    "layer_scale_init",
    "pooling",
    "pooled_norm",
    "dynamic_image_size",
    "naflex",
    "norm",
    "rotary",
    "map_num_heads",
    "encoder_norm",
    "position_embedding",  # seen (the table or none), but a model without one says so itself
    "image_size",  # the table's grid tells it, where the model has a table
)


@dataclasses.dataclass
class CheckpointData:
    """A checkpoint read: its arrays in the canonical layout and what they are.

    (The registry's rows are `keras_vit.checkpoints.Checkpoint`, a name kept since 0.2.0.)

    Attributes:
        path: the file or folder read.
        layout: `"original"`, `"big_vision"`, `"timm"`, `"hugging_face"` or `"keras"`.
        arrays: `{canonical key: array}` (`canonical.py`).
        config: the `ViTConfig` of the model it holds (`None` from `read_arrays`).
        family: its `families.Family` record, when the config.json, the registry row or the
            tensors name it; else `None`.
        scaling: the pixel scaling its weights expect (`preprocessing.SCALINGS`), if told.
        row: the registry row, when read by name.
        hub: what its folder's `config.json` said (`families.HubConfig`), if it has one.
        facts: `ViTConfig` fields the key names (or a `.keras` model) show.
        notes: what reading did (tensors ignored, a text tower dropped).
    """

    path: str
    layout: str
    arrays: dict
    config: ViTConfig = None
    family: families.Family = None
    scaling: str = None
    row: registry.Checkpoint = None
    hub: families.HubConfig = None
    facts: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)


def read(path_or_name, *, variant=None, image_size=None, options=None, cache_dir=None):
    """Any checkpoint -> `CheckpointData` with its `ViTConfig` (see the module docstring).

    Args:
        path_or_name: a file, a hub folder, or a registry name (`"B/16:augreg_in21k_ft_in1k"`).
        variant: e.g. `"B/16"`, for PyTorch files whose width does not tell the heads; one the
            checkpoint contradicts is a `CheckpointError` naming the differences.
        image_size: the size to describe the model at. Defaults to the checkpoint's.
        options: `ViTConfig` fields the caller sets (they win over what the file says).
        cache_dir: where registry downloads are cached.
    """
    row = registry.find_checkpoint(path_or_name)
    path = registry.fetch_checkpoint(row, cache_dir) if row else os.fspath(path_or_name)
    variant = variant or (row.variant if row else None)
    given = {**dict(row.options if row else ()), **(options or {})}
    size, patch = parse_variant(variant) if variant else (None, None)
    # A row of a size outside the table (AIMv2's) is filed under the nearest variant, its options the exact sizes.
    num_heads = given.get("num_heads") or (size.num_heads if size else None)
    data = read_arrays(path, num_heads=num_heads, patch_size=patch and (patch, patch))
    data.row = row
    if row is not None:
        data.family, data.scaling = families.family(row.family), row.scaling
    data.config = describe(data, image_size or (row.image_size if row else None), given=given)
    if variant:
        _check_variant(variant, data.config, path, given)
    return data


def read_arrays(path, num_heads=None, patch_size=None):
    """A file or hub folder -> `CheckpointData` without its config: the arrays, layout, family, scaling.

    `patch_size`: the variant's (`"B/16"`), which cuts a NaFlex file's flat patch kernel where no
    config.json says its patch size (a registry row's file, a file given with `variant=`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise registry.not_found(path)
    weights, config = formats.find_files(path)
    hub = _read_hub_config(config, path)
    if hub is not None and hub.problems:  # refused by its name, before its tensors are read with a guess
        refuse(CheckpointData(path, None, {}, hub=hub), hub.problems)
    kind = formats.sniff_format(weights[0])
    if kind == "keras":
        arrays, model = formats.read_keras(weights[0])  # already in the canonical layout
        config = model_config(model)  # what no tensor says, as the model was built
        facts = {key: getattr(config, key) for key in _UNSEEN_FIELDS}
        if not config.position_embedding:  # a rotary model: no table tells its size, nor that it has none
            facts.update(image_size=config.image_size, position_embedding=False)
        return CheckpointData(path, formats.KERAS, arrays, facts=facts)
    state = {}
    for file in weights:
        state.update(formats.read_npz(file) if kind == "npz" else formats.read_safetensors(file))
    layout = formats.detect_layout(state)
    data, flat = CheckpointData(path, layout, {}, hub=hub), False
    if hub is not None:
        data.family, data.scaling = hub.family, hub.scaling
    if layout == formats.ORIGINAL:
        data.arrays = big_vision.from_original(state)
    elif layout == formats.BIG_VISION:
        data.arrays = big_vision.from_big_vision(state)
        if any(big_vision.TWO_TOWER_EXTRAS.match(key) for key in state):
            data.notes.append("read the image tower of a two-tower model; its text tower was ignored")
    else:
        source = timm if layout == formats.TIMM else transformers
        num_heads = num_heads or (hub and hub.num_heads) or _guess_num_heads(state)
        data.facts, data.arrays = source.to_canonical(state, num_heads)
        flat = EMBEDDING in data.arrays and data.arrays[EMBEDDING].ndim == 2  # NaFlex's Linear patch embedding
        if flat:  # -> the conv kernel, by the patch size the config.json (or the variant) states
            stated = hub.sizes.get("patch_size") if hub is not None else None
            stated = (f"its config.json ({stated[0]})", stated[1]) if stated else None
            stated = stated or (patch_size and ("the variant", patch_size))
            unflatten_patch_kernel(data.arrays, stated and stated[1], stated and stated[0])
        ignored = [key for key in state if IGNORED.fullmatch(key)]
        if ignored:
            data.notes.append(f"ignored {len(ignored)} tensors that are no part of the image model ({ignored[0]}, ...)")
    if hub is None:  # a file alone: the family its tensors show, where they show one
        arrays = data.arrays
        name = "SigLIP" if PROBE in arrays else "DeiT" if DIST in arrays else "CLIP" if PRE_NORM in arrays else None
        name = "SigLIP 2 NaFlex" if layout in (formats.TIMM, formats.HUGGING_FACE) and flat else name
        name = "AIMv2" if PATCH_NORM in arrays else name  # no other family norms its patch embedding
        name = "Perception Encoder" if PROBE in arrays and PRE_NORM in arrays else name  # PE core: MAP after a pre-norm
        data.family = families.family(name) if name else None
    return data


def _read_hub_config(config, path):
    """A folder's `config.json` (timm's or transformers') -> `families.HubConfig`; `None` without one."""
    if config is None:
        return None
    if "architecture" in config:
        return timm.read_config(config)
    if "model_type" in config or "architectures" in config:
        preprocessor = os.path.join(path, formats.PREPROCESSOR)
        return transformers.read_config(
            config, formats.read_json(preprocessor) if os.path.exists(preprocessor) else None
        )
    raise CheckpointError(
        f"{path}/{formats.CONFIG} is neither timm's (no 'architecture') nor transformers' (no 'model_type'): "
        "pass the weights file itself and the architecture options it needs."
    )


# AIMv2's patch-embedding norm in timm's, transformers' and Apple's names.
_PATCH_NORMS = ("patch_embed.norm.weight", "embeddings.rms_norm.weight", "preprocessor.patchifier.norm.weight")


def _guess_num_heads(state):
    """A PyTorch file without config.json: the heads of the variants of its width, if they agree."""
    width_keys = (timm.WIDTH_KEY, timm.NAFLEX_WIDTH_KEY)
    width = next(v for k, v in state.items() if k in width_keys or k.endswith(transformers.WIDTH_KEYS)).shape[0]
    if any(key.endswith(_PATCH_NORMS) for key in state):
        raise CheckpointError(
            f"A width-{width} AIMv2 file (its patch embedding is normed) without config.json: AIMv2's head count is "
            "not a ViT variant's (Apple's heads are 128 wide); pass num_heads=, or the hub folder with its config.json."
        )
    heads = {row.num_heads for row in VARIANTS.values() if row.hidden_dim == width}
    if len(heads) != 1:
        raise CheckpointError(
            f"Cannot tell the number of attention heads of a width-{width} PyTorch checkpoint; "
            "pass variant= (or num_heads=), or the hub folder with its config.json."
        )
    return heads.pop()


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
    given = {key: value for key, value in options.items() if value is not None}
    return read(path, variant=variant, image_size=image_size, options=given).config.replace(**given)


def read_checkpoint(path, num_heads=None):
    """Reads any supported file into `(layout, arrays in the canonical layout)`.

    Args:
        path: an `.npz`, `.safetensors` or keras_vit `.keras` file (the format
            comes from its content), or a model folder as the Hugging Face
            Hub serves it (`model.safetensors` and `config.json`).
        num_heads: heads of the attention layers, needed for PyTorch layouts
            (which store them flattened); from the folder's `config.json`, the
            timm architecture's name, or the width, if `None`.
    """
    data = read_arrays(path, num_heads)
    return data.layout, data.arrays


def describe(data, image_size=None, given=()):
    """The `ViTConfig` a `CheckpointData`'s arrays imply (a feature extractor when they have no head).

    The tensors tell the sizes and which parts exist; the folder's `config.json` (`data.hub`) what
    they cannot (activation, LayerNorm epsilon, pooling, native size); failing that, the family's
    record. What neither tells and matters is an error naming the argument to pass, unless `given`
    (the caller's `ViTConfig` fields) has it. A config.json whose sizes contradict the tensors, or
    tensors that are not what the family's must show, are refused naming both.
    """
    arrays, hub = data.arrays, data.hub
    try:
        kernel, query = arrays[EMBEDDING], arrays[QUERY]
        mlp = arrays[MLP_IN] if MLP_IN in arrays else arrays[SWIGLU_IN]
    except KeyError as e:
        raise CheckpointError(f"The checkpoint has no {e.args[0]!r}: it is not a ViT checkpoint.") from None
    options = {**_family_defaults(data, given), **(hub.options if hub else {}), **data.facts}
    given = dict(given)
    rotary = options.get("rotary") or given.get("rotary")
    if POSEMB not in arrays and options.get("position_embedding", True) and rotary is None:
        refuse(
            data,
            ["no absolute position embedding, and neither a config.json naming its family nor a rotary= argument "
             "says what stands in for it (DINOv3's rotary embedding, ...)"],
        )  # fmt: skip
    if data.hub is None and data.row is None and _block_options(data).get("key_bias") is False and rotary is None:
        refuse(data, ["a query/key/value projection without a key bias (timm's eva.py: EVA-02), whose rotary "
                      "position embedding no tensor shows; pass the hub folder with its config.json"])  # fmt: skip
    blocks = {key.split("/")[1] for key in arrays if key.startswith("Transformer/encoderblock_")}
    patch_size = tuple(kernel.shape[:2])
    native = options.pop("image_size", None)
    if POSEMB in arrays:
        embedded, grid = _prefix_slots(data, patch_size, native or image_size)
    else:  # no table: nothing tells the grid but the config
        embedded, grid = True, None
        if (native or image_size) is None:
            raise CheckpointError(f"{data.path} has no position embedding to tell its image size: pass image_size=.")
    if image_size is None:
        image_size = native or [g * p for g, p in zip(grid, patch_size)]
    pooling = "map" if PROBE in arrays else "token" if CLS in arrays else "gap"  # what the tensors allow
    scale = options.pop("layer_scale_init", None)
    config = ViTConfig(
        hidden_dim=kernel.shape[3],
        num_layers=len(blocks),
        num_heads=query.shape[1],
        mlp_dim=mlp.shape[1],
        patch_size=patch_size,
        image_size=image_size,
        pooling=options.pop("pooling", None) or pooling,
        class_token=CLS in arrays,
        distillation=DIST in arrays,
        num_register_tokens=arrays[REGISTERS].shape[1] if REGISTERS in arrays else 0,
        embed_prefix_tokens=embedded,
        layer_scale_init=(scale or 1e-5) if LAYER_SCALE in arrays else None,  # the value only matters for new weights
        pre_norm=PRE_NORM in arrays,
        patch_bias="embedding/bias" in arrays,
        representation_size=arrays[PRE_LOGITS[0]].shape[1] if PRE_LOGITS[0] in arrays else None,
        num_classes=arrays[HEAD[0]].shape[1] if HEAD[0] in arrays else 0,
        include_top=HEAD[0] in arrays,
        **{**_block_options(data), **options},
    )
    if hub is None and data.family is not None and data.row is None and data.layout != formats.KERAS:
        # A file alone, its family told by its tensors: they must show all of it (a class token beside a
        # MAP head and a pre-norm is no family keras_vit builds: Perception Encoder's).
        problems = families.check_tensors(data.family, data.family.tensors, config, {"pooling": pooling})
        if problems:
            refuse(data, problems)
    if hub is not None:
        problems = [
            f"config.json has {key}={stated!r}, its tensors {field}={getattr(config, field)!r}"
            for field, (key, stated) in hub.sizes.items()
            if stated != getattr(config, field)
        ]
        problems += families.check_tensors(hub.family, hub.tensors, config, {"pooling": pooling})
        if problems:
            refuse(data, problems)
    return config


def _block_options(data):
    """The `ViTConfig` options of the blocks that their tensors show (biases, SwiGLU, the inner norms).

    A value bias without a query bias (or the reverse) is no attention keras_vit builds: refused.
    """
    arrays, block = data.arrays, ORIGINAL_BLOCK.format(0)
    attention = block + BLOCK_ATTENTION
    qkv_bias = f"{attention}query/bias" in arrays
    if qkv_bias != (f"{attention}value/bias" in arrays):
        refuse(data, ["a query bias without a value bias, or the reverse: not an attention keras_vit builds"])
    options = dict(
        mlp="swiglu" if SWIGLU_IN in arrays else "mlp",
        mlp_norm=f"{block}MlpBlock_3/LayerNorm_0/scale" in arrays,
        qkv_bias=qkv_bias,
        key_bias=not qkv_bias or f"{attention}key/bias" in arrays,
        proj_bias=f"{attention}out/bias" in arrays,
        mlp_bias=f"{block}MlpBlock_3/Dense_1/bias" in arrays,
        qk_norm=f"{attention}query_norm/scale" in arrays,
        attention_norm=f"{attention}attention_norm/scale" in arrays,
        position_embedding=POSEMB in arrays,
        patch_norm=PATCH_NORM in arrays,  # AIMv2
        map_mlp_dim=arrays[MAP_MLP_IN].shape[1] if MAP_MLP_IN in arrays else None,  # PE's 4x, beside other MLPs
    )
    return {key: value for key, value in options.items() if value != ViTConfig.__dataclass_fields__[key].default}


def refuse(data, problems):
    """The error for a checkpoint keras_vit does not build: one line for one problem, else a list."""
    what = f"{data.hub.source} in its config.json" if data.hub else "its tensors, without a config.json"
    head = f"The checkpoint {data.path} ({what}) is not a model keras_vit builds; nothing was built"
    if len(problems) == 1:
        raise CheckpointError(f"{head}: {problems[0]}")
    raise CheckpointError(f"{head}. {len(problems)} problem(s):\n  " + "\n  ".join(problems))


def _family_defaults(data, given):
    """What a file without `config.json` cannot say, by the family its tensors show; an error where that is a guess."""
    layout = data.layout
    if data.hub is not None or layout == formats.KERAS or data.family is None:  # `.keras`: see `data.facts`
        return {}
    defaults = dict(data.family.options)
    if layout in (formats.HUGGING_FACE, formats.BIG_VISION):  # timm's SigLIP runs exact GELU; these tanh
        defaults.update(data.family.transformers_options)
    if data.family.name == "Perception Encoder" and "rotary" not in given:
        raise CheckpointError(
            f"{data.path} is a Perception Encoder tower (a MAP head after a pre-norm), whose rotary position "
            "embedding its tensors do not tell: pass the model folder with its config.json, or build it from "
            "its registry name (e.g. 'B/16:pe_core')."
        )
    if data.family.name == "CLIP" and "activation" not in given:
        raise CheckpointError(
            f"{data.path} is a CLIP image tower, whose activation its tensors do not tell: pass "
            "activation='quick_gelu' (OpenAI's CLIP weights; timm's *_clip_quickgelu_*) or "
            "activation='gelu' (timm's *_clip_224, OpenCLIP's LAION weights), or pass the model folder "
            "with its config.json."
        )
    return defaults


def _prefix_slots(data, patch_size, image_size):
    """`(whether the position embedding has slots for the prefix tokens, the checkpoint's square grid or None)`.

    timm's `no_embed_class` files (DeiT III, DINOv2 with registers) have none, and nothing but
    the length says so: the grid of `image_size` (the config's or the caller's) decides when it
    fits, else the square one of the two readings.
    """
    prefix, length = prefix_count(data.arrays), data.arrays[POSEMB].shape[1]
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
        f"The position embedding of {data.path} has {length} tokens, not a square grid, "
        "so its image size is unknown: pass image_size=(height, width)."
    )


def _check_variant(variant, found, path, given=()):
    """A `variant` the checkpoint contradicts is a mistake to report, not to build around silently.

    Sizes in `given` (the caller's or the registry row's fields) are checked instead of the variant's.
    """
    arch, patch = parse_variant(variant)
    wanted = {key: getattr(arch, key) for key in ("hidden_dim", "num_layers", "num_heads", "mlp_dim")}
    wanted.update({key: value for key, value in dict(given).items() if key in wanted})
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
