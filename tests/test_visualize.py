"""Attention maps: the attention model, rollout, the PNG writers (`predict --explain`: tests/deploy/test_predict.py)."""

import keras
import numpy as np
import pytest
from PIL import Image

from keras_vit import visualize

LABELS = [str(i) for i in range(3)]
# (pooling, image_size): class token and gap, square and rectangular patch grids.
CASES = [("token", 16), ("token", (16, 8)), ("gap", 16), ("gap", (8, 16))]


@pytest.fixture
def vit(tiny_vit, randomize):
    """`vit(pooling="token", image_size=16, **options)`: a tiny ViT with every weight random."""

    def vit(pooling="token", image_size=16, **options):
        return randomize(tiny_vit(image_size=image_size, num_classes=len(LABELS), pooling=pooling, **options))

    return vit


def _images(model, n=2):
    return np.random.default_rng(0).normal(size=(n, *model.input_shape[1:])).astype("float32")


@pytest.mark.parametrize("pooling, image_size", CASES)
def test_attention_model_shares_the_weights_and_gives_the_same_logits(pooling, image_size, vit, to_numpy):
    model = vit(pooling, image_size, representation_size=8)
    attend = visualize.attention_model(model)
    assert {id(w) for w in attend.weights} == {id(w) for w in model.weights}
    outputs = to_numpy(attend(_images(model)))
    np.testing.assert_allclose(outputs["logits"], to_numpy(model(_images(model))), atol=1e-5)
    rows, cols = visualize.grid_shape(model)
    tokens = rows * cols + (pooling == "token")
    assert [tuple(a.shape) for a in outputs["attention"]] == [(2, 2, tokens, tokens)] * 2
    np.testing.assert_allclose(np.sum(outputs["attention"][0], axis=-1), 1, atol=1e-5)


def test_attention_model_saves_and_loads_in_safe_mode(tmp_path, vit, to_numpy):
    model = vit("gap", (16, 8))
    attend = visualize.attention_model(model)
    attend.save(tmp_path / "attention.keras")
    loaded = keras.saving.load_model(tmp_path / "attention.keras", safe_mode=True)
    expected, got = to_numpy(attend(_images(model))), to_numpy(loaded(_images(model)))
    np.testing.assert_allclose(got["logits"], expected["logits"], atol=1e-6)
    for a, b in zip(got["attention"], expected["attention"]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_attention_model_of_a_saved_model_without_head(tmp_path, vit, to_numpy):
    model = vit(include_top=False)
    model.save(tmp_path / "features.keras")
    loaded = keras.saving.load_model(tmp_path / "features.keras", safe_mode=True)
    outputs = to_numpy(visualize.attention_model(loaded)(_images(model)))
    np.testing.assert_allclose(outputs["logits"], to_numpy(model(_images(model))), atol=1e-5)
    assert outputs["logits"].shape == (2, 64)


@pytest.mark.parametrize("pooling, image_size", CASES)
def test_rollout_rows_sum_to_one_and_maps_cover_the_grid(pooling, image_size, vit):
    model = vit(pooling, image_size)
    attention = visualize.attention_model(model)(_images(model))["attention"]
    grid, prefix = visualize.grid_shape(model), visualize.num_prefix_tokens(model)
    assert prefix == (pooling == "token")
    rollout = visualize.attention_rollout(attention)
    tokens = grid[0] * grid[1] + prefix
    assert rollout.shape == (2, tokens, tokens)
    np.testing.assert_allclose(rollout.sum(axis=-1), 1, atol=1e-6)
    heat = visualize.rollout_map(attention, grid, prefix)
    assert heat.shape == (2, *grid) and (heat >= 0).all()
    np.testing.assert_allclose(heat.sum(axis=(1, 2)), 1, atol=1e-6)
    assert visualize.last_block_maps(attention, grid, prefix).shape == (2, 2, *grid)


def test_rollout_is_the_product_of_head_averaged_attention_plus_identity():
    rng = np.random.default_rng(0)
    attention = [rng.dirichlet(np.ones(3), size=(1, 2, 3)) for _ in range(2)]  # (B=1, h=2, T=3, T=3)
    per_block = [(a[0].mean(axis=0) + np.eye(3)) / 2 for a in attention]  # rows already sum to 2
    np.testing.assert_allclose(visualize.attention_rollout(attention)[0], per_block[1] @ per_block[0])
    uniform = [np.full((1, 2, 3, 3), 1 / 3)] * 4  # the class token's rollout spreads evenly over patches
    np.testing.assert_allclose(visualize.rollout_map(uniform, (1, 2), 1), [[[0.5, 0.5]]])


def test_png_writers_make_real_images_of_the_right_size(tmp_path, not_blank):
    image = np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    heat = np.arange(6, dtype=float).reshape(3, 2)
    visualize.save_overlay(tmp_path / "own.png", image, heat)
    visualize.save_overlay(tmp_path / "big.png", image, heat, size=visualize.display_size(image.shape))
    visualize.save_attention_figure(tmp_path / "panels.png", image, heat, [heat, heat[::-1], heat.T.reshape(3, 2)])
    sizes = {"own.png": (20, 30), "big.png": (240, 360), "panels.png": (5 * 250, 290)}
    for name, size in sizes.items():
        with Image.open(tmp_path / name) as written:
            assert written.format == "PNG" and written.size == size, name
        assert not_blank(tmp_path / name), name
    upsampled = visualize.upsample(heat, (30, 20))
    assert upsampled.min() == 0 and upsampled.max() == 1


@pytest.mark.parametrize(
    "options, prefix, class_token",
    [
        (dict(distillation=True, num_register_tokens=2, embed_prefix_tokens=False), 4, True),  # DeiT + registers
        (dict(pooling="gap", num_register_tokens=3), 3, False),  # registers, no class token
        (dict(pooling="map", num_register_tokens=1, dynamic_image_size=True), 1, False),  # any size
    ],
)
def test_maps_skip_every_prefix_token_and_read_the_class_token_only_where_there_is_one(
    options, prefix, class_token, vit, to_numpy
):
    model = vit(image_size=16, **options)
    assert visualize.num_prefix_tokens(model) == prefix and visualize.has_class_token(model) == class_token
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    attention = to_numpy(visualize.attention_model(model)(images))["attention"]
    grid = visualize.grid_shape(model, (16, 16))
    heat = visualize.rollout_map(attention, grid, prefix, class_token)
    assert heat.shape == (2, 4, 4)
    np.testing.assert_allclose(heat.sum(axis=(1, 2)), 1, atol=1e-6)
    rollout = visualize.attention_rollout(attention)
    expected = rollout[:, 0, prefix:] if class_token else rollout[:, prefix:, prefix:].mean(axis=1)
    np.testing.assert_allclose(heat.reshape(2, -1), expected / expected.sum(-1, keepdims=True), atol=1e-6)
    assert visualize.last_block_maps(attention, grid, prefix, class_token).shape == (2, 2, 4, 4)


def test_grid_shape_of_a_model_taking_any_size_asks_for_the_image_size(vit):
    model = vit(image_size=16, dynamic_image_size=True)
    with pytest.raises(ValueError, match=r"takes images of any size: pass image_size=\(height, width\)"):
        visualize.grid_shape(model)
    assert visualize.grid_shape(model, (24, 8)) == (6, 2)
