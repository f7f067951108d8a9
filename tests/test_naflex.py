"""SigLIP 2's NaFlex input (`ViTConfig(naflex=True)`): what the option must mean, on any backend.

The parity against transformers and timm is in tests/checkpoints/test_naflex.py, and the NumPy
reference forward in tests/test_families.py; here: padding changes nothing, an image's outputs do not
depend on its batch, at the table's own grid the model is the fixed-size SigLIP model, and the model
runs the same on JAX and torch.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.preprocessing import naflex_inputs, naflex_size

CONFIG = dict(hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32, patch_size=4, image_size=(12, 16), num_classes=3)


def _model(**changes):
    model = keras_vit.build_vit(keras_vit.ViTConfig(**{**CONFIG, "pooling": "map", "naflex": True, **changes}))
    rng = np.random.default_rng(0)
    for w in model.weights:  # every weight random: a zero head would hide the pooling
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    return model


def _batch(shapes, length, seed=0):
    shapes = np.asarray(shapes, "int32")
    return {
        "patches": np.random.default_rng(seed).normal(size=(len(shapes), length, 48)).astype("float32"),
        "spatial_shapes": shapes,
        "patch_mask": (np.arange(length)[None] < shapes.prod(-1)[:, None]).astype("int32"),
    }


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.fast
def test_each_image_gives_what_it_gives_alone_whatever_the_padding():
    model = _model()
    batch = _batch([(2, 5), (4, 1), (3, 4)], length=14)
    out = _numpy(model(batch))
    for i, (h, w) in enumerate(batch["spatial_shapes"]):
        n = h * w
        alone = {
            "patches": batch["patches"][i : i + 1, :n],
            "spatial_shapes": batch["spatial_shapes"][i : i + 1],
            "patch_mask": np.ones((1, n), "int32"),
        }
        np.testing.assert_allclose(_numpy(model(alone))[0], out[i], rtol=1e-5, atol=1e-5)
    noisy = {**batch, "patches": np.where(batch["patch_mask"][..., None] > 0, batch["patches"], 1e3)}
    np.testing.assert_allclose(_numpy(model(noisy)), out, rtol=1e-5, atol=1e-5)  # padding's values: no effect


@pytest.mark.fast
def test_at_the_tables_own_grid_it_is_the_fixed_size_siglip_model():
    naflex = _model()
    fixed = keras_vit.build_vit(keras_vit.ViTConfig(**{**CONFIG, "pooling": "map"}))
    fixed.set_weights(naflex.get_weights())
    images = np.random.default_rng(1).normal(size=(2, 12, 16, 3)).astype("float32")
    patches = images.reshape(2, 3, 4, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 12, 48)
    inputs = {"patches": patches, "spatial_shapes": np.array([[3, 4]] * 2, "int32"), "patch_mask": np.ones((2, 12))}
    np.testing.assert_allclose(_numpy(naflex(inputs)), _numpy(fixed(images)), rtol=1e-5, atol=1e-5)


@pytest.mark.fast
def test_naflex_inputs_keep_the_aspect_ratio_within_the_budget():
    assert naflex_size(37, 90, 8, 24) == (24, 64)  # 3 x 8 patches
    assert naflex_size(1000, 10, 16, 256) == (2048, 32)  # 128 x 2 patches
    assert naflex_size(1000, 1, 16, 16) == (256, 16)  # one patch wide at least
    image = np.random.default_rng(2).integers(0, 256, (50, 20, 3), dtype=np.uint8)
    inputs = naflex_inputs([image, image[:20, :]], patch_size=4, max_num_patches=30)
    assert inputs["patches"].shape == (2, 30, 48) and inputs["spatial_shapes"].tolist() == [[8, 3], [5, 5]]
    assert inputs["patch_mask"].sum(1).tolist() == [24, 25] and not inputs["patches"][0, 24:].any()
    assert _numpy(_model()(inputs)).shape == (2, 3)


@pytest.mark.fast
@pytest.mark.parametrize(
    "change, match",
    [
        (dict(pooling="token"), r"naflex=True builds SigLIP 2's NaFlex tower, which pools with pooling='map'"),
        (dict(num_register_tokens=1), "1 prefix token"),
        (dict(dynamic_image_size=True), "leave dynamic_image_size at False"),
        (dict(pooling="map", naflex="yes"), "naflex='yes' must be True or False"),
    ],
)
def test_naflex_options_are_checked(change, match):
    with pytest.raises(ValueError, match=match):
        keras_vit.ViTConfig(**{**CONFIG, "pooling": "map", "naflex": True, **change})


SCRIPT = r"""
import sys

import keras
import numpy as np

import keras_vit  # noqa: F401  (registers the layers)

folder = sys.argv[1]
model = keras.saving.load_model(f"{folder}/model.keras", safe_mode=True)
inputs = dict(np.load(f"{folder}/inputs.npz"))
np.save(f"{folder}/{keras.backend.backend()}.npy", keras.ops.convert_to_numpy(model(inputs)))
print("ok")
"""


@pytest.mark.slow  # a fresh process per backend: ~25 s each
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_naflex_model_computes_the_same_on_jax_and_torch(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    model, inputs = _model(), _batch([(2, 5), (4, 3)], length=13)
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / f"{backend}.npy"), _numpy(model(inputs)), rtol=1e-5, atol=1e-5)


@pytest.mark.fast
def test_predict_runs_each_image_at_its_own_aspect_ratio(tmp_path, capsys):
    from PIL import Image

    from keras_vit import run_folder
    from keras_vit.cli import main

    model = _model()
    run_folder.save(model, tmp_path / "run", labels=["a", "b", "c"], max_num_patches=20)
    image = np.random.default_rng(3).integers(0, 256, (30, 70, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "wide.png")
    main(["predict", str(tmp_path / "wide.png"), "--model", str(tmp_path / "run"), "--json", "--top-k", "3"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    inputs = naflex_inputs([image], patch_size=4, max_num_patches=20)
    assert inputs["spatial_shapes"].tolist() == [[3, 6]]  # 30 x 70 kept wide, not squashed to the table's 3 x 4
    logits = _numpy(model(inputs))[0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert [row["label"] for row in printed["top_k"]] == [["a", "b", "c"][i] for i in np.argsort(-probabilities)]
    np.testing.assert_allclose(
        [row["probability"] for row in printed["top_k"]], np.sort(probabilities)[::-1], atol=1e-5
    )


@pytest.mark.fast
@pytest.mark.parametrize("view", ["attention_model", "features_model", "apply_token_merging", "fixed_size_model"])
def test_the_image_views_refuse_a_naflex_model_in_one_line(view):
    from keras_vit import views

    function = getattr(views, view)
    args = {"apply_token_merging": (2,), "fixed_size_model": ((12, 16),)}.get(view, ())
    with pytest.raises(ValueError, match=rf"^{view} takes a model of images; .* is a NaFlex model"):
        function(_model(), *args)
