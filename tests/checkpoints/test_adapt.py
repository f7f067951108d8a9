"""Adapting a checkpoint to the model: another grid (timm's class slot included), class count,
representation layer or channel count, each said in the report.
"""

import numpy as np
import pytest

from keras_vit import CheckpointError, build_from_checkpoint, load_weights, save_npz
from keras_vit.checkpoints.resample import resample_position_embedding


@pytest.mark.parametrize("stem, class_slot", [("timm_token_32x64", True), ("timm_no_embed_class_32x64", False)])
def test_a_non_square_pytorch_checkpoint_resizes_from_the_grid_it_is_given(reference, stem, class_slot, tiny):
    from safetensors.numpy import load_file

    stored = load_file(reference / f"{stem}.safetensors")["pos_embed"]
    with pytest.raises(CheckpointError, match="not a square grid: pass source_grid"):
        load_weights(tiny(image_size=48), reference / f"{stem}.safetensors")
    model = tiny(image_size=48)
    report = load_weights(model, reference / f"{stem}.safetensors", source_grid=(4, 8))
    # A timm file: resized as timm's own loader does (bicubic, antialiased).
    assert report.adapted == ["position embedding resized from a (4, 8) grid to (6, 6) (bicubic, antialiased)"]
    # timm adds no position embedding to the class token when it has no slot: a zero slot does the same.
    expected = stored if class_slot else np.concatenate([np.zeros_like(stored[:, :1]), stored], axis=1)
    np.testing.assert_allclose(
        model.get_layer("position_embedding").embedding.numpy(),
        resample_position_embedding(expected, (6, 6), (4, 8), antialias=True),
        atol=1e-6,
    )
    built, _ = build_from_checkpoint(reference / f"{stem}.safetensors", image_size=(32, 64))
    assert built.input_shape == (None, 32, 64, 3)


def test_a_timm_square_grid_without_class_slot_at_another_size_is_read_and_said(reference, tmp_path, tiny):
    from safetensors.numpy import load_file, save_file

    state = load_file(reference / "timm_token.safetensors")
    state["pos_embed"] = state["pos_embed"][:, 1:]  # as timm's no_embed_class stores it: 16 tokens, 4x4
    save_file(state, tmp_path / "no_slot.safetensors")
    model = tiny(image_size=48)
    report = load_weights(model, tmp_path / "no_slot.safetensors")
    assert any("without a class slot (timm's no_embed_class)" in line for line in report.adapted)
    assert not np.any(model.get_layer("position_embedding").embedding.numpy()[:, 0])


@pytest.mark.parametrize("image_size, grid", [(48, (6, 6)), ((32, 56), (4, 7))])
def test_another_image_size_resizes_the_grid_and_keeps_the_class_slot(tmp_path, image_size, grid, tiny, randomize):
    source = randomize(tiny())
    save_npz(source, tmp_path / "model.npz")
    model = tiny(image_size=image_size)
    report = load_weights(model, tmp_path / "model.npz", interpolation="bicubic")
    old = source.get_layer("position_embedding").embedding.numpy()
    new = model.get_layer("position_embedding").embedding.numpy()
    np.testing.assert_array_equal(new[:, 0], old[:, 0])
    np.testing.assert_allclose(new, resample_position_embedding(old, grid, (4, 4)), atol=1e-6)
    assert any(f"to {grid}" in line for line in report.adapted)
    np.testing.assert_array_equal(model.get_layer("head").kernel.numpy(), source.get_layer("head").kernel.numpy())


def test_rectangular_checkpoint_needs_its_grid(tmp_path, tiny, randomize):
    save_npz(randomize(tiny(image_size=(32, 64))), tmp_path / "wide.npz")
    with pytest.raises(CheckpointError, match=r"not a square grid: pass source_grid"):
        load_weights(tiny(image_size=48), tmp_path / "wide.npz")
    report = load_weights(tiny(image_size=48), tmp_path / "wide.npz", source_grid=(4, 8))
    assert any("(4, 8) grid to (6, 6)" in line for line in report.adapted)


def test_another_class_count_gets_a_zero_head_and_says_so(tmp_path, tiny, randomize):
    save_npz(randomize(tiny()), tmp_path / "model.npz")
    model = randomize(tiny(num_classes=3), seed=7)
    report = load_weights(model, tmp_path / "model.npz")
    assert not np.any(model.get_layer("head").kernel.numpy()) and not np.any(model.get_layer("head").bias.numpy())
    assert "new head at zeros for 3 classes (the checkpoint has 5 classes)" in report.adapted
    with pytest.raises(CheckpointError, match=r"head/kernel: checkpoint shape \(64, 5\) != model shape \(64, 3\)"):
        load_weights(tiny(num_classes=3), tmp_path / "model.npz", reset_head=False)


def test_imagenet21k_zero_head_is_reported(tmp_path, tiny, randomize):
    source = randomize(tiny())
    source.get_layer("head").kernel.assign(np.zeros((64, 5), "float32"))
    save_npz(source, tmp_path / "in21k.npz")
    report = load_weights(tiny(), tmp_path / "in21k.npz")
    assert any("head is all zeros" in line for line in report.adapted)


def test_representation_layer_is_kept_or_dropped_on_request(tmp_path, tiny, randomize, snapshot, assert_unchanged):
    source = randomize(tiny(representation_size=16))
    save_npz(source, tmp_path / "with_pre_logits.npz")
    model = tiny()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=r"pre_logits/kernel: unexpected .* drop_representation=True"):
        load_weights(model, tmp_path / "with_pre_logits.npz")
    assert_unchanged(model, before)
    report = load_weights(model, tmp_path / "with_pre_logits.npz", drop_representation=True)
    assert not np.any(model.get_layer("head").kernel.numpy())
    assert report.adapted == [
        "dropped the checkpoint's pre_logits layer",
        "new head at zeros for 5 classes (the checkpoint has 5 classes)",
    ]
    kept, _ = build_from_checkpoint(tmp_path / "with_pre_logits.npz")
    assert kept.get_layer("pre_logits").units == 16
    dropped, _ = build_from_checkpoint(tmp_path / "with_pre_logits.npz", representation="drop")
    assert "pre_logits" not in [layer.name for layer in dropped.layers]


@pytest.mark.parametrize("num_channels", [1, 6])
def test_other_channel_counts_see_a_gray_image_as_the_rgb_model_does(tmp_path, num_channels, tiny, randomize):
    source = randomize(tiny())
    save_npz(source, tmp_path / "rgb.npz")
    model = tiny(num_channels=num_channels)
    report = load_weights(model, tmp_path / "rgb.npz")
    assert any("input channels" in line for line in report.adapted)
    gray = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    expected = source.predict(np.repeat(gray, 3, axis=-1), verbose=0)
    np.testing.assert_allclose(model.predict(np.repeat(gray, num_channels, axis=-1), verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize(
    "file, interpolation, antialias",
    [
        ("timm_token.safetensors", "bicubic", True),  # timm's checkpoint_filter_fn -> resample_abs_pos_embed
        ("hf_classifier", "bicubic", False),  # transformers' interpolate_pos_encoding
        ("model.npz", "bilinear", False),  # timm's _load_weights of the original and big_vision .npz
    ],
)
def test_a_resized_position_table_follows_its_source_library_and_the_report_says_so(
    reference, file, interpolation, antialias, tiny, randomize, tmp_path
):
    from keras_vit.checkpoints import checkpoint

    if file == "model.npz":
        save_npz(randomize(tiny(image_size=32)), tmp_path / file)  # the original code's layout
        reference = tmp_path
    stored = checkpoint.read_arrays(reference / file).arrays["Transformer/posembed_input/pos_embedding"]
    model, report = build_from_checkpoint(reference / file, image_size=48)  # 4x4 patches -> 6x6
    filtered = ", antialiased" if antialias else ""
    assert f"position embedding resized from a (4, 4) grid to (6, 6) ({interpolation}{filtered})" in report.adapted
    expected = resample_position_embedding(stored, (6, 6), (4, 4), 1, interpolation, antialias)
    np.testing.assert_allclose(model.get_layer("position_embedding").embedding.numpy(), expected, atol=1e-6)
    # Asked for, another resize wins.
    _, asked = build_from_checkpoint(reference / file, image_size=48, interpolation="bicubic", antialias=False)
    assert "position embedding resized from a (4, 4) grid to (6, 6) (bicubic)" in asked.adapted
