"""The LiteRT files: built-in ops only, each variant against Keras, mixed precision, refusals."""

import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from keras_vit.deploy import litert
from keras_vit.preprocessing import preprocessing_model

# How far each variant may drift from the Keras logits on this tiny random model.
TOLERANCES = {"float32": 1e-4, "float16": 5e-3, "dynamic_int8": 5e-2, "int8": 2e-1}


@pytest.mark.parametrize("quantization", litert.QUANTIZATIONS)
def test_each_variant_uses_builtin_ops_only(exported, quantization):
    ops = litert.LiteRTModel(exported[0] / "tflite" / f"vit_{quantization}.tflite").op_names()
    assert "GELU" in ops and "CONV_2D" in ops and "BATCH_MATMUL" in ops
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops


@pytest.mark.parametrize("quantization", litert.QUANTIZATIONS)
@pytest.mark.parametrize("batch", [1, 5])
def test_each_variant_computes_the_keras_logits(
    exported, model, raw_images, keras_logits, image_size, labels, quantization, batch
):
    images = raw_images(batch, 45, 29, seed=batch)  # non-square, resized as the device would
    runner = litert.LiteRTModel(exported[0] / "tflite" / f"vit_{quantization}.tflite")
    logits = runner(litert.resized_pixels(images, image_size))
    assert logits.shape == (batch, len(labels))
    np.testing.assert_allclose(logits, keras_logits(model, images), atol=TOLERANCES[quantization])


def test_files_name_their_input_and_output_and_take_any_batch(exported):
    runner = litert.LiteRTModel(exported[0] / "tflite" / "vit_float16.tflite")
    assert runner.interpreter.get_signature_list() == {"serving_default": {"inputs": ["pixels"], "outputs": ["logits"]}}
    assert runner.interpreter.get_input_details()[0]["shape_signature"].tolist() == [-1, 32, 32, 3]


def test_quantized_files_are_smaller(exported):
    sizes = {q: (exported[0] / "tflite" / f"vit_{q}.tflite").stat().st_size for q in litert.QUANTIZATIONS}
    assert sizes["float16"] < 0.7 * sizes["float32"]
    assert sizes["dynamic_int8"] < 0.5 * sizes["float32"] and sizes["int8"] < 0.5 * sizes["float32"]


def test_mixed_precision_model_converts_after_a_float32_rebuild(
    tmp_path, tiny_vit, randomize, raw_images, keras_logits, image_size, labels
):
    keras.config.set_dtype_policy("mixed_float16")
    mixed = randomize(tiny_vit(image_size=image_size, num_classes=len(labels)))
    keras.config.set_dtype_policy("float32")
    rebuilt = litert.float32_copy(mixed)
    assert {layer.dtype_policy.name for layer in rebuilt._flatten_layers()} == {"float32"}
    metadata = {"image_size": list(image_size), "scaling": "vit", "labels": labels}
    path = litert.convert(litert.pixels_model(mixed, metadata), tmp_path / "mixed.tflite", "float32")
    images = raw_images(2)
    pixels = litert.resized_pixels(images, image_size)
    np.testing.assert_allclose(litert.LiteRTModel(path)(pixels), keras_logits(mixed, images), atol=1e-2)


def test_a_graph_needing_a_tensorflow_op_fails_at_conversion(tmp_path, tiny_vit, image_size):
    """Half-precision exact GELU lowers to tf.Erfc, which has no LiteRT built-in."""
    keras.config.set_dtype_policy("mixed_float16")
    mixed = tiny_vit(image_size=image_size, num_classes=3)
    with pytest.raises(Exception, match="(?i)erfc|not supported|select"):
        litert.convert(mixed, tmp_path / "flex.tflite", "float32")


def test_float32_copy_keeps_a_float32_model_as_it_is(model):
    assert litert.float32_copy(model) is model


def test_bad_quantization_requests_are_refused(model, tmp_path):
    with pytest.raises(ValueError, match="Unknown quantization='int4'"):
        litert.convert(model, tmp_path / "m.tflite", "int4")
    with pytest.raises(ValueError, match="needs calibration images"):
        litert.convert(model, tmp_path / "m.tflite", "int8")


def test_resized_pixels_are_what_the_keras_preprocessing_normalises(raw_images, image_size):
    images = raw_images(2, 8, 8)  # upscaled: rounding to uint8 would show
    pixels = litert.resized_pixels(images, image_size)
    assert pixels.dtype == np.float32 and not np.allclose(pixels, np.round(pixels))
    normalised = (pixels - 127.5) / 127.5  # the "vit" scaling
    np.testing.assert_allclose(normalised, np.asarray(preprocessing_model(image_size)(images)), atol=1e-6)


def test_runner_names_the_expected_input_shape(exported, raw_images):
    runner = litert.LiteRTModel(exported[0] / "tflite" / "vit_float32.tflite")
    with pytest.raises(
        ValueError, match=r"expects float32 pixels of shape \(B, 32, 32, 3\); got shape \(1, 40, 48, 3\)"
    ):
        runner(raw_images(1))


def test_a_damaged_or_missing_tflite_file_is_named(tmp_path):
    (tmp_path / "bad.tflite").write_text("not a model")
    with pytest.raises(ValueError, match=r"bad.tflite is not a valid .tflite model \(.*Flatbuffer"):
        litert.LiteRTModel(tmp_path / "bad.tflite")
    with pytest.raises(FileNotFoundError, match="No such .tflite file: .*nope.tflite"):
        litert.LiteRTModel(tmp_path / "nope.tflite")


def test_predict_refuses_a_labels_txt_of_another_model(cli_main, exported, tmp_path, capsys, raw_images):
    shutil.copy(exported[0] / "tflite" / "vit_float32.tflite", tmp_path / "m.tflite")
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    Image.fromarray(raw_images(1)[0]).save(tmp_path / "a.png")
    assert cli_main(["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / "m.tflite")]) == 2
    captured = capsys.readouterr()
    assert "m.tflite has 10 outputs but the labels.txt found for it has 2 lines" in captured.err
    assert captured.out == ""
