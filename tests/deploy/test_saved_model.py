"""The SavedModel: three signatures against the Keras model, TF Serving's tools and protos."""

import base64
import io
import json
import runpy
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vit.deploy.saved_model import SIGNATURES, load_signature, version_folder
from keras_vit.preprocessing import preprocessing_model

OUTPUTS = {"logits", "probabilities", "top_k_probabilities", "top_k_indices", "top_k_labels"}


@pytest.fixture(scope="module")
def saved_model_dir(exported):
    return str(exported[0] / "saved_model" / "vit" / "1")


def _encode(array, format="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


@pytest.mark.parametrize("batch", [1, 3])
def test_serving_default_takes_preprocessed_floats(saved_model_dir, model, batch, raw_images, image_size):
    inputs = np.asarray(preprocessing_model(image_size)(raw_images(batch)))
    outputs = load_signature(saved_model_dir, "serving_default")(inputs)
    assert set(outputs) == OUTPUTS
    np.testing.assert_allclose(outputs["logits"], np.asarray(model(inputs)), atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"].sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 40, 48), (4, 17, 61), (2, 32, 32)])
def test_serving_uint8_resizes_and_normalises_any_size(saved_model_dir, model, shape, raw_images, keras_logits, labels):
    images = raw_images(*shape)
    outputs = load_signature(saved_model_dir, "serving_uint8")(images)
    np.testing.assert_allclose(outputs["logits"], keras_logits(model, images), atol=1e-5)
    # The top-k outputs follow the probabilities and name the classes.
    expected = np.argsort(-outputs["probabilities"], axis=-1)[:, :5]
    np.testing.assert_array_equal(outputs["top_k_indices"], expected)
    assert [[label.decode() for label in row] for row in outputs["top_k_labels"]] == [
        [labels[i] for i in row] for row in expected
    ]


def test_serving_bytes_decodes_png_jpeg_grayscale_rgba_and_16_bit(saved_model_dir, model, raw_images, keras_logits):
    images = raw_images(2, 36, 28)
    gray = images[0, :, :, 0]
    encoded = [
        _encode(images[0]),
        _encode(images[1], "JPEG"),
        _encode(gray),  # grayscale PNG
        _encode(np.concatenate([images[0], np.full((36, 28, 1), 7, np.uint8)], -1)),  # RGBA
        _encode(gray.astype(np.uint16) * 257),  # 16-bit grayscale PNG
    ]
    logits = load_signature(saved_model_dir, "serving_bytes")(np.array(encoded, dtype=object))["logits"]
    gray_rgb = np.repeat(gray[:, :, None], 3, -1)
    expected = keras_logits(model, np.stack([images[0], gray_rgb]))
    np.testing.assert_allclose(logits[[0, 2, 3, 4]], expected[[0, 1, 0, 1]], atol=1e-5)
    jpeg = tf.io.decode_jpeg(encoded[1]).numpy()  # lossy, and decoders differ: compare with TF's pixels
    np.testing.assert_allclose(logits[1], keras_logits(model, jpeg[None])[0], atol=1e-5)


def test_serving_bytes_rejects_bytes_that_are_no_image(saved_model_dir):
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?i)unknown image file format"):
        load_signature(saved_model_dir, "serving_bytes")(np.array([b"not an image"], dtype=object))


@pytest.mark.parametrize(
    "signature, array, expected",  # `array(raw_images)`: the input
    [
        ("serving_uint8", lambda raw: raw(1).astype("float32"), "'images' as uint8 with shape \\(any, any, any, 3\\)"),
        ("serving_uint8", lambda raw: raw(1)[0], "'images' .*; got uint8 with shape \\(40, 48, 3\\)"),
        (
            "serving_default",
            lambda raw: np.zeros((1, 40, 48, 3), "float32"),
            "'images' as float32 with shape \\(any, 32, 32, 3\\)",
        ),
        ("serving_bytes", lambda raw: np.zeros((2, 3), "uint8"), "'image_bytes' as string"),
    ],
)
def test_wrong_rank_or_dtype_names_the_expected_input(saved_model_dir, raw_images, signature, array, expected):
    with pytest.raises(ValueError, match=f"Signature '{signature}' expects input {expected}"):
        load_signature(saved_model_dir, signature)(array(raw_images))


def _saved_model_cli(*args):
    result = subprocess.run(["saved_model_cli", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_saved_model_cli_show_lists_the_signatures_and_named_outputs(saved_model_dir):
    shown = _saved_model_cli("show", "--dir", saved_model_dir, "--all")
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in shown
    for output in OUTPUTS:
        assert f"outputs['{output}']" in shown
    assert "output_0" not in shown
    assert "shape: (-1, 32, 32, 3)" in shown and "shape: (-1, -1, -1, 3)" in shown


def test_saved_model_cli_run_gives_the_keras_numbers(saved_model_dir, model, tmp_path, raw_images, keras_logits):
    images = raw_images(2, 25, 41)
    np.save(tmp_path / "x.npy", images)
    _saved_model_cli(
        "run",
        "--dir",
        saved_model_dir,
        "--tag_set",
        "serve",
        "--signature_def",
        "serving_uint8",
        "--inputs",
        f"images={tmp_path / 'x.npy'}",
        "--outdir",
        str(tmp_path / "out"),
    )
    np.testing.assert_allclose(np.load(tmp_path / "out" / "logits.npy"), keras_logits(model, images), atol=1e-5)


def test_saved_model_cli_scan_finds_no_denylisted_ops(saved_model_dir):
    assert "does not contain the default denylisted ops" in _saved_model_cli("scan", "--dir", saved_model_dir)


def test_grpc_predict_request_evaluates_against_the_signature(
    saved_model_dir, model, tmp_path, raw_images, keras_logits, repo
):
    images = raw_images(3, 30, 50)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    client = runpy.run_path(str(repo / "export" / "serving" / "grpc_predict.py"))
    request = client["predict_request"](paths)
    request = type(request).FromString(request.SerializeToString())  # as the server receives it
    signature = tf.saved_model.load(saved_model_dir).signatures[request.model_spec.signature_name]
    inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
    outputs = signature(**inputs)
    np.testing.assert_allclose(outputs["logits"].numpy(), keras_logits(model, images), atol=1e-5)


def test_rest_request_body_carries_b64_images_the_signature_decodes(
    saved_model_dir, model, tmp_path, raw_images, keras_logits, repo
):
    images = raw_images(2, 20, 20)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, image in zip(paths, images):
        Image.fromarray(image).save(path)
    body = json.loads(
        json.dumps(runpy.run_path(str(repo / "export" / "serving" / "rest_request.py"))["bytes_request"](paths))
    )
    assert body["signature_name"] == "serving_bytes"
    # What TF Serving does with {"b64": ...} before calling the signature.
    encoded = np.array([base64.b64decode(row["image_bytes"]["b64"]) for row in body["instances"]], dtype=object)
    logits = load_signature(saved_model_dir, body["signature_name"])(encoded)["logits"]
    np.testing.assert_allclose(logits, keras_logits(model, images), atol=1e-5)


@pytest.fixture(scope="module")
def plain_saved_model(model, tmp_path_factory):
    """What `model.export()` writes: a SavedModel, but not keras-vit's three signatures."""
    path = tmp_path_factory.mktemp("plain") / "m"
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def test_a_saved_model_from_another_program_is_named_as_such(cli_main, plain_saved_model, tmp_path, capsys, raw_images):
    with pytest.raises(
        ValueError,
        match=r"has no signature 'serving_uint8' \(it has: serve, serving_default\): "
        "it is not a keras-vit export",
    ):
        load_signature(plain_saved_model, "serving_uint8")
    Image.fromarray(raw_images(1)[0]).save(tmp_path / "a.png")
    assert cli_main(["predict", str(tmp_path / "a.png"), "--model", str(plain_saved_model)]) == 2
    err = capsys.readouterr().err
    assert "is not a keras-vit export" in err and err.count("\n") == 1


def test_predict_takes_tf_servings_base_path_as_its_highest_version(cli_main, exported, tmp_path, capsys, raw_images):
    base = tmp_path / "vit"
    shutil.copytree(exported[0] / "saved_model" / "vit" / "1", base / "2")
    (base / "10").mkdir()  # not a SavedModel: ignored, as TF Serving would
    (base / "notes").mkdir()
    assert version_folder(str(base)) == str(base / "2")
    assert version_folder(str(tmp_path)) is None
    Image.fromarray(raw_images(1)[0]).save(tmp_path / "a.png")
    assert cli_main(["predict", str(tmp_path / "a.png"), "--model", str(base), "--top-k", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_predict_says_when_top_k_exceeds_the_k_exported(cli_main, saved_model_dir, tmp_path, capsys, raw_images):
    Image.fromarray(raw_images(1)[0]).save(tmp_path / "a.png")
    assert cli_main(["predict", str(tmp_path / "a.png"), "--model", saved_model_dir, "--top-k", "7"]) == 2
    captured = capsys.readouterr()
    assert "--top-k=7 but the SavedModel" in captured.err and "returns its top 5 only" in captured.err
    assert captured.out == ""
