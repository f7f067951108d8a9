"""`build_vit` and `build_from_checkpoint`: the architecture read from the tensors, the variant checked."""

import numpy as np
import pytest

from keras_vit import CheckpointError, build_from_checkpoint, build_vit, save_npz


def test_build_from_checkpoint_reads_the_architecture(tmp_path, randomize):
    source = randomize(build_vit("tiny/4", image_size=16, num_classes=7, pooling="gap", mlp_dim=96))
    save_npz(source, tmp_path / "model.npz")
    model, report = build_from_checkpoint(tmp_path / "model.npz")
    assert model.input_shape == (None, 16, 16, 3) and model.output_shape == (None, 7)
    assert model.get_layer("block_0").mlp_dim == 96 and "class_token" not in [x.name for x in model.layers]
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-5)
    bigger, report = build_from_checkpoint(tmp_path / "model.npz", image_size=24, num_classes=2)
    assert bigger.output_shape == (None, 2) and len(report.adapted) == 2
    features, _ = build_from_checkpoint(tmp_path / "model.npz", num_classes=0)
    assert features.output_shape == (None, 64)


def test_build_from_checkpoint_names_the_variant_and_reads_rectangular_grids_given_the_size(tmp_path, tiny, randomize):
    save_npz(randomize(tiny(image_size=(32, 64))), tmp_path / "wide.npz")
    model, report = build_from_checkpoint(tmp_path / "wide.npz", image_size=(32, 64))
    assert report.variant == "tiny/8" and model.input_shape == (None, 32, 64, 3) and not report.adapted
    with pytest.raises(
        CheckpointError, match=r"has 33 tokens, not a square grid, so its image size is unknown: pass image_size"
    ):
        build_from_checkpoint(tmp_path / "wide.npz")
    save_npz(randomize(tiny(mlp_dim=96)), tmp_path / "custom.npz")
    assert build_from_checkpoint(tmp_path / "custom.npz")[1].variant is None


def test_a_variant_the_checkpoint_contradicts_is_refused(tmp_path, tiny, randomize):
    save_npz(randomize(build_vit("tiny/8", image_size=32, num_classes=5, hidden_dim=96)), tmp_path / "wide.npz")
    with pytest.raises(CheckpointError) as error:
        build_from_checkpoint(tmp_path / "wide.npz", variant="tiny/4")
    message = str(error.value)
    assert "variant='tiny/4' does not match" in message and "hidden_dim=96 (the variant has 64)" in message
    assert "patch_size=(8, 8) (the variant has (4, 4))" in message and "leave variant out" in message
    save_npz(randomize(tiny()), tmp_path / "tiny.npz")
    with pytest.raises(CheckpointError, match=r"patch_size=\(8, 8\).*it is a tiny/8: pass variant='tiny/8'"):
        build_from_checkpoint(tmp_path / "tiny.npz", variant="tiny/4")
    assert build_from_checkpoint(tmp_path / "tiny.npz", variant="tiny/8")[1].variant == "tiny/8"
    assert build_from_checkpoint(tmp_path / "tiny.npz", variant="tiny")[1].variant == "tiny/8"  # no patch: not compared


def test_unknown_weights_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"known: \['augreg_in21k', 'augreg_in21k_ft_in1k', 'hf_in21k_ft_in1k'"):
        build_vit("B/16", weights="no_such_checkpoint")
