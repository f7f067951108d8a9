"""Pretrained checkpoints: parity with timm and Hugging Face, the formats, adapting, refusing.

The PyTorch side runs in a subprocess (`tests/torch_reference.py`): torchvision
segfaults when imported after TensorFlow. Those tests need the `parity` extra
(`pip install -e .[parity]`) and are skipped without it. Nothing downloads:
the registry path is exercised with a `file://` URL.
"""

import hashlib
import importlib.util
import os
import pathlib
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import CheckpointError, build_from_checkpoint, build_vit, load_weights, save_npz
from keras_vit import checkpoints, preprocessing
from keras_vit.training import optimizers
from keras_vit.checkpoints.formats import to_big_vision
from keras_vit.checkpoints.resample import resample_position_embedding
from keras_vit.checkpoints.keys import model_variables

TORCH_REFERENCE = pathlib.Path(__file__).with_name("torch_reference.py")
PARITY = all(importlib.util.find_spec(name) for name in ("torch", "timm", "transformers", "safetensors"))
needs_torch = pytest.mark.skipif(not PARITY, reason="needs the parity extra: pip install -e .[parity]")
TOLERANCE = 1e-4  # float32, two frameworks


def _tiny(**kwargs):
    """The architecture of every model in torch_reference.py."""
    return build_vit("tiny/8", **{"image_size": 32, "num_classes": 5, **kwargs})


def _randomize(model, seed=1):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(scale=0.2, size=variable.shape).astype("float32"))
    return model


def _snapshot(model):
    return [np.array(v.numpy()) for v in model.weights]


def _assert_unchanged(model, before):
    for variable, old in zip(model.weights, before):
        np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)


def _torch(*args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(TORCH_REFERENCE), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    if not PARITY:
        pytest.skip("needs the parity extra: pip install -e .[parity]")
    out = tmp_path_factory.mktemp("torch_reference")
    _torch("make", out)
    return out


def _max_diff(model, reference, expected):
    outputs = model.predict(np.load(reference / "images.npy"), verbose=0)
    return float(np.abs(outputs - np.load(reference / expected)).max())


# --- parity with PyTorch ports -----------------------------------------------------


@needs_torch
@pytest.mark.parametrize(
    "file, expected, model_kwargs",
    [
        ("timm_token.safetensors", "timm_token.logits.npy", {}),
        ("timm_gap.safetensors", "timm_gap.logits.npy", {"pooling": "gap"}),
        ("hf_classifier/model.safetensors", "hf_classifier.logits.npy", {}),
        ("hf_memory_names.safetensors", "hf_classifier.logits.npy", {}),
        ("hf_backbone/model.safetensors", "hf_backbone.pooler.npy", {"include_top": False, "representation_size": 64}),
    ],
)
def test_pytorch_checkpoints_give_the_same_outputs(reference, file, expected, model_kwargs):
    model = _tiny(**model_kwargs)
    report = load_weights(model, reference / file)
    assert len(report.loaded) == len(model_variables(model)) and not report.adapted and not report.skipped
    difference = _max_diff(model, reference, expected)
    print(f"{file}: max abs difference {difference:.2e}")  # shown with `pytest -s`
    assert difference < TOLERANCE


@needs_torch
@pytest.mark.parametrize("stem", ["timm_token_32x64", "timm_no_embed_class_32x64", "timm_no_embed_class_8x136", "hf_32x64"])
def test_pytorch_checkpoints_with_a_non_square_grid_give_the_same_logits(reference, stem):
    from tests.torch_reference import GRIDS

    size, _ = GRIDS[stem]
    model = _tiny(image_size=size)
    report = load_weights(model, reference / f"{stem}.safetensors")
    assert len(report.loaded) == len(model_variables(model)) and not report.adapted and not report.skipped
    logits = model.predict(np.load(reference / f"images_{size[0]}x{size[1]}.npy"), verbose=0)
    difference = float(np.abs(logits - np.load(reference / f"{stem}.logits.npy")).max())
    print(f"{stem}: max abs logit difference {difference:.2e}")
    assert difference < TOLERANCE


@needs_torch
@pytest.mark.parametrize("stem, class_slot", [("timm_token_32x64", True), ("timm_no_embed_class_32x64", False)])
def test_a_non_square_pytorch_checkpoint_resizes_from_the_grid_it_is_given(reference, stem, class_slot):
    from safetensors.numpy import load_file

    stored = load_file(reference / f"{stem}.safetensors")["pos_embed"]
    with pytest.raises(CheckpointError, match="not a square grid: pass source_grid"):
        load_weights(_tiny(image_size=48), reference / f"{stem}.safetensors")
    model = _tiny(image_size=48)
    report = load_weights(model, reference / f"{stem}.safetensors", source_grid=(4, 8))
    assert report.adapted == ["position embedding resized from a (4, 8) grid to (6, 6) (bicubic)"]
    # timm adds no position embedding to the class token when it has no slot: a zero slot does the same.
    expected = stored if class_slot else np.concatenate([np.zeros_like(stored[:, :1]), stored], axis=1)
    np.testing.assert_allclose(
        model.get_layer("position_embedding").embedding.numpy(), resample_position_embedding(expected, (6, 6), (4, 8)),
        atol=1e-6,
    )
    built, _ = build_from_checkpoint(reference / f"{stem}.safetensors", image_size=(32, 64))
    assert built.input_shape == (None, 32, 64, 3)


@needs_torch
def test_a_timm_square_grid_without_class_slot_at_another_size_is_read_and_said(reference, tmp_path):
    from safetensors.numpy import load_file, save_file

    state = load_file(reference / "timm_token.safetensors")
    state["pos_embed"] = state["pos_embed"][:, 1:]  # as timm's no_embed_class stores it: 16 tokens, 4x4
    save_file(state, tmp_path / "no_slot.safetensors")
    model = _tiny(image_size=48)
    report = load_weights(model, tmp_path / "no_slot.safetensors")
    assert any("without a class slot (timm's no_embed_class)" in line for line in report.adapted)
    assert not np.any(model.get_layer("position_embedding").embedding.numpy()[:, 0])


@needs_torch
def test_older_timm_representation_layer_is_loaded(reference, tmp_path):
    from safetensors.numpy import load_file, save_file

    state = load_file(reference / "timm_token.safetensors")
    rng = np.random.default_rng(0)
    fc_weight, fc_bias = rng.normal(size=(16, 64)).astype("float32"), rng.normal(size=16).astype("float32")
    head_weight = rng.normal(size=(5, 16)).astype("float32")
    save_file({**state, "pre_logits.fc.weight": fc_weight, "pre_logits.fc.bias": fc_bias, "head.weight": head_weight},
              tmp_path / "with_pre_logits.safetensors")
    model = _tiny(representation_size=16)
    report = load_weights(model, tmp_path / "with_pre_logits.safetensors")
    assert len(report.loaded) == len(model_variables(model)) and not report.skipped
    features = _tiny(include_top=False)
    load_weights(features, reference / "timm_token.safetensors")
    images = np.load(reference / "images.npy")
    # timm's old head: Linear + tanh (`pre_logits.fc`, `pre_logits.act`), then `head`.
    expected = np.tanh(features.predict(images, verbose=0) @ fc_weight.T + fc_bias) @ head_weight.T + state["head.bias"]
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-4)


@needs_torch
def test_b16_pytorch_checkpoints_give_the_same_logits(tmp_path):
    _torch("make-b16", tmp_path)
    images = np.load(tmp_path / "images_224.npy")
    for file, expected in [("timm_b16.safetensors", "timm_b16"), ("hf_b16/model.safetensors", "hf_b16")]:
        model = build_vit("B/16")
        load_weights(model, tmp_path / file)
        logits, reference = model.predict(images, verbose=0), np.load(tmp_path / f"{expected}.logits.npy")
        print(f"B/16 {file}: max abs logit difference {np.abs(logits - reference).max():.2e}")
        assert np.abs(logits - reference).max() < TOLERANCE * max(1.0, np.abs(reference).max()), file


@pytest.fixture(scope="module")
def saved_for_timm(reference):
    """Random keras_vit models written with save_npz, then run by timm's own `.npz` loader."""
    cases = {  # file: (pooling, layout, timm config)
        "original_token.npz": ("token", "original", "token"),
        "original_gap.npz": ("gap", "original", "gap"),
        "big_vision_token.npz": ("token", "big_vision", "token_no_embed_class"),
        "big_vision_gap.npz": ("gap", "big_vision", "gap"),
    }
    images = np.load(reference / "images.npy")
    expected = {}
    for seed, (file, (pooling, layout, _)) in enumerate(cases.items()):
        model = _randomize(_tiny(pooling=pooling), seed=seed)
        save_npz(model, reference / file, layout=layout)
        expected[file] = model.predict(images, verbose=0)
    _torch("timm-npz", reference, *[x for file, (_, _, config) in cases.items() for x in (config, file)])
    return expected


@needs_torch
@pytest.mark.parametrize("file", ["original_token.npz", "original_gap.npz", "big_vision_token.npz", "big_vision_gap.npz"])
def test_save_npz_is_read_by_timm(reference, saved_for_timm, file):
    difference = np.abs(np.load(reference / f"{file}.logits.npy") - saved_for_timm[file]).max()
    print(f"{file} read by timm: max abs difference {difference:.2e}")
    assert difference < TOLERANCE


@needs_torch
def test_position_embedding_resampling_matches_timm(reference):
    from tests.torch_reference import RESAMPLE_CASES  # plain data; the module imports torch lazily

    cases = np.load(reference / "resample.npz")
    for i, (old, new, interpolation, antialias, prefix) in enumerate(RESAMPLE_CASES):
        ours = resample_position_embedding(cases[f"{i}/input"], new, old, prefix, interpolation, antialias)
        np.testing.assert_allclose(ours, cases[f"{i}/output"], atol=1e-5, err_msg=str(RESAMPLE_CASES[i]))


# --- our own formats ---------------------------------------------------------------


@pytest.mark.parametrize("layout", ["original", "big_vision"])
@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_npz_round_trip_is_exact(tmp_path, layout, pooling):
    source = _randomize(_tiny(pooling=pooling, representation_size=16))
    save_npz(source, tmp_path / "model.npz", layout=layout)
    keys = np.load(tmp_path / "model.npz").files
    assert ("params/pos_embedding" in keys) == (layout == "big_vision")
    target = _tiny(pooling=pooling, representation_size=16)
    report = load_weights(target, tmp_path / "model.npz")
    assert report.format == layout and len(report.loaded) == len(model_variables(target))
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(target.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-5)


def test_old_original_files_with_an_optimizer_prefix_load(tmp_path):
    source = _randomize(_tiny())
    np.savez(tmp_path / "old.npz", **{f"opt/target/{k}": v.numpy() for k, v in model_variables(source).items()})
    report = load_weights(_tiny(), tmp_path / "old.npz")
    assert report.format == "original" and len(report.loaded) == len(model_variables(source))


def test_big_vision_scanned_encoder_and_class_slot(tmp_path):
    source = _randomize(_tiny())
    arrays = to_big_vision({k: v.numpy() for k, v in model_variables(source).items()})
    # big_vision has no position for the class token: its slot is folded into the token itself.
    assert arrays["params/pos_embedding"].shape == (1, 16, 64)
    scanned = {k: v for k, v in arrays.items() if "encoderblock_" not in k}
    for key in [k for k in arrays if "encoderblock_0/" in k]:
        scanned[key.replace("encoderblock_0/", "encoderblock/")] = np.stack(
            [arrays[key], arrays[key.replace("encoderblock_0/", "encoderblock_1/")]]
        )
    np.savez(tmp_path / "scanned.npz", **scanned)
    target = _tiny()
    load_weights(target, tmp_path / "scanned.npz")
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(target.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-5)


def test_a_keras_file_of_an_earlier_run_loads_as_a_checkpoint(tmp_path):
    source = _randomize(_tiny(representation_size=16))
    source.save(tmp_path / "model.keras")
    target = _tiny(representation_size=16)
    report = load_weights(target, tmp_path / "model.keras")
    assert report.format == "keras" and len(report.loaded) == len(model_variables(target))
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(target.predict(images, verbose=0), source.predict(images, verbose=0))
    model, report = build_from_checkpoint(tmp_path / "model.keras", image_size=48, num_classes=2)
    assert report.variant == "tiny/8" and model.output_shape == (None, 2)
    assert model.get_layer("pre_logits").units == 16


def test_a_keras_file_of_another_model_is_refused_with_the_reason(tmp_path):
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(tmp_path / "other.keras")
    with pytest.raises(CheckpointError, match=r"a \.keras file that Keras cannot load .*saved by keras_vit"):
        load_weights(_tiny(), tmp_path / "other.keras")


# --- adapting ----------------------------------------------------------------------


@pytest.mark.parametrize("image_size, grid", [(48, (6, 6)), ((32, 56), (4, 7))])
def test_another_image_size_resizes_the_grid_and_keeps_the_class_slot(tmp_path, image_size, grid):
    source = _randomize(_tiny())
    save_npz(source, tmp_path / "model.npz")
    model = _tiny(image_size=image_size)
    report = load_weights(model, tmp_path / "model.npz", interpolation="bicubic")
    old = source.get_layer("position_embedding").embedding.numpy()
    new = model.get_layer("position_embedding").embedding.numpy()
    np.testing.assert_array_equal(new[:, 0], old[:, 0])
    np.testing.assert_allclose(new, resample_position_embedding(old, grid, (4, 4)), atol=1e-6)
    assert any(f"to {grid}" in line for line in report.adapted)
    np.testing.assert_array_equal(model.get_layer("head").kernel.numpy(), source.get_layer("head").kernel.numpy())


def test_rectangular_checkpoint_needs_its_grid(tmp_path):
    save_npz(_randomize(_tiny(image_size=(32, 64))), tmp_path / "wide.npz")
    with pytest.raises(CheckpointError, match=r"not a square grid: pass source_grid"):
        load_weights(_tiny(image_size=48), tmp_path / "wide.npz")
    report = load_weights(_tiny(image_size=48), tmp_path / "wide.npz", source_grid=(4, 8))
    assert any("(4, 8) grid to (6, 6)" in line for line in report.adapted)


def test_another_class_count_gets_a_zero_head_and_says_so(tmp_path):
    save_npz(_randomize(_tiny()), tmp_path / "model.npz")
    model = _randomize(_tiny(num_classes=3), seed=7)
    report = load_weights(model, tmp_path / "model.npz")
    assert not np.any(model.get_layer("head").kernel.numpy()) and not np.any(model.get_layer("head").bias.numpy())
    assert "new head at zeros for 3 classes (the checkpoint has 5 classes)" in report.adapted
    with pytest.raises(CheckpointError, match=r"head/kernel: checkpoint shape \(64, 5\) != model shape \(64, 3\)"):
        load_weights(_tiny(num_classes=3), tmp_path / "model.npz", reset_head=False)


def test_imagenet21k_zero_head_is_reported(tmp_path):
    source = _randomize(_tiny())
    source.get_layer("head").kernel.assign(np.zeros((64, 5), "float32"))
    save_npz(source, tmp_path / "in21k.npz")
    report = load_weights(_tiny(), tmp_path / "in21k.npz")
    assert any("head is all zeros" in line for line in report.adapted)


def test_representation_layer_is_kept_or_dropped_on_request(tmp_path):
    source = _randomize(_tiny(representation_size=16))
    save_npz(source, tmp_path / "with_pre_logits.npz")
    model = _tiny()
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match=r"pre_logits/kernel: unexpected .* drop_representation=True"):
        load_weights(model, tmp_path / "with_pre_logits.npz")
    _assert_unchanged(model, before)
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
def test_other_channel_counts_see_a_gray_image_as_the_rgb_model_does(tmp_path, num_channels):
    source = _randomize(_tiny())
    save_npz(source, tmp_path / "rgb.npz")
    model = _tiny(num_channels=num_channels)
    report = load_weights(model, tmp_path / "rgb.npz")
    assert any("input channels" in line for line in report.adapted)
    gray = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    expected = source.predict(np.repeat(gray, 3, axis=-1), verbose=0)
    np.testing.assert_allclose(model.predict(np.repeat(gray, num_channels, axis=-1), verbose=0), expected, atol=1e-5)


def test_build_from_checkpoint_reads_the_architecture(tmp_path):
    source = _randomize(build_vit("tiny/4", image_size=16, num_classes=7, pooling="gap", mlp_dim=96))
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


def test_build_from_checkpoint_names_the_variant_and_reads_rectangular_grids_given_the_size(tmp_path):
    save_npz(_randomize(_tiny(image_size=(32, 64))), tmp_path / "wide.npz")
    model, report = build_from_checkpoint(tmp_path / "wide.npz", image_size=(32, 64))
    assert report.variant == "tiny/8" and model.input_shape == (None, 32, 64, 3) and not report.adapted
    with pytest.raises(CheckpointError, match=r"has 33 tokens, not a square grid, so its image size is unknown: pass image_size"):
        build_from_checkpoint(tmp_path / "wide.npz")
    save_npz(_randomize(_tiny(mlp_dim=96)), tmp_path / "custom.npz")
    assert build_from_checkpoint(tmp_path / "custom.npz")[1].variant is None


def test_a_variant_the_checkpoint_contradicts_is_refused(tmp_path):
    save_npz(_randomize(build_vit("tiny/8", image_size=32, num_classes=5, hidden_dim=96)), tmp_path / "wide.npz")
    with pytest.raises(CheckpointError) as error:
        build_from_checkpoint(tmp_path / "wide.npz", variant="tiny/4")
    message = str(error.value)
    assert "variant='tiny/4' does not match" in message and "hidden_dim=96 (the variant has 64)" in message
    assert "patch_size=(8, 8) (the variant has (4, 4))" in message and "leave variant out" in message
    save_npz(_randomize(_tiny()), tmp_path / "tiny.npz")
    with pytest.raises(CheckpointError, match=r"patch_size=\(8, 8\).*it is a tiny/8: pass variant='tiny/8'"):
        build_from_checkpoint(tmp_path / "tiny.npz", variant="tiny/4")
    assert build_from_checkpoint(tmp_path / "tiny.npz", variant="tiny/8")[1].variant == "tiny/8"
    assert build_from_checkpoint(tmp_path / "tiny.npz", variant="tiny")[1].variant == "tiny/8"  # no patch: not compared


# --- refusing ----------------------------------------------------------------------


def test_wrong_variant_lists_every_mismatch_and_changes_nothing(tmp_path):
    save_npz(_randomize(_tiny()), tmp_path / "tiny.npz")
    model = build_vit("tiny/8", image_size=32, num_classes=5, hidden_dim=32, num_layers=3)
    before = _snapshot(model)
    with pytest.raises(CheckpointError) as error:
        load_weights(model, tmp_path / "tiny.npz")
    message = str(error.value)
    assert "nothing was loaded" in message and "strict=False" in message
    assert "embedding/kernel: checkpoint shape (8, 8, 3, 64) != model shape (8, 8, 3, 32)" in message
    for leaf in ("LayerNorm_0/scale", "MultiHeadDotProductAttention_1/query/kernel", "MlpBlock_3/Dense_1/bias"):
        assert f"Transformer/encoderblock_2/{leaf}: missing from the checkpoint" in message
    _assert_unchanged(model, before)


def test_partial_load_takes_what_fits(tmp_path):
    source = _randomize(_tiny())
    save_npz(source, tmp_path / "two_blocks.npz")
    model = _tiny(num_layers=3)
    report = load_weights(model, tmp_path / "two_blocks.npz", strict=False)
    assert len(report.skipped) == 16 and all("encoderblock_2/" in line for line in report.skipped)
    np.testing.assert_array_equal(
        model.get_layer("block_1").mlp_dense_2.kernel.numpy(), source.get_layer("block_1").mlp_dense_2.kernel.numpy()
    )


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: (save_npz(_randomize(_tiny()), p / "x.npz"), _truncate(p / "x.npz")), "truncated or corrupt"),
        (lambda p: np.savez(p / "x.npz", **{"embedding/kernel": np.array([{"a": 1}], dtype=object)}),
         "pickled object array at key 'embedding/kernel'"),
        (lambda p: zipfile.ZipFile(p / "x.npz", "w").writestr("archive/data.pkl", b"\x80\x02."), "PyTorch pickle"),
        (lambda p: (p / "x.npz").write_bytes(b"\x80\x02}q\x00." * 4), "PyTorch .bin/.pth pickles are not read"),
        (lambda p: np.savez(p / "x.npz", weights=np.zeros(3)), "Unrecognised checkpoint layout"),
    ],
    ids=["truncated_npz", "pickle_in_npz", "torch_zip", "torch_pickle", "not_a_vit"],
)
def test_unreadable_or_unsafe_files_are_refused(tmp_path, make, match):
    make(tmp_path)
    model = _tiny()
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match=match):
        load_weights(model, tmp_path / "x.npz")
    _assert_unchanged(model, before)


@needs_torch
def test_truncated_safetensors_is_refused(reference, tmp_path):
    (tmp_path / "x.safetensors").write_bytes((reference / "timm_token.safetensors").read_bytes()[:5000])
    model = _tiny()
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(model, tmp_path / "x.safetensors")
    _assert_unchanged(model, before)


# --- the registry ------------------------------------------------------------------


@pytest.fixture
def published(tmp_path, monkeypatch):
    """A registry row for a tiny model, "published" at a file:// URL, cached under tmp_path."""
    source = _randomize(_tiny())
    path = save_npz(source, tmp_path / "published.npz")
    digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    row = checkpoints.Checkpoint(
        "tiny/8", "test_in1k", pathlib.Path(path).as_uri(), 32, 5, "test", sha256=digest
    )
    monkeypatch.setitem(checkpoints.CHECKPOINTS, row.name, row)
    monkeypatch.setattr(checkpoints.registry, "CACHE_DIR", str(tmp_path / "cache"))
    return source, row


def test_build_vit_fetches_a_registered_checkpoint_once(published, tmp_path):
    source, row = published
    model = build_vit("tiny/8", image_size=32, num_classes=5, weights="test_in1k")
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-6)
    assert (tmp_path / "cache" / "keras_vit" / "published.npz").exists()
    (tmp_path / "published.npz").unlink()  # the cached copy serves from now on
    again, report = build_from_checkpoint("tiny/8:test_in1k", image_size=48, num_classes=2)
    assert report.checkpoint is row and again.output_shape == (None, 2)


def test_a_registered_file_with_another_hash_is_refused(published, monkeypatch, tmp_path):
    _, row = published
    bad = checkpoints.Checkpoint(**{**row.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(checkpoints.CHECKPOINTS, row.name, bad)
    with pytest.raises(ValueError, match="corrupted"):
        build_vit("tiny/8", image_size=32, num_classes=5, weights="test_in1k")
    assert not list((tmp_path / "cache" / "keras_vit").iterdir())  # nothing half-checked is kept


def test_a_download_killed_half_way_is_not_served(published, tmp_path):
    source, row = published
    cache = tmp_path / "cache" / "keras_vit"
    cache.mkdir(parents=True)
    truncated = pathlib.Path(row.url.removeprefix("file://")).read_bytes()[:100]
    (cache / "published.npz.4242.part").write_bytes(truncated)  # what a killed download left
    model = build_vit("tiny/8", image_size=32, num_classes=5, weights="test_in1k")
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-6)
    assert (cache / "published.npz").read_bytes() == pathlib.Path(row.url.removeprefix("file://")).read_bytes()


def test_a_failed_download_says_where_to_put_the_file(published, monkeypatch, tmp_path):
    _, row = published
    missing = checkpoints.Checkpoint(**{**row.__dict__, "url": (tmp_path / "gone.npz").as_uri(), "sha256": None})
    monkeypatch.setitem(checkpoints.CHECKPOINTS, row.name, missing)
    target = tmp_path / "cache" / "keras_vit" / "gone.npz"
    with pytest.raises(ConnectionError) as error:
        build_vit("tiny/8", image_size=32, num_classes=5, weights="test_in1k")
    message = str(error.value)
    assert missing.url in message and str(target) in message and "--weights path/to/file.npz" in message
    assert not list(target.parent.iterdir())  # no partial file left behind
    from keras_vit.cli import USER_ERRORS

    assert isinstance(error.value, USER_ERRORS)  # one line on the command line, not a traceback


def test_unknown_weights_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"known: \['augreg_in21k', 'augreg_in21k_ft_in1k', 'hf_in21k_ft_in1k'"):
        build_vit("B/16", weights="no_such_checkpoint")


def test_registry_rows_are_consistent():
    for name, row in checkpoints.CHECKPOINTS.items():
        _, patch = keras_vit.parse_variant(row.variant)
        assert name == row.name and row.url.startswith("https://") and row.image_size % patch == 0
        assert row.scaling in preprocessing.SCALINGS and row.cache_name.endswith((".npz", ".safetensors"))
    cache_names = [row.cache_name for row in checkpoints.CHECKPOINTS.values()]
    assert len(set(cache_names)) == len(cache_names)  # two rows sharing a cached file would load each other's weights
    assert checkpoints.find_checkpoint("augreg_in21k_ft_in1k", "B/16").url.endswith("res_224.npz")


def test_fine_tune_recipe_is_the_papers():
    recipe = optimizers.FINE_TUNE_RECIPE
    optimizer = recipe.optimizer(0.03, total_steps=1000)
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    assert optimizer.momentum == 0.9 and optimizer.global_clipnorm == 1.0 and not optimizer.weight_decay
    rates = [float(schedule(step)) for step in (0, 50, 100, 550, 1000)]
    assert rates[0] == 0 and rates[1] == pytest.approx(0.015) and rates[2] == pytest.approx(0.03)
    assert rates[3] == pytest.approx(0.015, rel=1e-3) and rates[4] == pytest.approx(0.0, abs=1e-7)
