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
import keras_vit.visualize  # noqa: F401  (0.1.0 registered BlockWithAttention only here)

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "v0_1_0")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(FIXTURE, "expected.npz"), allow_pickle=False) as archive:
        return dict(archive)


@pytest.mark.parametrize(
    "file, key",
    [("run/model.keras", "run_logits"), ("gap.keras", "gap_logits"), ("tome.keras", "tome_logits")],
)
def test_a_0_1_0_keras_file_loads_in_safe_mode_and_predicts_the_same(expected, file, key):
    model = keras.saving.load_model(os.path.join(FIXTURE, file), safe_mode=True)
    np.testing.assert_allclose(np.asarray(model(expected["inputs"])), expected[key], atol=1e-5)


def test_a_0_1_0_attention_model_loads_and_gives_the_same_maps(expected):
    model = keras.saving.load_model(os.path.join(FIXTURE, "attention.keras"), safe_mode=True)
    outputs = model(expected["inputs"])
    np.testing.assert_allclose(np.asarray(outputs["logits"]), expected["attention_logits"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(outputs["attention"][-1]), expected["attention_last"], atol=1e-6)


def test_a_0_1_0_run_folder_keeps_its_metadata():
    with open(os.path.join(FIXTURE, "run", "keras_vit.json")) as f:
        metadata = json.load(f)
    assert metadata["image_size"] == [32, 32] and metadata["scaling"] == "vit"
    assert metadata["labels"] == [str(i) for i in range(10)]
