"""Every checkpoint layout, read and written: timm's and Hugging Face's (parity with PyTorch), the
original and big_vision `.npz`, earlier runs' `.keras` files; and the files that are refused.

The PyTorch side comes from `torch_reference.py` (the `reference` fixture); those tests are skipped
without the parity extra.
"""

import zipfile

import keras
import numpy as np
import pytest

from keras_vit import CheckpointError, build_from_checkpoint, build_vit, load_weights, save_npz
from keras_vit.checkpoints.big_vision import to_big_vision
from keras_vit.checkpoints.canonical import model_variables

TOLERANCE = 1e-4  # float32, two frameworks


def _max_diff(model, reference, expected):
    outputs = model.predict(np.load(reference / "images.npy"), verbose=0)
    return float(np.abs(outputs - np.load(reference / expected)).max())


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
def test_pytorch_checkpoints_give_the_same_outputs(reference, file, expected, model_kwargs, tiny):
    model = tiny(**model_kwargs)
    report = load_weights(model, reference / file)
    assert len(report.loaded) == len(model_variables(model)) and not report.adapted and not report.skipped
    difference = _max_diff(model, reference, expected)
    print(f"{file}: max abs difference {difference:.2e}")  # shown with `pytest -s`
    assert difference < TOLERANCE


@pytest.mark.parametrize(
    "stem", ["timm_token_32x64", "timm_no_embed_class_32x64", "timm_no_embed_class_8x136", "hf_32x64"]
)
def test_pytorch_checkpoints_with_a_non_square_grid_give_the_same_logits(reference, stem, tiny, reference_cases):
    size = reference_cases["grids"][stem]
    model = tiny(image_size=size)
    report = load_weights(model, reference / f"{stem}.safetensors")
    assert len(report.loaded) == len(model_variables(model)) and not report.adapted and not report.skipped
    logits = model.predict(np.load(reference / f"images_{size[0]}x{size[1]}.npy"), verbose=0)
    difference = float(np.abs(logits - np.load(reference / f"{stem}.logits.npy")).max())
    print(f"{stem}: max abs logit difference {difference:.2e}")
    assert difference < TOLERANCE


def test_older_timm_representation_layer_is_loaded(reference, tmp_path, tiny):
    from safetensors.numpy import load_file, save_file

    state = load_file(reference / "timm_token.safetensors")
    rng = np.random.default_rng(0)
    fc_weight, fc_bias = rng.normal(size=(16, 64)).astype("float32"), rng.normal(size=16).astype("float32")
    head_weight = rng.normal(size=(5, 16)).astype("float32")
    save_file(
        {**state, "pre_logits.fc.weight": fc_weight, "pre_logits.fc.bias": fc_bias, "head.weight": head_weight},
        tmp_path / "with_pre_logits.safetensors",
    )
    model = tiny(representation_size=16)
    report = load_weights(model, tmp_path / "with_pre_logits.safetensors")
    assert len(report.loaded) == len(model_variables(model)) and not report.skipped
    features = tiny(include_top=False)
    load_weights(features, reference / "timm_token.safetensors")
    images = np.load(reference / "images.npy")
    # timm's old head: Linear + tanh (`pre_logits.fc`, `pre_logits.act`), then `head`.
    expected = np.tanh(features.predict(images, verbose=0) @ fc_weight.T + fc_bias) @ head_weight.T + state["head.bias"]
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-4)


def test_b16_pytorch_checkpoints_give_the_same_logits(tmp_path, run_torch):
    run_torch("make-b16", tmp_path)
    images = np.load(tmp_path / "images_224.npy")
    for file, expected in [("timm_b16.safetensors", "timm_b16"), ("hf_b16/model.safetensors", "hf_b16")]:
        model = build_vit("B/16")
        load_weights(model, tmp_path / file)
        logits, reference = model.predict(images, verbose=0), np.load(tmp_path / f"{expected}.logits.npy")
        print(f"B/16 {file}: max abs logit difference {np.abs(logits - reference).max():.2e}")
        assert np.abs(logits - reference).max() < TOLERANCE * max(1.0, np.abs(reference).max()), file


@pytest.fixture(scope="module")
def saved_for_timm(reference, tiny, randomize, run_torch):
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
        model = randomize(tiny(pooling=pooling), seed=seed)
        save_npz(model, reference / file, layout=layout)
        expected[file] = model.predict(images, verbose=0)
    run_torch("timm-npz", reference, *[x for file, (_, _, config) in cases.items() for x in (config, file)])
    return expected


@pytest.mark.parametrize(
    "file", ["original_token.npz", "original_gap.npz", "big_vision_token.npz", "big_vision_gap.npz"]
)
def test_save_npz_is_read_by_timm(reference, saved_for_timm, file):
    difference = np.abs(np.load(reference / f"{file}.logits.npy") - saved_for_timm[file]).max()
    print(f"{file} read by timm: max abs difference {difference:.2e}")
    assert difference < TOLERANCE


def test_old_original_files_with_an_optimizer_prefix_load(tmp_path, tiny, randomize):
    source = randomize(tiny())
    np.savez(tmp_path / "old.npz", **{f"opt/target/{k}": v.numpy() for k, v in model_variables(source).items()})
    report = load_weights(tiny(), tmp_path / "old.npz")
    assert report.format == "original" and len(report.loaded) == len(model_variables(source))


def test_big_vision_scanned_encoder_and_class_slot(tmp_path, tiny, randomize):
    source = randomize(tiny())
    arrays = to_big_vision({k: v.numpy() for k, v in model_variables(source).items()})
    # big_vision has no position for the class token: its slot is folded into the token itself.
    assert arrays["params/pos_embedding"].shape == (1, 16, 64)
    scanned = {k: v for k, v in arrays.items() if "encoderblock_" not in k}
    for key in [k for k in arrays if "encoderblock_0/" in k]:
        scanned[key.replace("encoderblock_0/", "encoderblock/")] = np.stack(
            [arrays[key], arrays[key.replace("encoderblock_0/", "encoderblock_1/")]]
        )
    np.savez(tmp_path / "scanned.npz", **scanned)
    target = tiny()
    load_weights(target, tmp_path / "scanned.npz")
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(target.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-5)


def test_a_keras_file_of_an_earlier_run_loads_as_a_checkpoint(tmp_path, tiny, randomize):
    source = randomize(tiny(representation_size=16))
    source.save(tmp_path / "model.keras")
    target = tiny(representation_size=16)
    report = load_weights(target, tmp_path / "model.keras")
    assert report.format == "keras" and len(report.loaded) == len(model_variables(target))
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(target.predict(images, verbose=0), source.predict(images, verbose=0))
    model, report = build_from_checkpoint(tmp_path / "model.keras", image_size=48, num_classes=2)
    assert report.variant == "tiny/8" and model.output_shape == (None, 2)
    assert model.get_layer("pre_logits").units == 16


def test_a_keras_file_of_another_model_is_refused_with_the_reason(tmp_path, tiny):
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(tmp_path / "other.keras")
    with pytest.raises(CheckpointError, match=r"a \.keras file that Keras cannot load .*saved by keras_vit"):
        load_weights(tiny(), tmp_path / "other.keras")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda p, random_model: (save_npz(random_model(), p / "x.npz"), _truncate(p / "x.npz")),
            "truncated or corrupt",
        ),
        (
            lambda p, _: np.savez(p / "x.npz", **{"embedding/kernel": np.array([{"a": 1}], dtype=object)}),
            "pickled object array at key 'embedding/kernel'",
        ),
        (lambda p, _: zipfile.ZipFile(p / "x.npz", "w").writestr("archive/data.pkl", b"\x80\x02."), "PyTorch pickle"),
        (lambda p, _: (p / "x.npz").write_bytes(b"\x80\x02}q\x00." * 4), "PyTorch .bin/.pth pickles are not read"),
        (lambda p, _: np.savez(p / "x.npz", weights=np.zeros(3)), "Unrecognised checkpoint layout"),
    ],
    ids=["truncated_npz", "pickle_in_npz", "torch_zip", "torch_pickle", "not_a_vit"],
)
def test_unreadable_or_unsafe_files_are_refused(tmp_path, make, match, tiny, randomize, snapshot, assert_unchanged):
    make(tmp_path, lambda: randomize(tiny()))  # `make(folder, random_model)` writes x.npz
    model = tiny()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=match):
        load_weights(model, tmp_path / "x.npz")
    assert_unchanged(model, before)


def test_truncated_safetensors_is_refused(reference, tmp_path, tiny, snapshot, assert_unchanged):
    (tmp_path / "x.safetensors").write_bytes((reference / "timm_token.safetensors").read_bytes()[:5000])
    model = tiny()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(model, tmp_path / "x.safetensors")
    assert_unchanged(model, before)
