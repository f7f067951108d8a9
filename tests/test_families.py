"""The ViT's descendants as options of one model: each against a NumPy forward written from the papers.

`reference_forward` computes a ViT with every option from the checkpoint
layout (`keras_vit.checkpoints.canonical`), so a wrong token order, a norm in the
wrong place or a misnamed weight shows as a difference. The timm and Hugging
Face parity tests (tests/checkpoints/) check the same models against the
PyTorch implementations.
"""

import dataclasses

import keras
import numpy as np
import pytest
from scipy.special import erf

import keras_vit
from keras_vit.checkpoints.canonical import model_variables
from keras_vit.checkpoints.resample import interpolation_matrix, resample_position_embedding
from keras_vit.config import Rotary
from keras_vit.model import model_config

TINY = dict(hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32, patch_size=4, image_size=(8, 12), num_classes=3)
FAMILIES = {
    "vit": {},
    "deit3": dict(layer_scale_init=1e-6, embed_prefix_tokens=False),
    "deit_distilled": dict(distillation=True),
    "dinov2_registers": dict(
        num_register_tokens=4, layer_scale_init=1e-5, embed_prefix_tokens=False, include_top=False
    ),
    "siglip": dict(pooling="map", activation="gelu_tanh"),
    "clip": dict(pre_norm=True, patch_bias=False, activation="quick_gelu", layer_norm_epsilon=1e-5),
    "gap_fc_norm": dict(pooling="gap", class_token=True, pooled_norm=True, num_register_tokens=1),
    "dynamic": dict(num_register_tokens=2, embed_prefix_tokens=False, dynamic_image_size=True),
    # The original code's options (pre-logits, dropout: idle at inference) on one grey channel.
    "vit_original": dict(
        representation_size=24, num_channels=1, dropout_rate=0.1, attention_dropout_rate=0.1, drop_path_rate=0.1
    ),
    # A-ViT: its own forward (halting) is checked in tests/test_adaptive.py, not by the reference here.
    "adaptive": dict(
        adaptive_tokens=True,
        halting_gate_scale=5.0,
        halting_gate_center=2.0,
        ponder_loss_weight=1e-3,
        distribution_prior_weight=2e-3,
        halting_target_depth=1,
    ),
    # The 2025-26 families (issue 20), in small: each sets the options its architecture has.
    "dinov3": dict(
        rotary=Rotary(),
        position_embedding=False,
        num_register_tokens=2,
        layer_scale_init=1e-5,
        qkv_bias=False,
        mlp="swiglu",
        layer_norm_epsilon=1e-5,
        dynamic_image_size=True,
    ),
    "eva02_clip": dict(
        rotary=Rotary("index", 10000.0, reference_grid=(3, 3), rotate_half=False),
        key_bias=False,
        mlp="swiglu",
        mlp_norm=True,
        attention_norm=True,
        pooling="gap",
        class_token=True,
        pooled_norm=True,
    ),
    "pe_core": dict(
        rotary=Rotary("index", 10000.0, reference_grid=(3, 2), grid_offset=1.0, grid_indexing="xy", rotate_half=False),
        pooling="map",
        class_token=True,
        map_num_heads=4,
        map_mlp_dim=24,
        pre_norm=True,
        layer_norm_epsilon=1e-5,
    ),
    "aimv2": dict(
        norm="rmsnorm",
        mlp="swiglu",
        qkv_bias=False,
        proj_bias=False,
        mlp_bias=False,
        qk_norm=True,
        pooling="gap",
        patch_norm=True,
    ),
    "naver_rope_axial": dict(
        rotary=Rotary("index", 100.0, grid_indexing="xy", rotate_half=False),
        position_embedding=False,
        layer_scale_init=1e-5,
    ),
    # SigLIP 2's NaFlex: pre-patchified input at each image's own grid, padded (`_images` makes the three inputs).
    "naflex": dict(pooling="map", activation="gelu_tanh", naflex=True, include_top=False),
    # Perception Encoder's lang tower: no final norm, LayerScale, mean of the patches.
    "pe_lang": dict(
        rotary=Rotary("index", 10000.0, reference_grid=(3, 2), grid_offset=1.0, grid_indexing="xy", rotate_half=False),
        encoder_norm=False,
        pre_norm=True,
        patch_bias=False,
        layer_scale_init=0.1,
        pooling="gap",
        class_token=True,
        layer_norm_epsilon=1e-5,
    ),
}
NAFLEX_SHAPES, NAFLEX_LENGTH = ((1, 5), (3, 2)), 7  # patch grids of the batch's images (the table's is 2 x 3)
WITHOUT_REFERENCE = {"adaptive"}


def _config(family):
    return keras_vit.ViTConfig(**TINY, **FAMILIES[family])


def _images(config, batch, seed):
    if config.naflex:
        return _naflex_inputs(config, batch, seed)
    height, width = config.image_size
    return np.random.default_rng(seed).normal(size=(batch, height, width, config.num_channels)).astype("float32")


def _naflex_inputs(config, batch, seed):
    """`patches`, `spatial_shapes`, `patch_mask` for `batch` images of the `NAFLEX_SHAPES` grids, in turn."""
    shapes = np.array([NAFLEX_SHAPES[i % len(NAFLEX_SHAPES)] for i in range(batch)], "int32")
    rows, cols = config.patch_size
    size = (batch, NAFLEX_LENGTH, rows * cols * config.num_channels)
    return {
        "patches": np.random.default_rng(seed).normal(size=size).astype("float32"),
        "spatial_shapes": shapes,
        "patch_mask": (np.arange(NAFLEX_LENGTH)[None] < shapes.prod(-1)[:, None]).astype("int32"),
    }


def test_every_config_field_is_set_off_its_default_by_some_family_case():
    """So the round trips below (model_config, .keras, save_npz) cover every field, new ones included."""
    cases = [{**TINY, **options} for options in FAMILIES.values()]
    fields = dataclasses.fields(keras_vit.ViTConfig)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    uncovered = [
        name for name, default in defaults.items() if all(case.get(name, default) == default for case in cases)
    ]
    assert uncovered == [], f"no family case in FAMILIES sets {uncovered}: add one"


def _float64(images):
    if isinstance(images, dict):  # NaFlex's three inputs: the patches in float64
        return {**images, "patches": images["patches"].astype("float64")}
    return images.astype("float64")


def _perturbed(config, seed=0):
    """A model whose every weight is random: LayerScale's 1e-6 start or a zero head would hide errors."""
    model = keras_vit.build_vit(config)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    return model


def _canonical(model):
    return {
        key: np.asarray(keras.ops.convert_to_numpy(v.numpy()), "float64") for key, v in model_variables(model).items()
    }


# --- the reference -----------------------------------------------------------------------


def _norm(x, w, name, eps, kind="layernorm"):
    if kind == "rmsnorm":  # Zhang & Sennrich 2019: no centring, no bias
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w[f"{name}/scale"]
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[f"{name}/scale"] + w[f"{name}/bias"]


def _rotary_sin_cos(rotary, grid, head_dim):
    """`(N, d)` sines and cosines of timm's `build_rotary_pos_embed` / `RotaryEmbeddingDinoV3`, in NumPy."""
    shape, reference = list(grid), rotary.reference_grid and list(rotary.reference_grid)
    if rotary.grid_indexing == "xy":  # timm swaps the shapes, then meshgrid(indexing="xy") swaps the axes back
        shape, reference = shape[::-1], reference and reference[::-1]
    if rotary.coordinates == "normalized":
        axes = [(np.arange(0.5, n) + rotary.grid_offset) / n for n in shape]
    else:
        axes = [np.arange(n) + rotary.grid_offset for n in shape]
        if reference:
            axes = [t / n * r for t, n, r in zip(axes, shape, reference)]
    coords = np.stack(np.meshgrid(*axes, indexing=rotary.grid_indexing), -1).reshape(-1, 2)  # (N, 2)
    if rotary.coordinates == "normalized":
        coords = 2 * coords - 1
    bands = head_dim // 4
    frequencies = rotary.temperature ** -(np.arange(bands) / bands)
    if rotary.coordinates == "normalized":  # DINOv3: 2 pi / period
        frequencies = 2 * np.pi * frequencies
    angles = (coords[:, :, None] * frequencies).reshape(len(coords), -1)  # (N, d/2)
    angles = np.concatenate([angles, angles], -1) if rotary.rotate_half else np.repeat(angles, 2, -1)
    return np.sin(angles), np.cos(angles)


def _rotate(x, sin, cos, rotate_half):
    """timm's `apply_rot_embed`: `x * cos + partner(x) * sin`, `x` `(B, h, N, d)`."""
    if rotate_half:
        half = x.shape[-1] // 2
        partner = np.concatenate([-x[..., half:], x[..., :half]], -1)
    else:
        partner = np.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
    return x * cos + partner * sin


def _act(x, activation):
    if activation == "gelu":
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    if activation == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return x / (1 + np.exp(-1.702 * x))  # quick_gelu


def _attention(query_tokens, tokens, w, name, c=None, rotary=None, keys=None):
    """Multi-head attention; with a config `c`, its options (absent biases, qk-norm, rotary, inner norm)."""

    def project(x, part):
        bias = w.get(f"{name}/{part}/bias", np.zeros(w[f"{name}/{part}/kernel"].shape[1:]))
        return np.einsum("btd,dhk->bhtk", x, w[f"{name}/{part}/kernel"]) + bias[None, :, None]

    q, k, v = project(query_tokens, "query"), project(tokens, "key"), project(tokens, "value")
    if c is not None and c.qk_norm:
        q = _norm(q, w, f"{name}/query_norm", c.layer_norm_epsilon, c.norm)
        k = _norm(k, w, f"{name}/key_norm", c.layer_norm_epsilon, c.norm)
    if rotary is not None:  # the patches only: the prefix tokens are not rotated
        sin, cos, prefix = rotary
        q[:, :, prefix:] = _rotate(q[:, :, prefix:], sin, cos, c.rotary.rotate_half)
        k[:, :, prefix:] = _rotate(k[:, :, prefix:], sin, cos, c.rotary.rotate_half)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    if keys is not None:  # (B, T): the keys attended to; padding gets no weight
        logits = np.where(keys[:, None, None, :], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = (weights @ v).transpose(0, 2, 1, 3)  # (B, T, h, d)
    if c is not None and c.attention_norm:
        y = _norm(y.reshape(*y.shape[:2], -1), w, f"{name}/attention_norm", c.layer_norm_epsilon, c.norm)
        y = y.reshape(*y.shape[:2], q.shape[1], -1)
    return np.einsum("bthk,hkd->btd", y, w[f"{name}/out/kernel"]) + w.get(f"{name}/out/bias", 0)


def _mlp(x, w, name, activation, c=None):
    if c is not None and c.mlp == "swiglu":  # Shazeer 2020: silu(x W_gate) * (x W_value)
        gate = x @ w[f"{name}/Dense_0_gate/kernel"] + w.get(f"{name}/Dense_0_gate/bias", 0)
        h = (
            gate
            / (1 + np.exp(-gate))
            * (x @ w[f"{name}/Dense_0_value/kernel"] + w.get(f"{name}/Dense_0_value/bias", 0))
        )
    else:
        h = _act(x @ w[f"{name}/Dense_0/kernel"] + w.get(f"{name}/Dense_0/bias", 0), activation)
    if c is not None and c.mlp_norm:
        h = _norm(h, w, f"{name}/LayerNorm_0", c.layer_norm_epsilon, c.norm)
    return h @ w[f"{name}/Dense_1/kernel"] + w.get(f"{name}/Dense_1/bias", 0)


def reference_forward(c, w, images):
    """The forward pass of a `ViTConfig` with the original checkpoint's weights `w`, in float64 NumPy."""
    (ph, pw), eps, keys = c.patch_size, c.layer_norm_epsilon, None
    if c.naflex:
        x, keys = _naflex_embed(c, w, images), images["patch_mask"].astype(bool)
        b = x.shape[0]
    else:
        b, height, width, channels = images.shape
        patches = images.reshape(b, height // ph, ph, width // pw, pw, channels).transpose(0, 1, 3, 2, 4, 5)
        x = patches.reshape(b, -1, ph * pw * channels) @ w["embedding/kernel"].reshape(-1, c.hidden_dim)
        x = x + w.get("embedding/bias", 0)
    if c.patch_norm:  # AIMv2: on the patches, before the position embedding
        x = _norm(x, w, "embedding_norm", eps, c.norm)
    prefix = [w[key] for key in ("cls", "dist", "reg") if key in w]  # [class, distillation, registers..., patches]
    prefix = np.concatenate([np.broadcast_to(p, (b, *p.shape[1:])) for p in prefix], 1) if prefix else x[:, :0]
    position = w["Transformer/posembed_input/pos_embedding"] if c.position_embedding else 0
    if c.naflex:
        pass  # `_naflex_embed` added each image's resized table
    elif c.embed_prefix_tokens:
        x = np.concatenate([prefix, x], 1) + position
    else:
        x = np.concatenate([prefix, x + position], 1)
    rotary = None
    if c.rotary is not None:
        grid = (height // ph, width // pw)
        rotary = (*_rotary_sin_cos(c.rotary, grid, c.hidden_dim // c.num_heads), prefix.shape[1])
    norm = c.norm
    if c.pre_norm:
        x = _norm(x, w, "Transformer/pre_norm", eps, norm)
    for i in range(c.num_layers):
        block = f"Transformer/encoderblock_{i}/"
        y = _norm(x, w, block + "LayerNorm_0", eps, norm)
        y = _attention(y, y, w, block + "MultiHeadDotProductAttention_1", c, rotary, keys)
        x = x + y * w.get(block + "LayerScale_0/scale", 1)
        y = _mlp(_norm(x, w, block + "LayerNorm_2", eps, norm), w, block + "MlpBlock_3", c.activation, c)
        x = x + y * w.get(block + "LayerScale_1/scale", 1)
    if not c.pooled_norm and c.encoder_norm:
        x = _norm(x, w, "Transformer/encoder_norm", eps, norm)
    if c.pooling == "token":
        pooled = x[:, 0]
    elif c.pooling == "gap":
        pooled = x[:, c.num_prefix_tokens :].mean(1)
    else:  # big_vision's MAPHead
        probe = np.broadcast_to(w["MAPHead_0/probe"], (b, 1, c.hidden_dim))
        y = _attention(probe, x, w, "MAPHead_0/MultiHeadDotProductAttention_0", keys=keys)
        y = y + _mlp(_norm(y, w, "MAPHead_0/LayerNorm_0", eps, norm), w, "MAPHead_0/MlpBlock_0", c.activation)
        pooled = y[:, 0]
    if c.pooled_norm:
        pooled = _norm(pooled, w, "Transformer/encoder_norm", eps, norm)
    if c.representation_size is not None:
        pooled = np.tanh(pooled @ w["pre_logits/kernel"] + w["pre_logits/bias"])
    out = pooled @ w["head/kernel"] + w["head/bias"] if c.include_top else pooled
    if c.distillation:
        distilled = x[:, 1] @ w["head_dist/kernel"] + w["head_dist/bias"] if c.include_top else x[:, 1]
        out = (out + distilled) / 2
    return out


def _naflex_embed(c, w, inputs):
    """NaFlex: the patches' projection plus the table resized to each image's grid by torch's antialiased
    bilinear matrices (`checkpoints.resample`, NumPy); padding gets the resized table's first position."""
    x = inputs["patches"] @ w["embedding/kernel"].reshape(-1, c.hidden_dim) + w.get("embedding/bias", 0)
    table = w["Transformer/posembed_input/pos_embedding"][0].reshape(*c.grid, -1)
    for i, (h, wide) in enumerate(inputs["spatial_shapes"]):
        rows = interpolation_matrix(c.grid[0], int(h), "bilinear", antialias=True)
        cols = interpolation_matrix(c.grid[1], int(wide), "bilinear", antialias=True)
        resized = np.einsum("ih,hwd,jw->ijd", rows, table, cols).reshape(h * wide, -1)
        padding = np.broadcast_to(resized[:1], (x.shape[1] - h * wide, resized.shape[1]))
        x[i] += np.concatenate([resized, padding])
    return x


# --- each family -------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - WITHOUT_REFERENCE))
def test_family_equals_the_reference_forward(family, to_numpy):
    config = _config(family)
    model = _perturbed(config)
    images = _images(config, 2, seed=1)
    expected = reference_forward(config, _canonical(model), _float64(images))
    got = to_numpy(model(images))
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_config_is_read_back_and_saves_in_safe_mode(family, tmp_path, to_numpy):
    config = _config(family)
    model = _perturbed(config)
    assert model_config(model) == config
    assert keras_vit.ViTConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = _images(config, 1, seed=2)
    np.testing.assert_array_equal(to_numpy(loaded(images)), to_numpy(model(images)))
    assert model_config(loaded) == config


@pytest.mark.parametrize("family", ["deit3", "siglip", "dinov2_registers", "vit_original", "naflex"])
def test_family_checkpoint_round_trip(family, tmp_path, to_numpy):
    """save_npz writes every new weight under its canonical key, and load_weights reads it back."""
    config = _config(family)
    model, fresh = _perturbed(config), keras_vit.build_vit(config)
    keras_vit.save_npz(model, tmp_path / "w.npz")
    report = keras_vit.load_weights(fresh, tmp_path / "w.npz")
    assert not report.skipped
    images = _images(config, 1, seed=3)
    np.testing.assert_array_equal(to_numpy(fresh(images)), to_numpy(model(images)))


def test_zero_layer_scale_makes_each_block_the_identity(to_numpy):
    block = keras_vit.TransformerBlock(num_heads=2, mlp_dim=8, layer_scale_init=1e-5)
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    block.build(x.shape)
    assert np.all(to_numpy(block.layer_scale_1.scale) == np.float32(1e-5))
    block.layer_scale_1.scale.assign(np.zeros(4, "float32"))
    block.layer_scale_2.scale.assign(np.zeros(4, "float32"))
    np.testing.assert_array_equal(to_numpy(block(x)), x)


def test_dynamic_size_at_the_native_grid_equals_the_fixed_model(to_numpy):
    dynamic = _perturbed(_config("dynamic"))
    fixed = keras_vit.build_vit(_config("dynamic").replace(dynamic_image_size=False))
    fixed.set_weights(dynamic.get_weights())
    images = np.random.default_rng(4).normal(size=(2, 8, 12, 3)).astype("float32")
    np.testing.assert_array_equal(to_numpy(dynamic(images)), to_numpy(fixed(images)))
    assert dynamic.input_shape == (None, None, None, 3)


@pytest.mark.parametrize("size", [(16, 8), (4, 20), (12, 12)])
def test_dynamic_size_resamples_like_timm(size, to_numpy):
    """At another size: the fixed model at that size, its embedding resized by torch's antialiased bicubic."""
    config = _config("dynamic")
    dynamic = _perturbed(config)
    fixed = keras_vit.build_vit(config.replace(dynamic_image_size=False, image_size=size))
    for mine, theirs in zip(fixed.weights, dynamic.weights):
        value = to_numpy(theirs)
        if "position_embedding" in mine.path:
            grid = tuple(s // p for s, p in zip(size, config.patch_size))
            value = resample_position_embedding(value, grid, config.grid, 0, "bicubic", antialias=True)
        mine.assign(value)
    images = np.random.default_rng(5).normal(size=(2, *size, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(dynamic(images)), to_numpy(fixed(images)), rtol=1e-4, atol=1e-4)


def test_features_model_returns_grids_and_the_pooled_class_token(to_numpy):
    config = _config("dinov2_registers")  # no head: the model returns the normalised class token
    model = _perturbed(config)
    features = keras_vit.features_model(model, blocks=[0, -1], norm=True, prefix_tokens=True)
    images = np.random.default_rng(6).normal(size=(2, 8, 12, 3)).astype("float32")
    out = {key: to_numpy(value) for key, value in features(images).items()}
    assert sorted(out) == ["block_0", "block_0_prefix", "block_1", "block_1_prefix"]
    assert out["block_1"].shape == (2, 2, 3, 16) and out["block_1_prefix"].shape == (2, 5, 16)
    np.testing.assert_allclose(out["block_1_prefix"][:, 0], to_numpy(model(images)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="blocks=\\[2\\] must list indices of the model's 2 blocks"):
        keras_vit.features_model(model, blocks=[2])


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(class_token=False), "pooling='token' reads the class token"),
        (dict(pooling="gap", distillation=True), "distillation=True needs pooling='token'"),
        (dict(activation="relu"), "Unknown activation='relu'"),
        (dict(layer_scale_init=-1.0), "layer_scale_init=-1.0 must be a positive number"),
        (dict(num_register_tokens=-1), "num_register_tokens=-1 must be a non-negative integer"),
        (dict(pre_norm="yes"), "pre_norm='yes' must be True or False"),
    ],
)
def test_family_options_are_checked(change, match):
    with pytest.raises(ValueError, match=match):
        keras_vit.ViTConfig(**TINY, **change)


# --- the views on a rotary model (issue 20): the rotation follows the tokens ---------------


def test_attention_maps_and_features_run_on_a_rotary_model(to_numpy):
    config = _config("dinov3").replace(include_top=False)  # registers, no position table, any size
    model = _perturbed(config)
    images = np.random.default_rng(7).normal(size=(2, 12, 8, 3)).astype("float32")  # not the native 8x12
    view = keras_vit.attention_model(model)(images)
    np.testing.assert_allclose(to_numpy(view["logits"]), to_numpy(model(images)), rtol=1e-5, atol=1e-5)
    assert to_numpy(view["attention"][-1]).shape == (2, 2, 3 + 6, 3 + 6)
    features = keras_vit.features_model(model, blocks=[-1], norm=True, prefix_tokens=True)(images)
    np.testing.assert_allclose(
        to_numpy(features["block_1_prefix"])[:, 0], to_numpy(model(images)), rtol=1e-5, atol=1e-5
    )
    assert to_numpy(features["block_1"]).shape == (2, 3, 2, 16)


def test_token_merging_carries_the_rotary_positions(to_numpy):
    config = _config("naver_rope_axial").replace(image_size=(16, 12))  # a class token alone: merging applies
    model = _perturbed(config, seed=1)
    images = _images(config, 2, seed=8)
    np.testing.assert_array_equal(to_numpy(keras_vit.apply_token_merging(model, 0)(images)), to_numpy(model(images)))
    merged = keras_vit.apply_token_merging(model, 3)
    assert merged.get_layer("block_1").output[0].shape == (None, 13 - 6, 16)
    assert np.all(np.isfinite(to_numpy(merged(images))))


def test_gathered_a_vit_path_on_a_rotary_model_equals_the_masked_one(to_numpy):
    """The gathered path drops halted tokens: the survivors must keep their own rotation rows."""
    from keras_vit.views.adaptive import gathered_forward, halting_model

    config = _config("naver_rope_axial").replace(
        num_layers=3, adaptive_tokens=True, halting_gate_scale=5.0, halting_gate_center=0.0
    )
    model = _perturbed(config, seed=2)
    images = _images(config, 2, seed=9)
    masked = to_numpy(halting_model(model)(images))
    assert len(np.unique(masked["depth"])) > 1, "the gate should halt tokens after different blocks"
    for i in range(2):
        logits, depth = to_numpy(gathered_forward(model, images[i : i + 1], all_tokens=True))
        np.testing.assert_allclose(logits, masked["logits"][i : i + 1], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(depth, masked["depth"][i : i + 1])


def test_views_of_a_rotary_model_save_and_load_in_safe_mode(tmp_path, to_numpy):
    """The rotary table is a tensor argument of the views' block calls: it must survive the `.keras` file."""
    config = _config("naver_rope_axial").replace(image_size=(16, 12))
    model = _perturbed(config, seed=3)
    images = _images(config, 2, seed=10)
    for name, view in (
        ("attention", keras_vit.attention_model(model)),
        ("tome", keras_vit.apply_token_merging(model, 2)),
    ):
        view.save(tmp_path / f"{name}.keras")
        loaded = keras.saving.load_model(tmp_path / f"{name}.keras", safe_mode=True)
        expected, got = view(images), loaded(images)
        if isinstance(expected, dict):
            expected, got = expected["logits"], got["logits"]
        np.testing.assert_array_equal(to_numpy(got), to_numpy(expected))
