"""SigLIP 2 NaFlex against transformers' `Siglip2VisionModel` and timm's `naflexvit_*_siglip`.

The references (`torch_reference.py naflex`, one subprocess per session) are tiny random models with
every weight perturbed, run on one batch of two aspect ratios (patch grids 3x5 and 6x3 around a 4x4
position table, so each image shrinks the table along one axis and stretches it along the other)
padded to 20 patches; keras_vit builds each from its folder alone.
"""

import json
import shutil

import keras
import numpy as np
import pytest

from keras_vit import CheckpointError, build_from_checkpoint, checkpoints
from keras_vit.checkpoints.canonical import model_variables
from keras_vit.layers import naflex_resize_weights
from keras_vit.preprocessing import naflex_inputs

RELATIVE_TOLERANCE = 1e-5  # of the largest output, float32


@pytest.fixture(scope="session")
def naflex(run_torch, tmp_path_factory):
    """The folder `torch_reference.py naflex` filled."""
    out = tmp_path_factory.mktemp("naflex")
    run_torch("naflex", out)
    return out


def _inputs(folder):
    arrays = np.load(folder / "naflex_inputs.npz")
    return {key: arrays[key].astype("float32" if key == "patches" else "int32") for key in arrays}


def _relative(got, expected):
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("name", ["hf_siglip2", "timm_naflex_siglip", "hf_siglip2_full"])
def test_naflex_folders_give_their_models_outputs_on_a_padded_batch_of_two_aspect_ratios(naflex, name):
    model, report = build_from_checkpoint(naflex / name)
    assert len(report.loaded) == len(model_variables(model)) and not report.skipped
    config = report.config
    assert config.naflex and config.pooling == "map" and config.activation == "gelu_tanh"
    assert config.image_size == (32, 32) and config.grid == (4, 4) and not config.class_token
    assert report.family == "SigLIP 2 NaFlex" and report.scaling == ("vit" if name.startswith("timm") else None)
    if name == "hf_siglip2_full":
        assert any("no part of the image model" in note for note in report.adapted), report.adapted  # the text tower
    difference = _relative(model.predict(_inputs(naflex), verbose=0), np.load(naflex / f"{name}.out.npy"))
    print(f"{name}: {difference:.2e} relative to the largest output")
    assert difference < RELATIVE_TOLERANCE


def test_every_token_equals_transformers_last_hidden_state_padding_included(naflex):
    """Padding tokens too: transformers gives them the resized table's first position, and so does keras_vit."""
    model, _ = build_from_checkpoint(naflex / "hf_siglip2")
    tokens = keras.Model(model.inputs, model.get_layer("encoder_norm").output)
    got = tokens.predict(_inputs(naflex), verbose=0)
    assert _relative(got, np.load(naflex / "hf_siglip2.tokens.npy")) < RELATIVE_TOLERANCE


def test_the_per_image_resize_is_torchs_antialiased_bilinear_interpolate(naflex):
    resized = np.load(naflex / "naflex_resize.npz")
    table = resized["table"]  # (4, 4, D)
    grids = [tuple(int(n) for n in key.split("x")) for key in resized if key != "table"]
    length = max(h * w for h, w in grids)
    weights = keras.ops.convert_to_numpy(naflex_resize_weights((4, 4), np.array(grids, "int32"), length))
    for i, (h, w) in enumerate(grids):
        got = (weights[i] @ table.reshape(16, -1))[: h * w].reshape(h, w, -1)
        np.testing.assert_allclose(got, resized[f"{h}x{w}"], rtol=1e-5, atol=1e-5 * np.abs(table).max())


def test_naflex_inputs_are_siglip2_image_processors(naflex):
    """Same grids, masks and pixels: exact on float images; on uint8 torchvision's fixed-point resize
    rounds some pixels the other way, one uint8 step (1/127.5 after scaling)."""
    arrays = np.load(naflex / "naflex_processor.npz")
    images = [arrays["image_0"], arrays["image_1"]]
    got = naflex_inputs(images, patch_size=8, max_num_patches=24)
    np.testing.assert_array_equal(got["spatial_shapes"], arrays["spatial_shapes"])  # 3x8 and 8x3 of 24
    np.testing.assert_array_equal(got["patch_mask"], arrays["patch_mask"])
    assert np.abs(got["patches"] - arrays["patches"]).max() <= 1 / 127.5 + 1e-6
    floats = naflex_inputs([image.astype("float32") for image in images], patch_size=8, max_num_patches=24)
    np.testing.assert_allclose(floats["patches"], arrays["float_patches"], rtol=0, atol=1e-5)


def test_a_loaded_naflex_model_keeps_its_option_through_a_keras_file(naflex, tmp_path):
    model, report = build_from_checkpoint(naflex / "hf_siglip2")
    model.save(tmp_path / "model.keras")
    again, again_report = build_from_checkpoint(tmp_path / "model.keras")
    assert again_report.config == report.config
    inputs = _inputs(naflex)
    np.testing.assert_allclose(again.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6)


def test_naflex_models_keras_vit_does_not_build_are_refused_by_name_in_one_line(naflex, tmp_path):
    shutil.copytree(naflex / "timm_naflex_siglip", tmp_path / "gap")
    config = json.loads((tmp_path / "gap" / "config.json").read_text())
    config["architecture"] = "naflexvit_base_patch16_gap"
    (tmp_path / "gap" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as error:
        build_from_checkpoint(tmp_path / "gap")
    message = str(error.value)
    assert "'naflexvit_base_patch16_gap'" in message and "SigLIP 2's towers" in message and "\n" not in message


def test_a_naflex_weights_file_without_its_config_is_refused_naming_the_folder(naflex):
    with pytest.raises(CheckpointError) as error:
        build_from_checkpoint(naflex / "hf_siglip2" / "model.safetensors")
    message = str(error.value)
    assert "Linear layer over 192 flattened patch values" in message and "config.json" in message
    assert "\n" not in message


def test_the_published_naflex_checkpoints_are_registered_by_their_names():
    rows = {row.url.split("/resolve/")[0]: row for row in checkpoints.CHECKPOINTS.values()}
    for repository in (
        "google/siglip2-base-patch16-naflex",
        "google/siglip2-so400m-patch16-naflex",
        "timm/naflexvit_base_patch16_siglip.v2_webli",
        "timm/naflexvit_so400m_patch16_siglip.v2_webli",
    ):
        row = rows[f"https://huggingface.co/{repository}"]
        assert row.family == "SigLIP 2 NaFlex" and row.image_size == 256 and row.output == "features"
        assert row.pooling == "map" and row.scaling == "vit"


def test_predict_on_a_naflex_checkpoint_folder_prints_the_features_at_the_images_own_grid(naflex, tmp_path, capsys):
    from PIL import Image

    from keras_vit.deploy.predict import predict_files

    image = np.random.default_rng(0).integers(0, 256, (20, 57, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "wide.png")
    assert predict_files([str(tmp_path / "wide.png")], str(naflex / "hf_siglip2"), as_json=True) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, _ = build_from_checkpoint(naflex / "hf_siglip2")
    inputs = naflex_inputs([image], patch_size=8, max_num_patches=16)  # the 4 x 4 table's budget
    assert inputs["spatial_shapes"].tolist() == [[2, 6]]  # wide, as the image
    np.testing.assert_allclose(printed["features"], model.predict(inputs, verbose=0)[0], rtol=1e-5, atol=1e-5)


def test_a_registry_row_or_a_variant_cuts_the_file_alone(naflex, tmp_path, monkeypatch):
    """The registry fetches `model.safetensors` alone: the row's variant states the patch size and the family."""
    file = naflex / "hf_siglip2" / "model.safetensors"
    row = checkpoints.Checkpoint(
        "tiny/8", "naflex_test", file.as_uri(), 32, 0, "none", pooling="map", family="SigLIP 2 NaFlex",
        output="features",
    )  # fmt: skip
    monkeypatch.setitem(checkpoints.CHECKPOINTS, row.name, row)
    monkeypatch.setattr(checkpoints.registry, "CACHE_DIR", str(tmp_path / "cache"))
    expected = np.load(naflex / "hf_siglip2.out.npy")
    for source, options in (("tiny/8:naflex_test", {}), (file, {"variant": "tiny/8"})):
        model, report = build_from_checkpoint(source, **options)
        assert report.config.naflex and report.config.activation == "gelu_tanh" and report.family == "SigLIP 2 NaFlex"
        assert _relative(model.predict(_inputs(naflex), verbose=0), expected) < RELATIVE_TOLERANCE
