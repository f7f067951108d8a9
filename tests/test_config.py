"""`ViTConfig`: the architecture as one checked, serialisable value."""

import dataclasses
import json

import numpy as np
import pytest

import keras_vit
from keras_vit import VARIANTS, ViTConfig, build_model, build_vit, read_config, run_folder, save_npz

pytestmark = pytest.mark.fast  # the edit loop's tier: `pytest -m fast`


def test_from_variant_is_the_row_with_the_patch_and_the_overrides():
    config = ViTConfig.from_variant("B/32", image_size=(64, 96), num_classes=7, dropout_rate=None)
    row = VARIANTS["B"]
    assert (config.hidden_dim, config.num_layers, config.num_heads, config.mlp_dim) == (
        row.hidden_dim, row.num_layers, row.num_heads, row.mlp_dim,
    )  # fmt: skip
    assert config.patch_size == (32, 32) and config.image_size == (64, 96) and config.grid == (2, 3)
    assert config.num_classes == 7 and config.dropout_rate == row.dropout_rate  # None keeps the row's
    assert config.variant == "B/32" and config.num_tokens == 7
    assert ViTConfig.from_variant("L/16").dropout_rate == 0.1  # the original code's default for L


def test_build_vit_is_build_model_of_the_config():
    config = ViTConfig.from_variant("tiny/4", image_size=16, num_classes=3, pooling="gap")
    by_name = build_vit("tiny/4", image_size=16, num_classes=3, pooling="gap")
    by_config = build_vit(config)
    direct = build_model(config)
    for model in (by_config, direct):
        assert [w.shape for w in model.weights] == [w.shape for w in by_name.weights]
        assert model.name == by_name.name == "vit_tiny4"
    assert build_vit(config, num_classes=5).output_shape == (None, 5)  # options override a config too


def test_the_config_is_frozen_and_replace_checks_again():
    config = ViTConfig.from_variant("tiny/4", image_size=32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_dim = 8
    with pytest.raises(ValueError, match=r"image_size=\(30, 30\) is not divisible by patch_size=\(4, 4\)"):
        config.replace(image_size=30)


def test_dict_round_trip_is_plain_json_and_unknown_fields_are_named():
    config = ViTConfig.from_variant("S/16", image_size=(224, 160), representation_size=12, include_top=False)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["image_size"] == [224, 160] and data["patch_size"] == [16, 16]
    assert ViTConfig.from_dict(data) == config
    with pytest.raises(ValueError, match=r"Unknown ViTConfig field\(s\) \['width'\]"):
        ViTConfig.from_dict({**data, "width": 3})
    with pytest.raises(TypeError, match="Unknown ViT option"):
        build_vit("S/16", widht=3)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(layer_norm_epsilon=0), "layer_norm_epsilon=0 must be a positive number"),
        (dict(num_classes=0), "num_classes=0"),
        (dict(pooling="mean"), "Unknown pooling='mean'"),
        (dict(num_heads=5), "hidden_dim=64 is not divisible by num_heads=5"),
    ],
)
def test_every_check_runs_on_construction(change, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig.from_variant("tiny/4", image_size=32, **change)


def test_no_head_needs_no_class_count():
    config = ViTConfig.from_variant("tiny/4", image_size=32, include_top=False, num_classes=0)
    assert build_model(config).output_shape == (None, 64)


def test_variant_is_none_outside_the_table_and_the_bare_name_for_rectangular_patches():
    assert ViTConfig.from_variant("B/16", hidden_dim=96, num_heads=2).variant is None
    assert ViTConfig.from_variant("tiny", patch_size=(4, 2), image_size=8).variant == "tiny"
    assert build_vit("B/16", hidden_dim=96, num_heads=2, num_layers=1, image_size=32).name == "vit_custom"


def test_a_checkpoint_reads_back_as_the_config_it_was_saved_from(tmp_path):
    config = ViTConfig.from_variant("tiny/8", image_size=(32, 32), num_classes=5, representation_size=16)
    save_npz(build_model(config), tmp_path / "model.npz")
    assert read_config(tmp_path / "model.npz") == config
    model, report = keras_vit.build_from_checkpoint(tmp_path / "model.npz", num_classes=2, image_size=48)
    assert report.config == config.replace(num_classes=2, image_size=48)
    assert model.output_shape == (None, 2)


def test_a_run_folder_records_its_config(tmp_path, to_numpy):
    config = ViTConfig.from_variant("tiny/4", image_size=16, num_classes=2)
    model = build_model(config)
    run_folder.save_model(model, str(tmp_path))
    run_folder.write_metadata(
        str(tmp_path), image_size=config.image_size, scaling="vit", labels=["a", "b"], architecture=config.to_dict()
    )
    loaded, metadata, _ = run_folder.load_model(str(tmp_path))
    assert ViTConfig.from_dict(metadata["architecture"]) == config
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        dict(image_size=(16, 24), num_classes=3, representation_size=5, drop_path_rate=0.1, dropout_rate=0.2),
        dict(image_size=16, pooling="gap", include_top=False, num_channels=1, layer_norm_epsilon=1e-5),
    ],
)
def test_a_models_config_is_read_back_from_its_layers(options, tmp_path):
    config = ViTConfig.from_variant("tiny/4", attention_dropout_rate=0.1, **options)
    model = build_model(config)
    assert keras_vit.model.model_config(model) == config
    model.save(tmp_path / "m.keras")
    loaded = keras_vit.model.model_config(__import__("keras").saving.load_model(tmp_path / "m.keras"))
    assert loaded == config
    with pytest.raises(ValueError, match="not a keras_vit ViT"):
        keras_vit.model.model_config(__import__("keras").Sequential([__import__("keras").layers.Dense(2)]))


def test_run_folder_save_makes_a_folder_export_and_predict_take(tmp_path):
    model = build_vit("tiny/4", image_size=16, num_classes=2)
    run_folder.save(model, str(tmp_path / "run"), labels=["cat", "dog"])
    loaded, metadata, _ = run_folder.load_model(str(tmp_path / "run"))
    assert metadata["labels"] == ["cat", "dog"] and metadata["scaling"] == "vit"
    assert ViTConfig.from_dict(metadata["architecture"]) == keras_vit.model.model_config(model)
    with pytest.raises(ValueError, match="2 outputs but keras_vit.json beside it lists 3 labels"):
        run_folder.save(model, str(tmp_path / "bad"), labels=["a", "b", "c"])
    assert not (tmp_path / "bad").exists()  # nothing written for a mistake


def test_adaptive_tokens_is_one_optional_record_and_0_2_0_flat_settings_fold_into_it():
    from keras_vit.config import AdaptiveTokens

    off = ViTConfig.from_variant("tiny/4", image_size=32)
    assert off.adaptive_tokens is None and off.replace(num_classes=3).adaptive_tokens is None
    on = ViTConfig.from_variant("tiny/4", image_size=32, adaptive_tokens=True, halting_gate_center=3.0)
    assert on.adaptive_tokens == AdaptiveTokens(gate_center=3.0)
    assert on.halting_gate_center == 3.0  # 0.2.0's name still reads
    assert on.to_dict()["adaptive_tokens"]["gate_center"] == 3.0 and "halting_gate_center" not in on.to_dict()
    assert ViTConfig.from_dict(on.to_dict()) == on
    assert on.replace(halting_gate_scale=2.0).adaptive_tokens == AdaptiveTokens(gate_scale=2.0, gate_center=3.0)
    # keras_vit.json of 0.2.0: flat keys, `false` with the defaults stored, or `true` with settings
    flat = {**off.to_dict(), "adaptive_tokens": False, "halting_gate_scale": 10.0, "halting_target_depth": None}
    assert ViTConfig.from_dict(flat) == off
    assert ViTConfig.from_dict({**flat, "adaptive_tokens": True, "halting_gate_scale": 5.0}).adaptive_tokens == (
        AdaptiveTokens(gate_scale=5.0)
    )
    with pytest.raises(ValueError, match="halting_gate_scale='x' must be a number"):
        ViTConfig.from_variant("tiny/4", image_size=32, halting_gate_scale="x")
    with pytest.raises(ValueError, match="halting_target_depth=9 must be None or a block count in \\[1, 2\\]"):
        ViTConfig.from_variant("tiny/4", image_size=32, adaptive_tokens=AdaptiveTokens(target_depth=9))
