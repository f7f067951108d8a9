"""Resizing the position embedding: the same numbers as timm's, the class slot kept, grids named."""

import keras
import numpy as np
import pytest

from keras_vit.checkpoints.resample import resample_position_embedding


def test_position_embedding_resampling_matches_timm(reference, reference_cases):
    cases = np.load(reference / "resample.npz")
    for i, (old, new, interpolation, antialias, prefix) in enumerate(reference_cases["resample"]):
        ours = resample_position_embedding(cases[f"{i}/input"], new, old, prefix, interpolation, antialias)
        np.testing.assert_allclose(ours, cases[f"{i}/output"], atol=1e-5, err_msg=str(reference_cases["resample"][i]))


def test_resize_keeps_the_class_slot_and_interpolates_the_grid():
    embedding = np.random.default_rng(0).normal(size=(1, 1 + 4 * 4, 3)).astype("float32")
    resized = keras.ops.convert_to_numpy(resample_position_embedding(embedding, (8, 8), interpolation="bilinear"))
    assert resized.shape == (1, 65, 3)
    np.testing.assert_array_equal(resized[:, 0], embedding[:, 0])
    # Bilinear upsampling by 2 with half-pixel centres keeps each channel's mean.
    np.testing.assert_allclose(resized[0, 1:].mean(0), embedding[0, 1:].mean(0), atol=1e-5)


def test_resize_to_the_same_grid_is_the_identity_and_handles_rectangles():
    embedding = np.random.default_rng(0).normal(size=(1, 2 * 3, 4)).astype("float32")
    same = resample_position_embedding(embedding, (2, 3), source_grid=(2, 3), num_prefix_tokens=0)
    np.testing.assert_array_equal(same, embedding)
    bigger = resample_position_embedding(embedding, (4, 6), source_grid=(2, 3), num_prefix_tokens=0)
    assert tuple(bigger.shape) == (1, 24, 4)
    constant = np.ones((1, 1 + 9, 2), "float32")
    np.testing.assert_allclose(resample_position_embedding(constant, (5, 7)), np.ones((1, 36, 2)), rtol=1e-6)


def test_resize_names_a_grid_that_does_not_fit():
    with pytest.raises(ValueError, match="not a square grid: pass source_grid"):
        resample_position_embedding(np.zeros((1, 1 + 6, 2)), (4, 4))
    with pytest.raises(ValueError, match=r"source_grid=\(2, 2\) has 4 tokens"):
        resample_position_embedding(np.zeros((1, 1 + 6, 2)), (4, 4), source_grid=2)
