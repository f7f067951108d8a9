"""The family table: one record per ViT family, everything keras_vit knows about it in one place.

A `Family` holds the names each source knows the family by (timm architecture names, transformers
`model_type`s, big_vision), what its tensors must show, the `ViTConfig` fields its definition
sets that no tensor shows, the per-architecture facts of timm's factory functions (GELU
flavour, head count where the size word does not tell it), and its published checkpoints as keyword records (`registry.py` turns them into
`CHECKPOINTS` rows, as keras-hub's presets or timm's `_cfg`).

Families that keras_vit cannot build yet are records too, with `not_built` saying why: a file of
theirs is refused by name in one line, never loaded with a guess. A name no record claims is
refused as unknown, listing the families. Adding a family (docs/adding_a_family.md) is a record
here, plus its layer where it brings new arithmetic; the source modules (`timm.py`,
`transformers.py`, `big_vision.py`) read the table and need no edit unless the family brings
tensors of a new name.
"""

import dataclasses
import re
import types

from keras_vit.checkpoints.canonical import CheckpointError
from keras_vit.config import Rotary

LABELS_IN21K, LABELS_IN1K = "imagenet21k", "imagenet1k"
NO_LABELS = "none"  # feature extractors and image-text embeddings


@dataclasses.dataclass(frozen=True)
class Family:
    """One ViT family, as every source names it.

    Attributes:
        name: e.g. `"DINOv2"`.
        reference: the paper (or code) that defines it.
        timm: regexes of timm architecture names (matched whole); the first record whose
            pattern matches claims the name.
        transformers: transformers `model_type`s (a two-tower model's and its image tower's).
        big_vision: big_vision writes it (its `.npz` layout is read for it).
        tensors: what its files' tensors must show, as `ViTConfig` fields (`layer_scale`: has
            LayerScale); a file whose tensors differ is refused naming each difference.
        options: `ViTConfig` fields its definition sets that no tensor shows (every source).
        timm_options: `(regex, {field: value})` per timm architecture, first match: what that
            factory function sets on top (timm's `act_layer='gelu_tanh'` for some SigLIP ones).
        timm_tensors: `(regex, {field: value})` per timm architecture, first match: what its
            tensors must show on top of `tensors` (a distilled DeiT's distillation token).
        transformers_options: fields a transformers file has when its config.json does not say.
        transformers_tensors: what its transformers files' tensors must show on top of `tensors`.
        scaling: the pixel scaling of its weights (`keras_vit.preprocessing.SCALINGS`), if one.
        checkpoints: its published checkpoints, one keyword record each (see `registry.py`).
        not_built: why keras_vit cannot build it yet; `None` for a family it builds.
    """

    name: str
    reference: str
    timm: tuple = ()
    transformers: tuple = ()
    big_vision: bool = False
    tensors: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)
    timm_options: tuple = ()
    timm_tensors: tuple = ()
    transformers_options: dict = dataclasses.field(default_factory=dict)
    transformers_tensors: dict = dataclasses.field(default_factory=dict)
    scaling: str = None
    checkpoints: tuple = ()
    not_built: str = None

    def __post_init__(self):
        # Frozen all the way down: the record's dicts become read-only views.
        for field in ("tensors", "options", "transformers_options", "transformers_tensors"):
            object.__setattr__(self, field, types.MappingProxyType(dict(getattr(self, field))))
        object.__setattr__(self, "checkpoints", tuple(types.MappingProxyType(dict(r)) for r in self.checkpoints))

    def timm_facts(self, architecture):
        """`(ViTConfig fields timm's factory for `architecture` sets, what its tensors must show)`."""
        options = {**self.options, **_first(self.timm_options, architecture)}
        tensors = {**self.tensors, **_first(self.timm_tensors, architecture)}
        registers = re.search(r"_reg(\d+)", architecture)  # timm's names say their registers
        if registers or "num_register_tokens" not in tensors:  # else the family's record says (DINOv3: 4)
            tensors["num_register_tokens"] = int(registers[1]) if registers else 0
        return options, tensors


def _first(rows, architecture):
    return next((dict(facts) for pattern, facts in rows if re.fullmatch(pattern, architecture)), {})


# timm's size words -> heads, as its factories (timm/models/vision_transformer.py) define them; the
# few architectures that differ from their word are listed first. `tests/checkpoints/test_families_table.py`
# reads timm's source and checks every ViT-shaped factory against this.
TIMM_HEADS = (
    (r"vit_base_patch16_gap_224", 16),
    (r"vit_base_patch(16|32)_plus_.*", 14),
    (r"vit_giant_patch14_(reg\d_)?dinov2|vit_giant_patch14_reg1_tipsv2", 24),
    (r"aimv2_large_.*", 8),  # AIMv2's head widths are 128 (apple/ml-aim): fewer heads than their size words
    (r"aimv2_huge_.*", 12),
    (r"aimv2_1b_.*", 16),
    (r"aimv2_3b_.*", 24),
    (r"vit_huge_plus_patch16_dinov3(_qkvb)?", 20),
    (r"vit_7b_patch16_dinov3(_qkvb)?", 32),
)
TIMM_SIZE_HEADS = {
    "tiny": 3, "xsmall": 4, "wee": 4, "pwee": 4, "little": 5, "small": 6, "medium": 8, "mediumd": 8,
    "betwixt": 10, "base": 12, "so150m": 14, "so150m2": 13, "large": 16, "huge": 16, "so400m": 16,
    "giant": 16, "giantopt": 16, "gigantic": 16,
}  # fmt: skip


def timm_num_heads(architecture):
    """The heads of a timm architecture, from its name (`None` if the name does not tell)."""
    for pattern, heads in TIMM_HEADS:
        if re.fullmatch(pattern, architecture):
            return heads
    match = re.match(r"(?:vit_pe_(?:core|lang|spatial)|eva02|vit|deit3?|flexivit)_([a-z0-9]+?)(?:_|$)", architecture)
    return TIMM_SIZE_HEADS.get(match[1]) if match else None


BUCKET = "https://storage.googleapis.com/vit_models/"
# One AugReg run per variant: the pre-training file and its ImageNet-1k fine-tune, the runs timm
# ships as its `augreg_in21k` weights. For Ti/16, S/16 and B/16 they are the paper's recommended
# (Table 3) runs; for B/32 and L/16 they are timm's picks (the vision_transformer README's Table 3
# names other runs for those).
_AUGREG = {
    "Ti/16": ("Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "steps_20k-lr_0.03"),
    "S/16": ("S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0", "steps_20k-lr_0.03"),
    "B/16": ("B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0", "steps_20k-lr_0.01"),
    "B/32": ("B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0", "steps_20k-lr_0.03"),
    "L/16": ("L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1", "steps_20k-lr_0.01"),
}
# The original paper's files: ImageNet-21k pre-training (with pre_logits) and 384 fine-tunes.
_ORIGINAL = ("B/16", "B/32", "L/16", "L/32")


def _vit_checkpoints():
    """The original and AugReg checkpoints (google-research/vision_transformer's bucket), as keyword records."""
    for variant, (run, fine_tune) in _AUGREG.items():
        yield dict(variant=variant, tag="augreg_in21k", url=f"{BUCKET}augreg/{run}.npz", image_size=224,
                   num_classes=21843, labels=LABELS_IN21K)  # fmt: skip
        yield dict(variant=variant, tag="augreg_in21k_ft_in1k",
                   url=f"{BUCKET}augreg/{run}--imagenet2012-{fine_tune}-res_224.npz", image_size=224,
                   num_classes=1000, labels=LABELS_IN1K)  # fmt: skip
    # Both folders hold a `ViT-B_16.npz`: the cached copies are named after folder and file, or the
    # second one asked for would be served the first one's weights.
    for variant in _ORIGINAL + ("H/14",):
        file = f"ViT-{variant.replace('/', '_')}.npz"
        hidden = {"B": 768, "L": 1024, "H": 1280}[variant[0]]
        yield dict(variant=variant, tag="in21k", url=f"{BUCKET}imagenet21k/{file}", image_size=224,
                   num_classes=21843, labels=LABELS_IN21K, representation_size=hidden,
                   file_name=f"imagenet21k_{file}")  # fmt: skip
    for variant in _ORIGINAL:
        file = f"ViT-{variant.replace('/', '_')}.npz"
        yield dict(variant=variant, tag="in21k_ft_in1k_384", url=f"{BUCKET}imagenet21k%2Bimagenet2012/{file}",
                   image_size=384, num_classes=1000, labels=LABELS_IN1K,
                   file_name=f"imagenet21k+imagenet2012_{file}")  # fmt: skip
    yield dict(variant="B/16", tag="hf_in21k_ft_in1k", transformers="google/vit-base-patch16-224", image_size=224,
               num_classes=1000, labels=LABELS_IN1K, file_name="google_vit-base-patch16-224.safetensors")  # fmt: skip


# The descendants' rows: `timm=` a timm hub repository (`timm/<architecture>.<tag>`), `transformers=` a
# publisher's transformers repository (whole two-tower files: the image tower is read), `url=` any other
# file. Their `config.json` is not fetched, so `options` carry what it would say.
_QUICK_GELU = (("activation", "quick_gelu"),)  # OpenAI's CLIP weights, as trained (timm names them *_clip_224)
_GELU_TANH = (("activation", "gelu_tanh"),)  # SigLIP as trained in big_vision (timm runs exact GELU)
_CLIP_GELU = (("activation", "gelu"),)  # OpenCLIP's LAION weights
_LOGITS_1K = dict(image_size=224, num_classes=1000, labels=LABELS_IN1K)
_FEATURES_518 = dict(image_size=518, num_classes=0, output="features")
_FEATURES_224 = dict(image_size=224, num_classes=0, output="features")
_CLIP_512 = dict(image_size=224, num_classes=512, output="embedding")
_NAFLEX = dict(image_size=256, num_classes=0, output="features")  # a 16 x 16 position table, patch 16


# AIMv2's sizes (timm's factories, apple/ml-aim): the variant a row is filed under, and the fields that make it exact.
_AIMV2 = {
    "large": ("L/14", dict(hidden_dim=1024, num_layers=24, num_heads=8, mlp_dim=2816)),
    "huge": ("H/14", dict(hidden_dim=1536, num_layers=24, num_heads=12, mlp_dim=4096)),
    "1b": ("H/14", dict(hidden_dim=2048, num_layers=24, num_heads=16, mlp_dim=5632)),
    "3b": ("H/14", dict(hidden_dim=3072, num_layers=24, num_heads=24, mlp_dim=8192)),
}
_AIMV2_LICENCE = (
    "Apple's licence: timm's card says apple-ascl (Apple Sample Code License); Apple's own repositories name "
    "apple-ascl or apple-amlr (research use only, no commercial use): read the repository's LICENSE before use"
)
# What every AIMv2 file is, beside its size: the weights file alone does not say RMSNorm, its epsilon, the pooling.
_AIMV2_OPTIONS = (("norm", "rmsnorm"), ("layer_norm_epsilon", 1e-5), ("pooling", "gap"))


def _aimv2_checkpoints():
    """timm's `aimv2_*.apple_pt` repositories and Apple's own (`apple/aimv2-*`, Apple's layout), as keyword records."""
    timm_rows = [(size, res, tag) for size in _AIMV2 for res in (224, 336, 448) for tag in ("apple_pt",)]
    timm_rows += [("large", 224, "apple_pt_dist"), ("large", 336, "apple_pt_dist")]
    for size, res, tag in timm_rows:
        variant, sizes = _AIMV2[size]
        name = f"aimv2_{'' if size in ('large', 'huge') else size + '_'}{tag}{'' if res == 224 else f'_{res}'}"
        yield dict(variant=variant, tag=name, timm=f"aimv2_{size}_patch14_{res}.{tag}", image_size=res,
                   num_classes=0, output="features", options=(*sizes.items(), *_AIMV2_OPTIONS),
                   notes=_AIMV2_LICENCE)  # fmt: skip
    apple = [("large", 224, ""), ("large", 336, ""), ("large", 448, ""), ("huge", 224, ""), ("1b", 336, ""),
             ("large", 224, "-distilled")]  # fmt: skip
    for size, res, suffix in apple:
        variant, sizes = _AIMV2[size]
        word = size.upper() if size[0].isdigit() else size  # Apple spells them aimv2-1B-..., aimv2-large-...
        tag = f"hf_aimv2_{'' if size in ('large', 'huge') else size + '_'}apple{suffix.replace('-', '_')}_{res}"
        yield dict(variant=variant, tag=tag, transformers=f"apple/aimv2-{word}-patch14-{res}{suffix}", image_size=res,
                   num_classes=0, output="features", options=(*sizes.items(), *_AIMV2_OPTIONS),
                   notes=_AIMV2_LICENCE)  # fmt: skip


# DINOv3's published weights (Siméoni et al. 2025): timm's copies (`timm/<architecture>.<tag>`) and Meta's
# transformers repositories, each "pretrain" backbone (no head). Their licence is not an open one: the DINOv3
# License (https://ai.meta.com/resources/models-and-libraries/dinov3-license/) lets users use, modify and
# redistribute them, but a redistribution must carry the licence and its notice, and users must follow Meta's
# acceptable-use terms and the export and trade laws it names; the Hub asks users to accept it before the
# files download. Every row's `notes` says so. `pooling="token"` reads the class token, as upstream (and
# transformers' pooler_output); timm's own default is the patch mean (`pooling="gap"`, pass it to get timm's).
DINOV3_LICENCE = (
    "DINOv3 License (https://ai.meta.com/resources/models-and-libraries/dinov3-license/): not an open licence; "
    "use and redistribution only under its terms (keep the licence and notice with copies, Meta's acceptable-use "
    "policy, trade controls); accept it on the Hub before downloading"
)
_DINOV3_SIZES = {  # timm's size word -> (variant, Meta's repository word)
    "small": ("S/16", "vits16"), "small_plus": ("S+/16", "vits16plus"), "base": ("B/16", "vitb16"),
    "large": ("L/16", "vitl16"), "huge_plus": ("H+/16", "vith16plus"), "7b": ("7B/16", "vit7b16"),
}  # fmt: skip
# The published (size, data) pairs: every size on LVD-1689M, the large one also on satellite images (SAT-493M).
# The 7B ones (`vit_7b_patch16_dinov3.{lvd1689m,sat493m}`, `facebook/dinov3-vit7b16-pretrain-*`) are published
# too, as sharded files, which a row (one file) cannot fetch: keras_vit builds them (the 7B/16 variant) from
# their downloaded folder.
_DINOV3_DATA = {"lvd1689m": ("small", "small_plus", "base", "large", "huge_plus"), "sat493m": ("large",)}


def _dinov3_checkpoints():
    """DINOv3's published backbones as keyword records: timm's (with and without `_qkvb`) and Meta's repositories."""
    common = dict(num_classes=0, output="features", notes=DINOV3_LICENCE, options=(("pooling", "token"),))
    for data, sizes in _DINOV3_DATA.items():
        # The satellite weights expect their own pixel statistics (`preprocessing.SCALINGS["dinov3_sat"]`).
        scaling = {"scaling": "imagenet" if data == "lvd1689m" else "dinov3_sat"}
        for size in sizes:
            variant, word = _DINOV3_SIZES[size]
            for suffix in ("", "_qkvb"):
                architecture = f"vit_{size}_patch16_dinov3{suffix}"
                yield dict(variant=variant, tag=f"dinov3{suffix}_{data}", timm=f"{architecture}.{data}", image_size=256,
                           **common, **scaling)  # fmt: skip
            yield dict(variant=variant, tag=f"hf_dinov3_{data}", transformers=f"facebook/dinov3-{word}-pretrain-{data}",
                       image_size=224, **common, **scaling)  # fmt: skip


# Naver's RoPE-Axial ViTs (naver-ai/rope-vit, Apache-2.0), as timm publishes them: DeiT III-style ImageNet-1k
# classifiers at 224, with (`_ape`) and without an absolute position table beside the rotary embedding.
_NAVER_ROTARY = Rotary("index", 100.0, grid_indexing="xy", rotate_half=False)


def _naver_checkpoints():
    for size, variant in (("small", "S/16"), ("base", "B/16"), ("large", "L/16")):
        for ape in (False, True):
            architecture = f"vit_{size}_patch16_rope_{'ape_' if ape else ''}224"
            yield dict(variant=variant, tag=f"rope_axial_{'ape_' if ape else ''}naver_in1k",
                       timm=f"{architecture}.naver_in1k", **_LOGITS_1K,
                       options=(("rotary", _NAVER_ROTARY), ("position_embedding", ape)), notes="Apache-2.0")  # fmt: skip


# EVA-02 (timm's eva02_* factories): index coordinates scaled to the 16x16 grid of 224/14, interleaved pairs.
_EVA_ROTARY = Rotary("index", 10000.0, reference_grid=(16, 16), rotate_half=False)


def _pe_rotary(reference, offset=1.0):
    """Perception Encoder's (timm's vit_pe_* factories): xy indices offset by 1 (not for gigantic)."""
    return Rotary("index", 10000.0, reference_grid=reference, grid_offset=offset, grid_indexing="xy", rotate_half=False)


# Per timm factory, first match: the rotary settings, the core towers' MAP head of 8 heads, and the lang and
# spatial towers' missing final norm (use_post_transformer_norm=False).
_PE_OPTIONS = (
    (r"vit_pe_core_gigantic_.*", {"rotary": _pe_rotary((32, 32), offset=0.0), "map_num_heads": 8}),
    (r"vit_pe_core_base_.*", {"rotary": _pe_rotary((14, 14)), "map_num_heads": 8}),
    (r"vit_pe_core_.*", {"rotary": _pe_rotary((24, 24)), "map_num_heads": 8}),
    (r"vit_pe_\w+_gigantic_.*", {"rotary": _pe_rotary((32, 32), 0.0), "encoder_norm": False, "layer_scale_init": 0.1}),
    (r"vit_pe_lang_.*", {"rotary": _pe_rotary((32, 32)), "encoder_norm": False, "layer_scale_init": 0.1}),
    (r".*", {"rotary": _pe_rotary((32, 32)), "encoder_norm": False}),
)
# What their tensors show: the core towers' MAP head; no class token in gigantic; LayerScale in lang and gigantic.
_PE_TENSORS = (
    (r"vit_pe_core_gigantic_.*", {"pooling": "map", "class_token": False}),
    (r"vit_pe_core_.*", {"pooling": "map", "class_token": True}),
    (r"vit_pe_\w+_gigantic_.*", {"class_token": False, "layer_scale": True}),
    (r"vit_pe_lang_.*", {"class_token": True, "layer_scale": True}),
    (r".*", {"class_token": True, "layer_scale": False}),
)
_EVA02_MIT = "MIT licence (baaivision/EVA; timm's default_cfgs say mit): copies keep its copyright and licence notice"
_PE_APACHE = (
    "Apache-2.0 (facebook/perception_models; timm's default_cfgs say apache-2.0): copies keep the licence and "
    "its notices, and changed files say so"
)
_EVA02_MLP = {"Ti": 512, "S": 1024, "B": 2048, "L": 2730}  # int(D * 4 * 2/3), each SwiGLU half


def _eva02_checkpoints():
    """timm's EVA-02 hub weights (eva.py `default_cfgs`): MIM pre-training, ImageNet fine-tunes, EVA-CLIP towers."""
    sizes = {"Ti": "tiny", "S": "small", "B": "base", "L": "large"}
    mim = [("Ti", "in22k"), ("S", "in22k"), ("B", "in22k"), ("L", "in22k"), ("L", "m38m")]
    for variant, data in mim:  # pre-training only: features
        yield dict(variant=f"{variant}/14", tag=f"eva02_mim_{data}", timm=f"eva02_{sizes[variant]}_patch14_224.mim_{data}",
                   **_FEATURES_224, pooling="gap", options=_eva02_options(variant), notes=_EVA02_MIT)  # fmt: skip
    fine_tunes = [("Ti", 336, "mim_in22k_ft_in1k"), ("S", 336, "mim_in22k_ft_in1k"), ("B", 448, "mim_in22k_ft_in1k"),
                  ("B", 448, "mim_in22k_ft_in22k_in1k"), ("L", 448, "mim_in22k_ft_in1k"), ("L", 448, "mim_m38m_ft_in1k"),
                  ("L", 448, "mim_in22k_ft_in22k_in1k"), ("L", 448, "mim_m38m_ft_in22k_in1k")]  # fmt: skip
    for variant, size, tag in fine_tunes:
        yield dict(variant=f"{variant}/14", tag=f"eva02_{tag}", timm=f"eva02_{sizes[variant]}_patch14_{size}.{tag}",
                   image_size=size, num_classes=1000, labels=LABELS_IN1K, pooling="gap",
                   options=_eva02_options(variant), notes=_EVA02_MIT)  # fmt: skip
    for variant, tag in (("B", "mim_in22k_ft_in22k"), ("L", "mim_in22k_ft_in22k"), ("L", "mim_m38m_ft_in22k")):
        yield dict(variant=f"{variant}/14", tag=f"eva02_{tag}", timm=f"eva02_{sizes[variant]}_patch14_448.{tag}",
                   image_size=448, num_classes=21841, labels="imagenet22k", pooling="gap",
                   options=_eva02_options(variant), notes=_EVA02_MIT)  # fmt: skip
    clip = [("B/16", "eva02_base_patch16_clip_224", 224, 512, "eva02_clip_merged2b"),
            ("L/14", "eva02_large_patch14_clip_224", 224, 768, "eva02_clip_merged2b"),
            ("L/14", "eva02_large_patch14_clip_336", 336, 768, "eva02_clip_merged2b_336")]  # fmt: skip
    for variant, architecture, size, width, tag in clip:
        yield dict(variant=variant, tag=tag, timm=f"{architecture}.merged2b", image_size=size, num_classes=width,
                   output="embedding", options=_eva02_options(variant[0], clip=True), notes=_EVA02_MIT)  # fmt: skip


def _eva02_options(variant, clip=False):
    """What an EVA-02 weights file alone does not tell (its config.json would, through the architecture's name)."""
    options = {"rotary": _EVA_ROTARY, "mlp_dim": _EVA02_MLP[variant]}
    if not clip:
        options.update(pooling="gap", pooled_norm=True)  # timm's avg pooling (of the patches) then fc_norm
    return tuple(options.items())


def _pe_checkpoints():
    """timm's Perception Encoder towers (eva.py `default_cfgs`): core (image tower and projection), spatial and lang
    (features). The lang towers (23 and 47 blocks) and the gigantic ones (width 1536, 50 blocks) are no size of
    the variants table: their rows are filed under the nearest variant, their options the exact sizes (as AIMv2's).
    """
    large_lang = {"num_layers": 23}
    gigantic = {"hidden_dim": 1536, "num_layers": 50, "num_heads": 16, "mlp_dim": 8960}
    rows = [("Ti/16", "core_tiny_patch16_384", 384, 512, {}), ("S/16", "core_small_patch16_384", 384, 512, {}),
            ("B/16", "core_base_patch16_224", 224, 1024, {}), ("L/14", "core_large_patch14_336", 336, 1024, {}),
            ("H/14", "core_gigantic_patch14_448", 448, 1280, {**gigantic, "map_mlp_dim": 6144}),  # MAP MLP 4x
            ("Ti/16", "spatial_tiny_patch16_512", 512, 0, {}), ("S/16", "spatial_small_patch16_512", 512, 0, {}),
            ("B/16", "spatial_base_patch16_512", 512, 0, {}), ("L/14", "spatial_large_patch14_448", 448, 0, {}),
            ("H/14", "spatial_gigantic_patch14_448", 448, 0, gigantic),
            ("L/14", "lang_large_patch14_448", 448, 0, large_lang),
            ("H/14", "lang_gigantic_patch14_448", 448, 0, {**gigantic, "num_layers": 47})]  # fmt: skip
    for variant, name, image_size, width, sizes in rows:
        architecture = f"vit_pe_{name}"
        options = {**sizes, "layer_norm_epsilon": 1e-5, **_first(_PE_OPTIONS, architecture)}
        options["pooling"] = "map" if width else "gap"
        output = dict(output="embedding") if width else dict(output="features")
        # The lang towers are published twice: `fb`, and `fb_tiling` (further trained on image tiles).
        for tag in ("fb", "fb_tiling") if name.startswith("lang") else ("fb",):
            suffix = "_tiling" if tag == "fb_tiling" else ""
            yield dict(variant=variant, tag=f"pe_{name.split('_')[0]}{suffix}", timm=f"{architecture}.{tag}",
                       image_size=image_size, num_classes=width, pooling=options["pooling"],
                       options=tuple(options.items()), notes=_PE_APACHE, **output)  # fmt: skip


_SIZES = "(tiny|xsmall|small|medium|mediumd|betwixt|base|large|huge|giant|gigantic|so400m|so150m)"
_RES = r"\d+"
_IMAGENET = "imagenet"

FAMILIES = (
    Family(
        "ViT",
        "Dosovitskiy et al. 2020; AugReg: Steiner et al. 2021 (google-research/vision_transformer)",
        timm=(
            rf"vit_{_SIZES}_patch\d+_{_RES}",  # the original ViTs and AugReg
            rf"vit_base_patch(16|32)_plus_{_RES}",
            rf"vit_{_SIZES}_patch\d+_(reg\d_)?gap_{_RES}",  # class-token-free, mean-pooled
            rf"vit_(wee|little|medium|mediumd|betwixt)_patch16_reg\d_gap_{_RES}",  # LayerScale + registers
            rf"vit_so150m_patch16_reg4_(map|gap)_{_RES}",
            r"vit_(small|base|large)_patch\d+_(224|384)_in21k",  # older timm names
            r"flexivit_(small|base|large)",
        ),
        transformers=("vit",),
        big_vision=True,
        scaling="vit",
        checkpoints=tuple(_vit_checkpoints()),
    ),
    Family(
        "DeiT",
        "Touvron et al. 2021",
        timm=(r"deit_(tiny|small|base)_(distilled_)?patch16_(224|384)",),
        transformers=("deit",),
        tensors={"layer_scale": False},
        timm_tensors=((r".*_distilled_.*", {"distillation": True}), (r".*", {"distillation": False})),
        transformers_tensors={"distillation": True},  # transformers' DeiT always has the distillation token
        transformers_options={"layer_norm_epsilon": 1e-12},  # transformers' DeiT configs; timm's is 1e-6
        scaling=_IMAGENET,
        checkpoints=(
            dict(
                variant="Ti/16", tag="deit_distilled_in1k", timm="deit_tiny_distilled_patch16_224.fb_in1k", **_LOGITS_1K
            ),
            dict(
                variant="S/16", tag="deit_distilled_in1k", timm="deit_small_distilled_patch16_224.fb_in1k", **_LOGITS_1K
            ),
            dict(
                variant="B/16", tag="deit_distilled_in1k", timm="deit_base_distilled_patch16_224.fb_in1k", **_LOGITS_1K
            ),
        ),  # fmt: skip
    ),
    Family(
        "DeiT III",
        "Touvron et al. 2022",
        timm=(r"deit3_(small|medium|base|large|huge)_patch\d+_\d+(_in21ft1k)?",),
        tensors={"layer_scale": True, "distillation": False},
        scaling=_IMAGENET,
        checkpoints=(
            dict(variant="S/16", tag="deit3_in1k", timm="deit3_small_patch16_224.fb_in1k", **_LOGITS_1K),
            dict(variant="B/16", tag="deit3_in1k", timm="deit3_base_patch16_224.fb_in1k", **_LOGITS_1K),
            dict(
                variant="B/16", tag="deit3_in21k_ft_in1k", timm="deit3_base_patch16_224.fb_in22k_ft_in1k", **_LOGITS_1K
            ),
            dict(
                variant="L/16", tag="deit3_in21k_ft_in1k", timm="deit3_large_patch16_224.fb_in22k_ft_in1k", **_LOGITS_1K
            ),
        ),  # fmt: skip
    ),
    Family(
        "DINOv2",
        "Oquab et al. 2023; with registers: Darcet et al. 2024",
        timm=(r"vit_(small|base|large)_patch14_(reg\d_)?dinov2",),
        transformers=("dinov2", "dinov2_with_registers"),
        tensors={"layer_scale": True, "class_token": True},
        scaling=_IMAGENET,
        checkpoints=(
            dict(variant="S/14", tag="dinov2_lvd142m", timm="vit_small_patch14_dinov2.lvd142m", **_FEATURES_518),
            dict(variant="B/14", tag="dinov2_lvd142m", timm="vit_base_patch14_dinov2.lvd142m", **_FEATURES_518),
            dict(variant="L/14", tag="dinov2_lvd142m", timm="vit_large_patch14_dinov2.lvd142m", **_FEATURES_518),
            dict(
                variant="S/14", tag="dinov2_reg4_lvd142m", timm="vit_small_patch14_reg4_dinov2.lvd142m", **_FEATURES_518
            ),
            dict(
                variant="B/14", tag="dinov2_reg4_lvd142m", timm="vit_base_patch14_reg4_dinov2.lvd142m", **_FEATURES_518
            ),
            dict(
                variant="L/14", tag="dinov2_reg4_lvd142m", timm="vit_large_patch14_reg4_dinov2.lvd142m", **_FEATURES_518
            ),
            dict(variant="S/14", tag="hf_dinov2", transformers="facebook/dinov2-small", **_FEATURES_518),
            dict(variant="B/14", tag="hf_dinov2", transformers="facebook/dinov2-base", **_FEATURES_518),
            dict(
                variant="B/14",
                tag="hf_dinov2_reg4",
                transformers="facebook/dinov2-with-registers-base",
                **_FEATURES_518,
            ),
        ),  # fmt: skip
    ),
    Family(
        "SigLIP",
        "Zhai et al. 2023; SigLIP 2's fixed-resolution towers: Tschannen et al. 2025",
        timm=(rf"vit_(base|large|so400m|giantopt)_patch\d+_siglip_(gap_)?{_RES}",),
        transformers=("siglip", "siglip_vision_model"),
        big_vision=True,
        tensors={"class_token": False},
        timm_tensors=((r".*_siglip_\d+", {"pooling": "map"}),),
        transformers_tensors={"pooling": "map"},
        # timm's factories run exact GELU except for these (act_layer='gelu_tanh'); big_vision and
        # transformers run tanh GELU for every SigLIP.
        timm_options=(
            (r"vit_base_patch32_siglip_(gap_)?256|vit_large_patch16_siglip_(gap_)?512", {"activation": "gelu_tanh"}),
            (r"vit_so400m_patch16_siglip_.*|vit_giantopt_patch16_siglip_.*", {"activation": "gelu_tanh"}),
        ),
        transformers_options={"activation": "gelu_tanh"},
        scaling="vit",
        checkpoints=(
            dict(
                variant="B/16",
                tag="siglip_webli",
                timm="vit_base_patch16_siglip_224.webli",
                options=_GELU_TANH,
                **_FEATURES_224,
            ),
            dict(
                variant="B/16",
                tag="siglip2_webli",
                timm="vit_base_patch16_siglip_224.v2_webli",
                options=_GELU_TANH,
                **_FEATURES_224,
            ),
            dict(variant="B/16", tag="hf_siglip", transformers="google/siglip-base-patch16-224", **_FEATURES_224),
            # big_vision's SigLIP B/16 (the file its SigLIP colab loads): both towers; the image tower's head
            # projects to the 768-wide image-text space.
            dict(
                variant="B/16",
                tag="siglip_webli_big_vision",
                image_size=224,
                num_classes=768,
                output="embedding",
                url="https://storage.googleapis.com/big_vision/siglip/webli_en_b16_224_63724782.npz",
                options=_GELU_TANH,
            ),
        ),  # fmt: skip
    ),
    Family(
        "CLIP",
        "Radford et al. 2021 (OpenAI), OpenCLIP",
        timm=(
            rf"vit_(xsmall|medium|betwixt|base|large|huge|giant|gigantic)_patch\d+_(plus_)?clip_(quickgelu_)?{_RES}",
        ),
        transformers=("clip", "clip_vision_model"),
        tensors={"pre_norm": True, "patch_bias": False},
        options={"layer_norm_epsilon": 1e-5},
        timm_options=((r".*_clip_quickgelu_.*", {"activation": "quick_gelu"}),),
        scaling="clip",
        checkpoints=(
            dict(
                variant="B/16",
                tag="clip_openai",
                timm="vit_base_patch16_clip_224.openai",
                **_CLIP_512,
                options=_QUICK_GELU,
            ),
            dict(
                variant="B/32",
                tag="clip_openai",
                timm="vit_base_patch32_clip_224.openai",
                **_CLIP_512,
                options=_QUICK_GELU,
            ),
            dict(
                variant="L/14",
                tag="clip_openai",
                timm="vit_large_patch14_clip_224.openai",
                image_size=224,
                num_classes=768,
                output="embedding",
                options=_QUICK_GELU,
            ),
            dict(
                variant="B/16",
                tag="clip_laion2b",
                timm="vit_base_patch16_clip_224.laion2b",
                **_CLIP_512,
                options=_CLIP_GELU,
            ),
            dict(
                variant="B/16",
                tag="hf_clip_openai",
                transformers="openai/clip-vit-base-patch16",
                **_CLIP_512,
                options=_QUICK_GELU,
            ),
        ),  # fmt: skip
    ),
    Family(
        "EVA-02",
        "Fang et al. 2024 (EVA-02); its CLIP towers: Sun et al. 2023 (EVA-CLIP)",
        timm=(r"eva02_(tiny|small|base|large)_patch14_(224|336|448)", r"eva02_(base_patch16|large_patch14)_clip_\d+"),
        # timm's eva.py: absolute and rotary positions, SwiGLU, no key bias (fused `qkv` with `q_bias` and
        # `v_bias` for Ti and S, unfused `q_proj`/`k_proj`/`v_proj` for B and L), mean pooling then `fc_norm`.
        tensors={"class_token": True, "mlp": "swiglu", "qkv_bias": True, "key_bias": False, "pre_norm": False},
        options={"rotary": _EVA_ROTARY, "mlp": "swiglu"},
        timm_tensors=(
            (r"eva02_(tiny|small)_.*", {"mlp_norm": False, "attention_norm": False}),
            (r".*_clip_.*", {"mlp_norm": True, "attention_norm": True}),  # EVA-CLIP's scale_attn_inner
            (r".*", {"mlp_norm": True, "attention_norm": False}),  # B and L: the norm inside SwiGLU (scale_mlp)
        ),
        scaling="clip",
        checkpoints=tuple(_eva02_checkpoints()),
    ),
    Family(
        "Perception Encoder",
        "Bolya et al. 2025 (Meta's PE core, lang and spatial towers)",
        timm=(r"vit_pe_(core|lang|spatial)_(tiny|small|base|large|gigantic)_patch\d+_\d+",),
        # timm's eva.py with attn_type='rope': a pre-norm, a patch embedding without bias, every LayerNorm at
        # eps 1e-5, rotary on xy indices offset by 1; core: a MAP head of 8 heads whose MLP is 4x wide.
        tensors={"pre_norm": True, "patch_bias": False, "qkv_bias": True, "key_bias": True, "mlp": "mlp"},
        options={"layer_norm_epsilon": 1e-5},
        timm_options=_PE_OPTIONS,
        timm_tensors=_PE_TENSORS,
        scaling="vit",
        checkpoints=tuple(_pe_checkpoints()),
    ),
    Family(
        "SigLIP 2 NaFlex",
        "Tschannen et al. 2025 (SigLIP 2); the fixed-resolution google/siglip2-*-patchN-SIZE towers are the SigLIP "
        "record's",
        timm=(r"naflexvit_(base|so400m)_patch16_siglip",),
        transformers=("siglip2", "siglip2_vision_model"),
        tensors={"class_token": False, "pooling": "map"},
        options={"naflex": True, "activation": "gelu_tanh"},  # both timm factories and transformers: tanh GELU
        scaling="vit",
        checkpoints=(
            # Apache-2.0 (the model cards of google/siglip2-*): keep the licence and notice with copies.
            dict(variant="B/16", tag="siglip2_naflex", transformers="google/siglip2-base-patch16-naflex", **_NAFLEX),
            dict(
                variant="So400m/16",
                tag="siglip2_naflex",
                transformers="google/siglip2-so400m-patch16-naflex",
                **_NAFLEX,
            ),
            dict(variant="B/16", tag="siglip2_naflex_timm", timm="naflexvit_base_patch16_siglip.v2_webli", **_NAFLEX),
            dict(
                variant="So400m/16",
                tag="siglip2_naflex_timm",
                timm="naflexvit_so400m_patch16_siglip.v2_webli",
                **_NAFLEX,
            ),
        ),
    ),
    Family(
        "DINOv3",
        "Siméoni et al. 2025 (facebookresearch/dinov3); timm's port in eva.py",
        timm=(r"vit_(tiny|small|small_plus|base|large|huge_plus|7b)_patch16_dinov3(_qkvb)?",),
        transformers=("dinov3_vit",),
        # 4 registers after the class token, LayerScale, no position table: a rotary embedding of the patch
        # centres, normalised to [-1, 1] (so any size runs natively), pairs j and j + d/2, base 100.
        tensors={"layer_scale": True, "class_token": True, "position_embedding": False, "num_register_tokens": 4},
        options={
            "rotary": Rotary(),
            "position_embedding": False,
            "layer_norm_epsilon": 1e-5,
            "dynamic_image_size": True,
        },
        # timm's Eva pools with `avg` unless told (its config.json's global_pool says); upstream reads the class
        # token, as transformers' pooler_output.
        timm_options=((r".*", {"pooling": "gap"}),),
        transformers_options={"pooling": "token"},
        scaling=_IMAGENET,
        checkpoints=tuple(_dinov3_checkpoints()),
    ),
    # Not built yet: what each needs is issue 20's (a layer, then the record's fields above).
    Family(
        "RoPE-Mixed ViT",
        "Heo et al. 2024 (Naver, naver-ai/rope-vit)",
        timm=(r"vit_\w+_rope_mixed\w*",),
        not_built="RoPE-Mixed learns its rotary frequencies in every block, not built (RoPE-Axial is)",
    ),
    Family(
        "ViT with relative positions",
        "timm's relpos ViTs",
        timm=(r"vit_relpos_\w+", r"vit_srelpos_\w+"),
        not_built="a relative position bias in every block, not built",
    ),
    Family(
        "EVA-02 enormous",
        "Sun et al. 2023 (EVA-CLIP)",
        timm=(r"eva02_enormous_\w+",),
        not_built="its blocks normalise after each residual branch (timm's use_post_norm), not built",
    ),
    Family(
        "Other NaFlex ViTs",
        "timm's NaFlexVit beyond SigLIP 2's towers (gap / factorized / RoPE / RADIO variants)",
        timm=(r"naflexvit_(?!(base|so400m)_patch16_siglip$)\w+",),
        not_built="of timm's NaFlexVit models keras_vit builds SigLIP 2's towers (naflexvit_base_patch16_siglip, "
        "naflexvit_so400m_patch16_siglip) only: this one's pooling, position embedding or prefix tokens differ",
    ),
    Family(
        "SwiGLU ViTs",
        "TIPSv2 giant",
        timm=(r"vit_giant_\w+_tipsv2",),
        not_built="its SwiGLU MLP and TIPSv2's other parts are not compared with timm yet, so not loaded",
    ),
    Family(
        "Differential / parallel ViTs",
        "timm's dwee, dpwee, dlittle, pwee",
        timm=(r"vit_(dwee|dpwee|dlittle|pwee)_\w+",),
        not_built="differential attention or parallel blocks, not built",
    ),
    Family(
        "Other timm ViT-shaped models",
        "BEiT 3, InternViT, EVA (v1), TIPSv2",
        timm=(r"beit3_\w+", r"vit_intern300m_\w+", r"eva_\w+", r"vit_\w+_tipsv2"),
        not_built="not checked against timm yet (BEiT 3's extra norms, InternViT's missing final norm; TIPSv2 and "
        "EVA v1 not compared), so not loaded",
    ),  # Built on issue 20's layers (RMSNorm, SwiGLU, the bias flags, the rotary embedding).
    Family(
        "AIMv2",
        "Fini et al. 2024, Multimodal Autoregressive Pre-training of Large Vision Encoders (apple/ml-aim)",
        timm=(r"aimv2_(large|huge|1b|3b)_patch14_(224|336|448)",),
        transformers=("aimv2", "aimv2_vision_model"),
        # RMSNorm everywhere (on the patch embedding too), SwiGLU, no attention or MLP biases, no class token.
        tensors={
            "class_token": False,
            "mlp": "swiglu",
            "qkv_bias": False,
            "proj_bias": False,
            "mlp_bias": False,
            "patch_norm": True,
        },  # fmt: skip
        # timm pools by the mean of the normed tokens (global_pool='avg', no fc_norm); transformers' and Apple's
        # encoders return the normed tokens, whose mean is the same.
        options={"norm": "rmsnorm", "layer_norm_epsilon": 1e-5, "pooling": "gap"},
        scaling="clip",
        checkpoints=tuple(_aimv2_checkpoints()),
    ),
    Family(
        "RoPE ViT",
        "Heo et al. 2024, Rotary Position Embedding for Vision Transformer (Naver): RoPE-Axial, and with absolute "
        "positions too (_ape)",
        timm=(r"vit_(small|base|large)_patch16_rope_(ape_)?224",),
        tensors={"class_token": True, "layer_scale": True},
        timm_tensors=((r".*_ape_224", {"position_embedding": True}), (r".*", {"position_embedding": False})),
        timm_options=((r".*_ape_224", {"position_embedding": True}), (r".*", {"position_embedding": False})),
        options={"rotary": _NAVER_ROTARY},
        scaling=_IMAGENET,
        checkpoints=tuple(_naver_checkpoints()),
    ),
    Family(
        "timm's rotary ViTs",
        "timm's SBB ViTs with EVA's rotary embedding (eva.py: vit_*_patch16_rope_reg*_gap_256)",
        timm=(r"vit_(medium|mediumd|betwixt|base)_patch16_rope_reg\d_gap_256",),
        tensors={"class_token": False, "layer_scale": True, "position_embedding": False},
        options={
            "rotary": Rotary("index", 10000.0, reference_grid=(16, 16), rotate_half=False),
            "position_embedding": False,
            "pooling": "gap",
        },
    ),
    Family(
        "ViTs without query/key/value bias",
        "timm's medium/betwixt gap and so150m2 models",
        timm=(r"vit_(medium|betwixt)_patch16_gap_\d+", r"vit_so150m2_patch16_reg1_gap_\d+"),
        tensors={"qkv_bias": False, "class_token": False, "layer_scale": True},
    ),
    Family(
        "DINOv2 giant",
        "Oquab et al. 2023; with registers: Darcet et al. 2024 (its MLP is SwiGLU, packed as timm's SwiGLUPacked)",
        timm=(r"vit_giant_patch14_(reg\d_)?dinov2",),
        tensors={"layer_scale": True, "class_token": True, "mlp": "swiglu"},
        scaling=_IMAGENET,
    ),
)
# The table's first ViT family matches the older, shorter timm names too (and the medium/betwixt gap models of a
# later record), so the refusals go first, then the built records from the last: the plain ViT's, widest, last.
_TIMM_ORDER = tuple(f for f in FAMILIES if f.not_built) + tuple(f for f in reversed(FAMILIES) if not f.not_built)


@dataclasses.dataclass
class HubConfig:
    """What a hub folder's `config.json` (timm's or transformers') adds to the tensors."""

    source: str  # e.g. "timm 'vit_small_patch14_reg4_dinov2'"
    family: Family = None
    options: dict = dataclasses.field(default_factory=dict)  # ViTConfig fields no tensor shows
    tensors: dict = dataclasses.field(default_factory=dict)  # what the family's tensors must show
    sizes: dict = dataclasses.field(default_factory=dict)  # {ViTConfig field: (config key, value)}, checked
    num_heads: int = None
    scaling: str = None  # a `preprocessing.SCALINGS` name, if the config's mean/std is one
    problems: list = dataclasses.field(default_factory=list)  # what keras_vit cannot build


def family(name):
    """The record called `name` (`"DINOv2"`)."""
    return next(f for f in FAMILIES if f.name == name)


def _built(families):
    return ", ".join(f.name for f in families if not f.not_built)


def timm_family(architecture):
    """The record that claims a timm architecture name; a `CheckpointError` for one not built or unknown."""
    found = next((f for f in _TIMM_ORDER if any(re.fullmatch(p, architecture) for p in f.timm)), None)
    if found is None:
        raise CheckpointError(
            f"timm architecture {architecture!r} is not a ViT architecture keras_vit knows; known: "
            f"{_built(FAMILIES)} (docs/checkpoints.md lists their timm names)."
        )
    if found.not_built:
        raise CheckpointError(f"timm architecture {architecture!r}: {found.not_built}.")
    return found


def transformers_family(model_type):
    """The record that claims a transformers `model_type`; a `CheckpointError` for one not built or unknown."""
    found = next((f for f in FAMILIES if model_type in f.transformers), None)
    if found is None:
        known = sorted(t for f in FAMILIES if not f.not_built for t in f.transformers)
        raise CheckpointError(
            f"transformers model_type {model_type!r} is not a ViT keras_vit knows; known: {', '.join(known)}."
        )
    if found.not_built:
        raise CheckpointError(f"transformers model_type {model_type!r}: {found.not_built}.")
    return found


def check_tensors(family, expected, config, shown):
    """What the tensors show (`config`, a `ViTConfig` read from them; `shown`, fields they decide
    over any config.json) against what `family`'s must (`expected`): problems (sentences)."""
    problems = []
    for field, wanted in expected.items():
        found = config.layer_scale_init is not None if field == "layer_scale" else getattr(config, field)
        found = shown.get(field, found)
        if found != wanted:
            problems.append(f"{family.name} models have {field}={wanted!r}, the tensors {field}={found!r}")
    return problems
