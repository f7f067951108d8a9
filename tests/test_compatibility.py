"""Files written by keras_vit 0.1.0 still load, in safe mode, and compute the same numbers.

`tests/fixtures/v0_1_0/` was written by 0.1.0 itself (`make.py` there says how): a real
`keras-vit train` run folder, a `gap` model, a token-merging model and an attention model.
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_vit  # noqa: F401  (registers every keras_vit layer: safe mode then loads them without code)

pytestmark = pytest.mark.fast  # the edit loop's tier: `pytest -m fast`

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "v0_1_0")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(FIXTURE, "expected.npz"), allow_pickle=False) as archive:
        return dict(archive)


@pytest.mark.parametrize(
    "file, key",
    [("run/model.keras", "run_logits"), ("gap.keras", "gap_logits"), ("tome.keras", "tome_logits")],
)
def test_a_0_1_0_keras_file_loads_in_safe_mode_and_predicts_the_same(expected, file, key, to_numpy):
    model = keras.saving.load_model(os.path.join(FIXTURE, file), safe_mode=True)
    np.testing.assert_allclose(to_numpy(model(expected["inputs"])), expected[key], atol=1e-5)


def test_a_0_1_0_attention_model_loads_and_gives_the_same_maps(expected, to_numpy):
    model = keras.saving.load_model(os.path.join(FIXTURE, "attention.keras"), safe_mode=True)
    outputs = to_numpy(model(expected["inputs"]))
    np.testing.assert_allclose(outputs["logits"], expected["attention_logits"], atol=1e-5)
    np.testing.assert_allclose(outputs["attention"][-1], expected["attention_last"], atol=1e-6)


def test_a_0_1_0_run_folder_keeps_its_metadata():
    with open(os.path.join(FIXTURE, "run", "keras_vit.json")) as f:
        metadata = json.load(f)
    assert metadata["image_size"] == [32, 32] and metadata["scaling"] == "vit"
    assert metadata["labels"] == [str(i) for i in range(10)]


@pytest.mark.parametrize(
    "old, new, name",
    [
        ("keras_vit.variants", "keras_vit.config", "parse_variant"),
        ("keras_vit.weights", "keras_vit.checkpoints", "load_weights"),
        ("keras_vit.resample", "keras_vit.checkpoints.resample", "resample_position_embedding"),
        ("keras_vit.checkpoint_formats", "keras_vit.checkpoints.formats", "CheckpointError"),
        # keras_vit.training and keras_vit.deploy are TensorFlow-only parts.
        pytest.param(
            "keras_vit.recipes", "keras_vit.training.optimizers", "make_optimizer", marks=pytest.mark.tensorflow
        ),
        pytest.param("keras_vit.export", "keras_vit.deploy.export", "export_model", marks=pytest.mark.tensorflow),
        pytest.param("keras_vit.tflite", "keras_vit.deploy.litert", "LiteRTModel", marks=pytest.mark.tensorflow),
        # 0.2.0's modules: the views over a model in keras_vit.views, the A-ViT layers in keras_vit.layers
        ("keras_vit.tome", "keras_vit.views.tome", "apply_token_merging"),
        ("keras_vit.adaptive", "keras_vit.views.adaptive", "gathered_forward"),
        ("keras_vit.halting", "keras_vit.layers.halting", "Halting"),
        # 0.2.0's checkpoint modules, before the family table
        ("keras_vit.checkpoints.keys", "keras_vit.checkpoints.canonical", "model_variables"),
        ("keras_vit.checkpoints.pretrained", "keras_vit.builders", "build_from_checkpoint"),
        ("keras_vit.checkpoints.torch_layouts", "keras_vit.checkpoints.timm", "to_timm"),
    ],
)
def test_a_0_1_0_module_path_still_imports_and_says_where_it_moved(old, new, name):
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("name", ["attention_model", "features_model", "fixed_size_model", "BlockWithAttention"])
def test_a_0_2_0_name_that_left_keras_vit_model_still_imports_and_says_where_it_moved(name):
    import keras_vit.model
    import keras_vit.views

    with pytest.warns(DeprecationWarning, match=f"keras_vit.model.{name} moved to keras_vit.views"):
        value = getattr(keras_vit.model, name)
    assert value is getattr(keras_vit.views, name)
    with pytest.raises(AttributeError):
        keras_vit.model.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", ["build_vit", "build_from_checkpoint", "vit_b16"])
def test_a_0_2_0_builder_imported_from_checkpoints_still_works_and_says_where_it_moved(name):
    import keras_vit.builders
    import keras_vit.checkpoints

    with pytest.warns(DeprecationWarning, match=f"keras_vit.checkpoints.{name} moved to keras_vit.builders"):
        value = getattr(keras_vit.checkpoints, name)
    assert value is getattr(keras_vit.builders, name)


def test_the_0_1_0_top_level_names_are_all_still_there():
    names = (
        "AddPositionEmbedding ClassToken ClassTokenPooling LayerNorm PatchEmbedding SelfAttention TransformerBlock "
        "build_vit vit_b16 vit_b32 vit_h14 vit_l16 vit_l32 vit_s16 vit_ti16 resample_position_embedding "
        "TokenMerging apply_token_merging VARIANTS Variant parse_variant CheckpointError build_from_checkpoint "
        "load_weights save_npz"
    ).split()
    assert [name for name in names if not hasattr(keras_vit, name)] == []
    assert callable(keras_vit.preprocessing.preprocessing_model)  # an AttributeError in 0.1.0


# 0.2.0: every kind of .keras file it could write (`tests/fixtures/v0_2_0/make.py` says how they were made).
FIXTURE_0_2_0 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "v0_2_0")
FILES_0_2_0 = [
    ("run/model.keras", "inputs", "run_logits"),
    *[
        (f"{family}.keras", "inputs", f"{family}_outputs")
        for family in ("deit3", "distilled", "dinov2", "siglip", "clip", "avg_fc_norm")
    ],
    ("adaptive.keras", "inputs", "adaptive_logits"),
    ("tome.keras", "inputs", "tome_logits"),
    ("any_size.keras", "odd_inputs", "any_size_logits"),
]


@pytest.fixture(scope="module")
def expected_0_2_0():
    with np.load(os.path.join(FIXTURE_0_2_0, "expected.npz"), allow_pickle=False) as archive:
        return dict(archive)


@pytest.mark.parametrize("file, inputs, key", FILES_0_2_0, ids=[file for file, _, _ in FILES_0_2_0])
def test_a_0_2_0_keras_file_loads_in_safe_mode_and_computes_the_same(expected_0_2_0, file, inputs, key, to_numpy):
    model = keras.saving.load_model(os.path.join(FIXTURE_0_2_0, file), safe_mode=True)
    np.testing.assert_allclose(to_numpy(model(expected_0_2_0[inputs])), expected_0_2_0[key], atol=2e-5)


def test_a_0_2_0_attention_model_loads_and_gives_the_same_maps(expected_0_2_0, to_numpy):
    model = keras.saving.load_model(os.path.join(FIXTURE_0_2_0, "attention.keras"), safe_mode=True)
    outputs = to_numpy(model(expected_0_2_0["inputs"]))
    np.testing.assert_allclose(outputs["logits"], expected_0_2_0["attention_logits"], atol=2e-5)
    np.testing.assert_allclose(outputs["attention"][-1], expected_0_2_0["attention_last"], atol=1e-6)


def test_a_0_2_0_features_model_loads_and_gives_the_same_grids(expected_0_2_0, to_numpy):
    model = keras.saving.load_model(os.path.join(FIXTURE_0_2_0, "features.keras"), safe_mode=True)
    outputs = to_numpy(model(expected_0_2_0["odd_inputs"]))
    assert sorted(outputs) == ["block_0", "block_0_prefix", "block_1", "block_1_prefix"]
    for name, value in outputs.items():
        np.testing.assert_allclose(value, expected_0_2_0[f"features_{name}"], atol=2e-5)


def test_a_0_2_0_run_folder_keeps_its_architecture():
    with open(os.path.join(FIXTURE_0_2_0, "run", "keras_vit.json")) as f:
        metadata = json.load(f)
    config = keras_vit.ViTConfig.from_dict(metadata["architecture"])
    assert config.image_size == (32, 32) and metadata["labels"] == [str(i) for i in range(10)]
