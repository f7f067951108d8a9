"""Token merging (ToMe): what the paper says it does, on our model, and its artifacts."""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.views.tome import TokenMerging, apply_token_merging, bipartite_soft_matching


@pytest.fixture(scope="module")
def model(tiny_vit, randomize):
    """A tiny/4 ViT at 32x32 (65 tokens, 2 blocks) with every weight random, so no output is trivially 0."""
    return randomize(tiny_vit(image_size=32, num_classes=10), seed=0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype("float32")


def test_r_zero_is_the_original_model_exactly(model, images, to_numpy):
    np.testing.assert_array_equal(to_numpy(apply_token_merging(model, 0)(images)), to_numpy(model(images)))


def test_shares_the_weights(model):
    fast = apply_token_merging(model, 4)
    assert {id(v) for v in fast.weights} == {id(v) for v in model.weights}


@pytest.mark.parametrize("r, lengths", [(4, [61, 57]), ([8, 2], [57, 55]), (100, [33, 17])])
def test_token_count_shrinks_by_r_per_block(model, images, r, lengths, to_numpy):
    fast = apply_token_merging(model, r)
    assert [fast.get_layer(f"block_{i}").output[0].shape[1] for i in range(2)] == lengths
    probe = keras.Model(fast.input, [fast.get_layer(f"block_{i}").output for i in range(2)])
    for (tokens, sizes), length in zip(to_numpy(probe(images)), lengths):
        assert tokens.shape == (3, length, 64)
        # Every patch is still counted once, the class token on its own.
        np.testing.assert_allclose(np.sum(sizes, axis=(1, 2)), 65, rtol=1e-6)
        np.testing.assert_array_equal(sizes[:, 0, 0], 1)


def test_class_token_is_kept_first_and_unmerged(model, images, to_numpy):
    block = model.get_layer("block_0")
    tokens = keras.Model(model.input, model.get_layer("embedding_dropout").output)(images)
    merged, _ = to_numpy(TokenMerging(block, 16)(tokens))
    np.testing.assert_allclose(merged[:, 0], to_numpy(block(tokens))[:, 0], rtol=1e-5, atol=1e-5)


def test_matching_merges_the_most_similar_pair(to_numpy):
    # Tokens 0 (class), 1, 2, 3: set A = {0, 2}, B = {1, 3}; token 2 equals token 3.
    metric = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]], "float32")
    merge = bipartite_soft_matching(metric, 1)
    out = to_numpy(merge(np.array([[[10.0], [1.0], [2.0], [3.0]]], "float32")))
    np.testing.assert_array_equal(out[0, :, 0], [10, 1, 5])  # class kept, 2 summed into 3


def test_validates_r(model):
    with pytest.raises(ValueError, match="r=-1"):
        apply_token_merging(model, -1)
    with pytest.raises(ValueError, match="one int per block"):
        apply_token_merging(model, [1, 2, 3])
    gap = keras_vit.build_vit("tiny/4", image_size=32, num_classes=10, pooling="gap")
    with pytest.raises(ValueError, match="class-token"):
        apply_token_merging(gap, 2)


def test_keras_file_round_trip(model, images, tmp_path, to_numpy):
    fast = apply_token_merging(model, 8)
    fast.save(tmp_path / "tome.keras")
    loaded = keras.saving.load_model(tmp_path / "tome.keras", safe_mode=True)
    np.testing.assert_allclose(to_numpy(loaded(images)), to_numpy(fast(images)), rtol=1e-5, atol=1e-5)


@pytest.mark.tensorflow
def test_saved_model_round_trip(model, images, tmp_path):
    import tensorflow as tf

    fast = apply_token_merging(model, 8)
    fast.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.serve(images), fast(images), rtol=1e-4, atol=1e-4)


@pytest.mark.tensorflow
def test_tflite_round_trip_with_builtin_ops_only(model, images, tmp_path):
    from keras_vit.deploy import litert

    fast = apply_token_merging(model, 8)
    metadata = {"image_size": [32, 32], "scaling": "vit"}
    pixels = ((images - images.min()) / np.ptp(images) * 255).astype("float32")
    # `convert` allows TFLITE_BUILTINS only: a TensorFlow (Flex) op would fail right here.
    path = litert.convert(litert.pixels_model(fast, metadata), str(tmp_path / "tome.tflite"), "float32")
    runtime = litert.LiteRTModel(path)
    expected = litert.pixels_model(fast, metadata)(pixels)["logits"]
    np.testing.assert_allclose(runtime(pixels), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(distillation=True), "keeps only the class token in place; this model has 2 prefix tokens"),
        (dict(num_register_tokens=4, embed_prefix_tokens=False), "this model has 5 prefix tokens"),
        (dict(dynamic_image_size=True), r"takes any image size.*fixed_size_model"),
    ],
)
def test_models_merging_cannot_serve_get_one_clear_error(options, match):
    model = keras_vit.build_vit("tiny/4", image_size=16, num_classes=3, **options)
    with pytest.raises(ValueError, match=match):
        apply_token_merging(model, r=2)


def test_a_merged_token_keeps_the_position_of_the_token_it_merged_into(to_numpy):
    """`TokenState.positions` follow the tokens through merging (a rotary embedding reads them)."""
    rng = np.random.default_rng(0)
    metric = rng.normal(size=(2, 17, 8)).astype("float32")
    merge = bipartite_soft_matching(metric, r=5)
    positions = np.tile(np.arange(17, dtype="int32"), (2, 1))
    merged_positions = to_numpy(merge.positions(positions))  # (2, 12)
    where = to_numpy(merge(np.eye(17, dtype="float32")[None].repeat(2, axis=0)))  # (2, 12, 17): who is in each
    assert merged_positions.shape == (2, 12) and merged_positions[:, 0].tolist() == [0, 0]  # class token first
    for b in range(2):
        assert len(set(merged_positions[b].tolist())) == 12
        # each token is (at least) the one at its position; the ones merged into it are the others
        assert all(where[b, i, merged_positions[b, i]] == 1 for i in range(12))
    assert where.sum() == 2 * 17  # every position is in exactly one merged token


def test_token_merging_carries_positions_when_the_state_has_them(to_numpy):
    model = keras_vit.build_vit("tiny/4", image_size=32, num_classes=10)
    block = model.get_layer("block_0")
    tokens = np.random.default_rng(1).normal(size=(2, 65, 64)).astype("float32")
    positions = np.tile(np.arange(65, dtype="int32"), (2, 1))
    out, sizes, moved = TokenMerging(block, 8)(tokens, None, positions)
    plain_out, plain_sizes = TokenMerging(block, 8)(tokens)
    np.testing.assert_allclose(to_numpy(out), to_numpy(plain_out), atol=1e-6)
    assert to_numpy(moved).shape == (2, 57) and to_numpy(moved)[:, 0].tolist() == [0, 0]
