"""The architecture as data: `ViTConfig`, one frozen dataclass, and the variants table.

    config = ViTConfig.from_variant("B/16", image_size=384, num_classes=10)
    model = keras_vit.build_vit(config)            # or build_vit("B/16", image_size=384, ...)

Every option of the model is a field of `ViTConfig`, checked once, in
`__post_init__`, with the `ValueError`s that name the argument; the builder,
the checkpoint reader and `keras_vit.json` all speak this one type.

The table's rows are the model sizes the papers name: the ViT paper
(Dosovitskiy et al. 2020, Table 1) for B, L and H, the AugReg paper (Steiner
et al. 2021) for Ti and S. Dropout defaults are those of the original code's
configs (google-research/vision_transformer, `configs/models.py`). Parameter
counts are at 224x224 with patch 16 (H: 14), 1000 classes, class-token pooling
and no representation layer.
"""

import dataclasses
import re

POOLINGS = ("token", "gap", "map")
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("mlp", "swiglu")
ROTARY_COORDINATES = ("normalized", "index")


@dataclasses.dataclass(frozen=True)
class AdaptiveTokens:
    """A-ViT's settings (Yin et al. 2022): `ViTConfig.adaptive_tokens`, `None` when off.

    After each block a token's halting score is `sigmoid(gate_scale * x[0] -
    gate_center)` of its first channel; it stops once its scores sum to 1.

    Args:
        gate_scale, gate_center: the gate. Default to `10.0` and `30.0`, the
            authors' A-ViT-T run.
        ponder_loss_weight: `alpha_p` of the ponder loss. Defaults to `5e-4`.
        distribution_prior_weight: `alpha_d` of the KL to the target halting
            distribution. Defaults to `1e-3`.
        target_depth: the block the target distribution centres on, or
            `None` for 2/3 of the depth (the authors' 8 of 12). Defaults to `None`.
    """

    gate_scale: float = 10.0
    gate_center: float = 30.0
    ponder_loss_weight: float = 5e-4
    distribution_prior_weight: float = 1e-3
    target_depth: int = None

    def __post_init__(self):
        for key in ("gate_scale", "gate_center", "ponder_loss_weight", "distribution_prior_weight"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{_FLAT_NAME[key]}={value!r} must be a number.")
            object.__setattr__(self, key, float(value))
        for key in ("ponder_loss_weight", "distribution_prior_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"{_FLAT_NAME[key]}={getattr(self, key)!r} must be >= 0 (0: no such loss).")
        depth = self.target_depth
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
            raise ValueError(f"halting_target_depth={depth!r} must be None or a positive block count.")


# 0.2.0's flat `ViTConfig` names of the A-ViT settings -> the record's; still accepted and readable.
FLAT_ADAPTIVE = {
    "halting_gate_scale": "gate_scale",
    "halting_gate_center": "gate_center",
    "ponder_loss_weight": "ponder_loss_weight",
    "distribution_prior_weight": "distribution_prior_weight",
    "halting_target_depth": "target_depth",
}
_FLAT_NAME = {field: name for name, field in FLAT_ADAPTIVE.items()}  # errors say the names the flags use


@dataclasses.dataclass(frozen=True)
class Rotary:
    """A 2-D rotary position embedding (RoPE) on the patch tokens: `ViTConfig.rotary`, `None` when off.

    Each head's queries and keys are rotated by angles that grow with the
    patch's row and column, so the attention logits depend on where two
    patches are relative to each other; prefix tokens (class, registers) are
    not rotated. With `d` the head width and `k = 0 .. d/4 - 1`, the angles
    are `c * f_k`, `f_k = temperature ** (-k / (d/4))`, for each of the two
    coordinates `c` of a patch: the first `d/4` from the first coordinate,
    the next `d/4` from the second. The settings of timm's `pos_embed_sincos`
    (`RotaryEmbeddingDinoV3`, `RotaryEmbeddingCat`), named as there where
    they have a name:

        DINOv3:        Rotary()  (the defaults)
        EVA-02:        Rotary("index", 10000.0, reference_grid=(16, 16), rotate_half=False)
        PE:            Rotary("index", 10000.0, reference_grid=(24, 24), grid_offset=1.0,
                              grid_indexing="xy", rotate_half=False)
        Naver RoPE-Axial: Rotary("index", 100.0, grid_indexing="xy", rotate_half=False)

    (Naver's RoPE-Mixed learns its frequencies per block: not this record, refused by name.)

    Args:
        coordinates: `"normalized"` (DINOv3): patch centres `(i + 0.5 +
            grid_offset) / n` mapped to `[-1, 1]` for a grid of `n` along that
            axis, angles times `2 pi` (timm's `grid_type='centered'`); the same
            image covers the same range at any resolution. `"index"` (EVA-02,
            PE, Naver): the patch's index `i + grid_offset`, rescaled by
            `reference_grid` when given. Defaults to `"normalized"`.
        temperature: the base of the frequencies (timm's `rope_temperature`,
            DINOv3's `base`). Defaults to `100.0`, DINOv3's.
        reference_grid: `(rows, cols)` the index coordinates are scaled to,
            `i * reference / n` (EVA's `ref_feat_shape`: the grid of the
            pretraining resolution), or `None` for none. Defaults to `None`.
        grid_offset: added to each index before use (PE's `rope_grid_offset=1`).
            Defaults to `0.0`.
        grid_indexing: `"ij"` (the first coordinate is the row) or `"xy"` (the
            column: PE, Naver; timm's `rope_grid_indexing`). Defaults to `"ij"`.
        rotate_half: pair channel `j` with `j + d/2` (`rotate_half`, DINOv3)
            instead of `2j` with `2j + 1` (interleaved pairs: EVA, PE, Naver).
            Defaults to `True`.

    Example:

    >>> Rotary("index", 10000.0, reference_grid=(16, 16), rotate_half=False).reference_grid
    (16, 16)
    """

    coordinates: str = "normalized"
    temperature: float = 100.0
    reference_grid: tuple = None
    grid_offset: float = 0.0
    grid_indexing: str = "ij"
    rotate_half: bool = True

    def __post_init__(self):
        if self.coordinates not in ROTARY_COORDINATES:
            raise ValueError(f"Unknown rotary coordinates={self.coordinates!r}; expected one of {ROTARY_COORDINATES}.")
        for key in ("temperature", "grid_offset"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"rotary {key}={value!r} must be a number.")
            object.__setattr__(self, key, float(value))
        if not self.temperature > 0:
            raise ValueError(f"rotary temperature={self.temperature!r} must be positive.")
        if self.reference_grid is not None:
            object.__setattr__(self, "reference_grid", to_pair(self.reference_grid, "rotary reference_grid"))
            if self.coordinates != "index":
                raise ValueError("rotary reference_grid rescales index coordinates: use it with coordinates='index'.")
        if self.grid_indexing not in ("ij", "xy"):
            raise ValueError(f"rotary grid_indexing={self.grid_indexing!r} must be 'ij' or 'xy'.")
        if not isinstance(self.rotate_half, bool):
            raise ValueError(f"rotary rotate_half={self.rotate_half!r} must be True or False.")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the table: a model size (everything but patch and image size)."""

    hidden_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0


VARIANTS = {
    # A toy for tests, notebooks and the built-in digits; not from a paper.
    "tiny": Variant(hidden_dim=64, num_layers=2, num_heads=2, mlp_dim=128),
    "Ti": Variant(hidden_dim=192, num_layers=12, num_heads=3, mlp_dim=768),  # 5,717,416
    "S": Variant(hidden_dim=384, num_layers=12, num_heads=6, mlp_dim=1536),  # 22,050,664
    "B": Variant(hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072),  # 86,567,656
    "L": Variant(hidden_dim=1024, num_layers=24, num_heads=16, mlp_dim=4096, dropout_rate=0.1),  # 304,326,632
    "H": Variant(hidden_dim=1280, num_layers=32, num_heads=16, mlp_dim=5120, dropout_rate=0.1),  # 632,045,800 (H/14)
    # The shape-optimised ViT of "Getting ViT in Shape" (Alabdulmohsin et al. 2023): SigLIP's and SigLIP 2's So400m.
    "So400m": Variant(hidden_dim=1152, num_layers=27, num_heads=16, mlp_dim=4304),  # 413,735,896
    # DINOv3's own sizes (Siméoni et al. 2025, Table 14), with SwiGLU MLPs (`mlp="swiglu"`: mlp_dim is each half);
    # counts are of DINOv3's backbones at patch 16 (4 registers, no head).
    "S+": Variant(hidden_dim=384, num_layers=12, num_heads=6, mlp_dim=1536),  # 28,683,264
    "H+": Variant(hidden_dim=1280, num_layers=32, num_heads=20, mlp_dim=5120),  # 840,509,440
    "7B": Variant(hidden_dim=4096, num_layers=40, num_heads=32, mlp_dim=8192),  # 6,716,030,976
}

_NAME = re.compile(r"^(?P<variant>[A-Za-z0-9]+\+?)(?:/(?P<patch>\d+))?$")


def parse_variant(name):
    """Splits a name like `"B/16"` into its `Variant` and patch size.

    Args:
        name: `"<variant>/<patch_size>"` such as `"S/16"`, `"B/32"`, `"H/14"`,
            or a bare variant name (`"tiny"`), whose patch size is then `None`.

    Returns:
        `(Variant, patch_size)`, `patch_size` an int or `None`.

    Example:

    >>> parse_variant("B/16")
    (Variant(hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072, dropout_rate=0.0, attention_dropout_rate=0.0), 16)
    """
    match = _NAME.match(str(name).strip()) if isinstance(name, str) else None
    if match is None or match["variant"] not in VARIANTS:
        raise ValueError(
            f"Unknown variant={name!r}. Expected one of {sorted(VARIANTS)} with an "
            "optional patch size, such as 'B/16', 'S/32' or 'H/14'."
        )
    patch = match["patch"]
    if patch is not None and int(patch) <= 0:
        raise ValueError(f"variant={name!r} has a non-positive patch size.")
    return VARIANTS[match["variant"]], int(patch) if patch is not None else None


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Everything that decides a ViT's graph and weights, checked once.

    Fields take the vocabulary of `build_vit`, whose keyword arguments they
    are. Sizes given as an int become `(height, width)` pairs.

    Args:
        hidden_dim: width `D` of every token.
        num_layers: transformer blocks.
        num_heads: attention heads; must divide `hidden_dim`.
        mlp_dim: hidden size of each block's MLP.
        patch_size: int or `(height, width)` of a patch.
        image_size: int or `(height, width)`, each a multiple of the patch
            size. Defaults to `224`.
        num_channels: image channels. Defaults to `3`.
        num_classes: outputs of the head. Defaults to `1000`.
        include_top: add the head; if `False` the model returns the pooled
            `(B, D)` features (and `num_classes` becomes `0`). Defaults to `True`.
        pooling: `"token"` (the class token's output), `"gap"` (mean of the
            patch tokens; no class token unless asked, as in the original
            code) or `"map"` (multi-head attention pooling with a learned
            probe and its MLP: big_vision's MAP head, SigLIP). Defaults to `"token"`.
        representation_size: width of the pre-logits Dense + tanh layer, or
            `None` for none. Defaults to `None`.
        dropout_rate: dropout after the embedding, attention and MLP.
            Defaults to `0.0`.
        attention_dropout_rate: dropout on the attention weights. Defaults to `0.0`.
        drop_path_rate: stochastic depth of the last block; earlier blocks get
            linearly less (Huang et al. 2016). Defaults to `0.0`.
        layer_norm_epsilon: of every LayerNorm. Defaults to `1e-6`, as the
            original code.
        adaptive_tokens: A-ViT halting (Yin et al. 2022, `keras_vit.views.adaptive`):
            each token stops after a learned number of blocks; needs
            `pooling="token"`. An `AdaptiveTokens` record of its settings,
            `True` for the authors' settings, or `None` (or `False`) for off.
            Defaults to `None`.
        halting_gate_scale, halting_gate_center, ponder_loss_weight,
            distribution_prior_weight, halting_target_depth: 0.2.0's flat
            names of `AdaptiveTokens`' fields, still accepted as arguments
            (they turn adaptive tokens on) and readable as attributes.

    The options of the ViT's descendants (all off by default: the plain ViT):

    Args:
        class_token: prepend a learned class token. Defaults to `None`:
            exactly when `pooling="token"`.
        num_register_tokens: learned tokens prepended after the class token
            that no output reads (DINOv2 with registers; Darcet et al. 2024,
            "Vision Transformers Need Registers"). Defaults to `0`.
        distillation: a distillation token after the class token and a
            second head reading it; the two heads are averaged (DeiT, Touvron
            et al. 2021). Needs `pooling="token"`. Defaults to `False`.
        embed_prefix_tokens: the position embedding covers the prefix tokens
            (class, distillation, registers) too. `False` adds it to the
            patches only, before the prefix is prepended (timm's
            `no_embed_class`: DeiT III, DINOv2 with registers). Defaults to `True`.
        layer_scale_init: initial value of LayerScale, a learned per-channel
            scale on each residual branch (CaiT; DeiT III, DINOv2), or `None`
            for none. Defaults to `None`.
        pre_norm: a LayerNorm on the tokens before the first block (CLIP).
            Defaults to `False`.
        patch_bias: the patch embedding has a bias (CLIP's has none).
            Defaults to `True`.
        activation: of the MLPs: `"gelu"` (exact), `"gelu_tanh"` (its tanh
            approximation: big_vision, SigLIP) or `"quick_gelu"`
            (`x * sigmoid(1.702 x)`, OpenAI CLIP). Defaults to `"gelu"`.
        pooled_norm: apply the final LayerNorm to the pooled features instead
            of every token (timm's `fc_norm`). Defaults to `False`.
        dynamic_image_size: accept images of any size (multiples of the
            patch): the position embedding, learned at `image_size`, is
            resampled in the graph to each input's patch grid (bicubic,
            antialiased, as timm's `dynamic_img_size`). Defaults to `False`.

    The options of the 2025-26 families (DINOv3, EVA-02, PE, AIMv2; all off by default):

    Args:
        norm: every norm of the model, `"layernorm"` or `"rmsnorm"` (Keras'
            `RMSNormalization`, `x / rms(x) * scale`: AIMv2), each with
            `layer_norm_epsilon`. Defaults to `"layernorm"`.
        mlp: `"mlp"` (Dense, activation, Dense) or `"swiglu"` (`silu(x W_g) *
            (x W_v)`, then the output Dense: `mlp_dim` is the width of each
            half; EVA-02, DINOv3 S+/H+, AIMv2). Defaults to `"mlp"`.
        mlp_norm: a norm inside the MLP, before its output projection (EVA's
            `scale_mlp`). Defaults to `False`.
        qkv_bias: the query/key/value projection has a bias. Defaults to `True`.
        key_bias: `False` keeps the key part of that bias at zero (EVA's
            `k_bias` buffer, DINOv3's `mask_k_bias`); only with `qkv_bias`.
            Defaults to `True`.
        proj_bias: the attention's output projection has a bias. Defaults to `True`.
        mlp_bias: the MLP's Dense layers have biases. Defaults to `True`.
        qk_norm: a norm on each head's queries and keys. Defaults to `False`.
        attention_norm: a norm on the attention's output before its output
            projection (EVA-CLIP's `scale_attn_inner`). Defaults to `False`.
        position_embedding: the learned absolute position table. `False`:
            none (DINOv3, Naver's RoPE ViTs). Defaults to `True`.
        rotary: a `Rotary` record, the 2-D rotary embedding on the patch
            tokens' queries and keys, or `None` for none. Defaults to `None`.
        map_num_heads: heads of the MAP head (`pooling="map"`), `None` for
            `num_heads`. Defaults to `None`.
        map_mlp_dim: the MAP head's MLP width, `None` for `mlp_dim`.
            Defaults to `None`.
        naflex: SigLIP 2's NaFlex input (Tschannen et al. 2025): each image
            cut into patches at its own aspect ratio, outside the model
            (`keras_vit.preprocessing.naflex_inputs`). The model takes three
            inputs, `patches` `(B, N, p*p*C)`, `spatial_shapes` `(B, 2)` (each
            image's patch grid, rows and columns) and `patch_mask` `(B, N)`
            (1 for a patch, 0 for padding); the position embedding, learned
            on `image_size`'s grid, is resized to each image's grid (bilinear,
            antialiased), and padding is masked out of every attention and
            the MAP pooling. Needs `pooling="map"` and no prefix tokens.
            Defaults to `False`.
        patch_norm: a norm (of the model's `norm` kind) on the patch
            embedding, before the position embedding (AIMv2; timm's
            `embed_norm_layer`). Defaults to `False`.
        encoder_norm: the final norm after the blocks (after the pooling with
            `pooled_norm`). `False`: none (Perception Encoder's lang and
            spatial towers, timm's `use_post_transformer_norm=False`).
            Defaults to `True`.

    Example:

    >>> config = ViTConfig.from_variant("B/16", image_size=384, num_classes=10)
    >>> config.grid, config.num_tokens, config.variant
    ((24, 24), 577, 'B/16')
    """

    hidden_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    patch_size: tuple
    image_size: tuple = (224, 224)
    num_channels: int = 3
    num_classes: int = 1000
    include_top: bool = True
    pooling: str = "token"
    representation_size: int = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_epsilon: float = 1e-6
    # The descendants' options (see the docstring); appended so that 0.1.0's field order holds.
    class_token: bool = None
    num_register_tokens: int = 0
    distillation: bool = False
    embed_prefix_tokens: bool = True
    layer_scale_init: float = None
    pre_norm: bool = False
    patch_bias: bool = True
    activation: str = "gelu"
    pooled_norm: bool = False
    dynamic_image_size: bool = False
    adaptive_tokens: AdaptiveTokens = None
    # The 2025-26 families' options (see the docstring); appended, in the order issue 20 fixed.
    norm: str = "layernorm"
    mlp: str = "mlp"
    mlp_norm: bool = False
    qkv_bias: bool = True
    key_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    qk_norm: bool = False
    attention_norm: bool = False
    position_embedding: bool = True
    rotary: Rotary = None
    map_num_heads: int = None
    map_mlp_dim: int = None
    # SigLIP 2 NaFlex (see the docstring); after issue 20's block options.
    naflex: bool = False
    patch_norm: bool = False  # added after issue 20's fixed list (AIMv2)
    encoder_norm: bool = True
    # 0.2.0's flat A-ViT arguments (`FLAT_ADAPTIVE`): folded into `adaptive_tokens`, not stored.
    halting_gate_scale: dataclasses.InitVar[float] = None
    halting_gate_center: dataclasses.InitVar[float] = None
    ponder_loss_weight: dataclasses.InitVar[float] = None
    distribution_prior_weight: dataclasses.InitVar[float] = None
    halting_target_depth: dataclasses.InitVar[int] = None

    def __post_init__(self, *flat_adaptive):
        set_field = object.__setattr__.__get__(self)  # frozen: normalise through the back door, once
        set_field("patch_size", to_pair(self.patch_size, "patch_size"))
        set_field("image_size", to_pair(self.image_size, "image_size"))
        for size, patch in zip(self.image_size, self.patch_size):
            if size % patch:
                raise ValueError(
                    f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}; "
                    "use an image size that is a multiple of the patch size."
                )
        for key in ("hidden_dim", "num_layers", "num_heads", "mlp_dim", "num_channels"):
            positive_int(getattr(self, key), key)
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim={self.hidden_dim} is not divisible by num_heads={self.num_heads}.")
        for key in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
            set_field(key, rate(getattr(self, key), key))
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling={self.pooling!r}; expected one of {POOLINGS}.")
        if self.representation_size is not None:
            positive_int(self.representation_size, "representation_size")
        set_field("include_top", bool(self.include_top))
        if self.include_top:
            positive_int(self.num_classes, "num_classes")
        else:
            set_field("num_classes", 0)  # no head, no classes: one spelling, so equal models compare equal
        if (
            isinstance(self.layer_norm_epsilon, bool)
            or not isinstance(self.layer_norm_epsilon, (int, float))
            or (not self.layer_norm_epsilon > 0)
        ):
            raise ValueError(f"layer_norm_epsilon={self.layer_norm_epsilon!r} must be a positive number.")
        self._check_family_options(set_field)
        self._check_block_options(set_field)
        set_field("adaptive_tokens", adaptive_record(self, dict(zip(FLAT_ADAPTIVE, flat_adaptive))))

    def _check_family_options(self, set_field):
        if self.class_token is None:
            set_field("class_token", self.pooling == "token")
        for key in ("class_token", "distillation", "embed_prefix_tokens", "pre_norm", "patch_bias", "pooled_norm",
                    "dynamic_image_size", "naflex"):  # fmt: skip
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key}={getattr(self, key)!r} must be True or False.")
        if self.pooling == "token" and not self.class_token:
            raise ValueError("pooling='token' reads the class token: leave class_token at True, or pool with 'gap'.")
        if self.distillation and (self.pooling != "token" or self.representation_size is not None):
            raise ValueError(
                "distillation=True needs pooling='token' and no representation_size: "
                "its two heads read the class and distillation tokens directly."
            )
        register = self.num_register_tokens
        if isinstance(register, bool) or not isinstance(register, int) or register < 0:
            raise ValueError(f"num_register_tokens={register!r} must be a non-negative integer.")
        scale = self.layer_scale_init
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0):
            raise ValueError(f"layer_scale_init={scale!r} must be a positive number, or None for no LayerScale.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation={self.activation!r}; expected one of {ACTIVATIONS}.")
        if self.naflex:
            self._check_naflex()

    def _check_naflex(self):
        if self.pooling != "map" or self.num_prefix_tokens:
            raise ValueError(
                f"naflex=True builds SigLIP 2's NaFlex tower, which pools with pooling='map' and has no class, "
                f"distillation or register tokens; got pooling={self.pooling!r} with {self.num_prefix_tokens} "
                "prefix token(s)."
            )
        if self.dynamic_image_size:
            raise ValueError(
                "naflex=True already takes any patch grid (spatial_shapes): leave dynamic_image_size at False."
            )
        if not self.position_embedding or self.rotary is not None:
            raise ValueError(
                "naflex=True resizes the learned position table to each image's grid: it needs "
                "position_embedding=True and no rotary embedding."
            )

    def _check_block_options(self, set_field):
        if self.norm not in NORMS:
            raise ValueError(f"Unknown norm={self.norm!r}; expected one of {NORMS}.")
        if self.mlp not in MLPS:
            raise ValueError(f"Unknown mlp={self.mlp!r}; expected one of {MLPS}.")
        for key in ("mlp_norm", "qkv_bias", "key_bias", "proj_bias", "mlp_bias", "qk_norm", "attention_norm",
                    "position_embedding", "patch_norm", "encoder_norm"):  # fmt: skip
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key}={getattr(self, key)!r} must be True or False.")
        if self.pooled_norm and not self.encoder_norm:
            raise ValueError("pooled_norm=True moves the final norm after the pooling: it needs encoder_norm=True.")
        if not self.position_embedding:
            if self.dynamic_image_size and self.rotary is None:
                raise ValueError(
                    "dynamic_image_size=True with position_embedding=False and no rotary embedding: nothing in "
                    "the model depends on the image size; leave dynamic_image_size at False."
                )
            set_field("embed_prefix_tokens", True)  # where a table is added: without one, one spelling
        if self.rotary is not None:
            if not isinstance(self.rotary, Rotary):
                raise ValueError(f"rotary={self.rotary!r} must be None or a keras_vit.config.Rotary record.")
            head_dim = self.hidden_dim // self.num_heads
            if head_dim % 4:
                raise ValueError(
                    f"rotary needs a head width divisible by 4 (two coordinates, sine and cosine pairs); "
                    f"hidden_dim={self.hidden_dim} / num_heads={self.num_heads} = {head_dim}."
                )
        for key, model_value in (("map_num_heads", self.num_heads), ("map_mlp_dim", self.mlp_dim)):
            value = getattr(self, key)
            if value is None:
                continue
            positive_int(value, key)
            if self.pooling != "map":
                raise ValueError(f"{key}={value!r} sizes the MAP head: it needs pooling='map' (got {self.pooling!r}).")
            if value == model_value:
                set_field(key, None)  # the blocks' own: one spelling, so equal models compare equal
        if self.map_num_heads is not None and self.hidden_dim % self.map_num_heads:
            raise ValueError(f"hidden_dim={self.hidden_dim} is not divisible by map_num_heads={self.map_num_heads}.")

    @classmethod
    def from_variant(cls, variant, **overrides):
        """The table's row for `variant` (`"B/16"`), with `overrides` (any field) applied.

        An override of `None` keeps the row's value, so `build_vit`'s optional
        arguments pass straight through.
        """
        row, patch = parse_variant(variant)
        fields = {**dataclasses.asdict(row), "patch_size": patch}
        fields.update({key: value for key, value in overrides.items() if value is not None})
        if fields["patch_size"] is None:
            raise ValueError(f"variant={variant!r} names no patch size; write e.g. '{variant}/16' or pass patch_size.")
        unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(cls)} - set(FLAT_ADAPTIVE))
        if unknown:
            raise TypeError(f"Unknown ViT option(s) {unknown}; the options are the fields of ViTConfig.")
        return cls(**fields)

    def replace(self, **changes):
        """A copy with `changes`, checked like a new config."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """Plain JSON types (pairs as lists, records as dicts), as stored in `keras_vit.json`."""

        def plain(value):
            if isinstance(value, dict):
                return {key: plain(v) for key, v in value.items()}
            return list(value) if isinstance(value, tuple) else value

        return {key: plain(value) for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, fields):
        """The inverse of `to_dict` (0.2.0's flat A-ViT keys too); a key that is no field is an error naming it."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - names - set(FLAT_ADAPTIVE))
        if unknown:
            raise ValueError(f"Unknown ViTConfig field(s) {unknown}; known: {sorted(names)}.")
        fields = dict(fields)
        if isinstance(fields.get("rotary"), dict):
            fields["rotary"] = Rotary(**fields["rotary"])
        if isinstance(fields.get("adaptive_tokens"), dict):
            fields["adaptive_tokens"] = AdaptiveTokens(**fields["adaptive_tokens"])
        elif not fields.get("adaptive_tokens"):  # 0.2.0 stored its flat defaults with `false`
            fields = {key: value for key, value in fields.items() if key not in FLAT_ADAPTIVE}
        return cls(**fields)

    @property
    def grid(self):
        """`(rows, cols)` of the patch grid."""
        return tuple(size // patch for size, patch in zip(self.image_size, self.patch_size))

    @property
    def num_prefix_tokens(self):
        """Tokens before the patches: class, distillation and register tokens."""
        return int(self.class_token) + int(self.distillation) + self.num_register_tokens

    @property
    def num_tokens(self):
        """Tokens every block sees."""
        return self.num_prefix_tokens + self.grid[0] * self.grid[1]

    @property
    def variant(self):
        """The table's name for this size and patch (`"B/16"`), or `None` for a size outside it."""
        shape = (self.hidden_dim, self.num_layers, self.num_heads, self.mlp_dim)
        names = [name for name, v in VARIANTS.items() if (v.hidden_dim, v.num_layers, v.num_heads, v.mlp_dim) == shape]
        if not names:
            return None
        rows, cols = self.patch_size
        return f"{names[0]}/{rows}" if rows == cols else names[0]


# --- argument checks, shared by the config and the layers ------------------------------


def adaptive_record(config, flat):
    """`config.adaptive_tokens` as an `AdaptiveTokens` or `None`, 0.2.0's flat settings (`flat`) folded in."""
    record = config.adaptive_tokens
    flat = {FLAT_ADAPTIVE[key]: value for key, value in flat.items() if value is not None}
    if record is None or record is False:
        record = AdaptiveTokens() if flat else None  # a setting given asks for the mechanism
    elif record is True:
        record = AdaptiveTokens()
    elif not isinstance(record, AdaptiveTokens):
        raise ValueError(
            f"adaptive_tokens={record!r} must be True, False, None or a keras_vit.config.AdaptiveTokens record."
        )
    if record is None:
        return None
    record = dataclasses.replace(record, **flat)
    if record.target_depth is not None and record.target_depth > config.num_layers:
        raise ValueError(
            f"halting_target_depth={record.target_depth!r} must be None or a block count in [1, {config.num_layers}]."
        )
    if config.pooling != "token":
        raise ValueError(
            f"adaptive_tokens=True reads the class token's output, but pooling={config.pooling!r}; use pooling='token'."
        )
    return record


def _flat_adaptive(field):
    """0.2.0's `config.halting_gate_scale` & co., read from the record (`None` when adaptive tokens are off)."""

    def read(config):
        return None if config.adaptive_tokens is None else getattr(config.adaptive_tokens, field)

    return property(read, doc=f"0.2.0's name of `adaptive_tokens.{field}`.")


# After the dataclass is made: its `__init__` keeps `None` as these arguments' default, and
# `dataclasses.replace` reads them back through these properties (the record's values, folded in
# again; `None` when off, so a copy of a config without adaptive tokens stays without).
for _name, _field in FLAT_ADAPTIVE.items():
    setattr(ViTConfig, _name, _flat_adaptive(_field))


def positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return value


def rate(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name}={value!r} must be a number in [0, 1).")
    return float(value)


def to_pair(value, name):
    """`16` -> `(16, 16)`; `(16, 8)` -> `(16, 8)`; both entries positive ints."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name}={value!r} must be an int or a pair of ints.")
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}={value!r} must be a positive int or a pair of them.")
    return pair
