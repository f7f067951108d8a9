"""`load_weights` and `save_npz`: exact round trips; a load planned in full before anything is assigned."""

import numpy as np
import pytest

from keras_vit import CheckpointError, build_vit, load_weights, save_npz
from keras_vit.checkpoints.canonical import model_variables


@pytest.mark.parametrize("layout", ["original", "big_vision"])
@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_npz_round_trip_is_exact(tmp_path, layout, pooling, tiny, randomize):
    source = randomize(tiny(pooling=pooling, representation_size=16))
    save_npz(source, tmp_path / "model.npz", layout=layout)
    keys = np.load(tmp_path / "model.npz").files
    assert ("params/pos_embedding" in keys) == (layout == "big_vision")
    target = tiny(pooling=pooling, representation_size=16)
    report = load_weights(target, tmp_path / "model.npz")
    assert report.format == layout and len(report.loaded) == len(model_variables(target))
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(target.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-5)


def test_wrong_variant_lists_every_mismatch_and_changes_nothing(tmp_path, tiny, randomize, snapshot, assert_unchanged):
    save_npz(randomize(tiny()), tmp_path / "tiny.npz")
    model = build_vit("tiny/8", image_size=32, num_classes=5, hidden_dim=32, num_layers=3)
    before = snapshot(model)
    with pytest.raises(CheckpointError) as error:
        load_weights(model, tmp_path / "tiny.npz")
    message = str(error.value)
    assert "nothing was loaded" in message and "strict=False" in message
    assert "embedding/kernel: checkpoint shape (8, 8, 3, 64) != model shape (8, 8, 3, 32)" in message
    for leaf in ("LayerNorm_0/scale", "MultiHeadDotProductAttention_1/query/kernel", "MlpBlock_3/Dense_1/bias"):
        assert f"Transformer/encoderblock_2/{leaf}: missing from the checkpoint" in message
    assert_unchanged(model, before)


def test_partial_load_takes_what_fits(tmp_path, tiny, randomize):
    source = randomize(tiny())
    save_npz(source, tmp_path / "two_blocks.npz")
    model = tiny(num_layers=3)
    report = load_weights(model, tmp_path / "two_blocks.npz", strict=False)
    assert len(report.skipped) == 16 and all("encoderblock_2/" in line for line in report.skipped)
    np.testing.assert_array_equal(
        model.get_layer("block_1").mlp_dense_2.kernel.numpy(), source.get_layer("block_1").mlp_dense_2.kernel.numpy()
    )
