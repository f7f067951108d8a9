"""Keras' own quantization (`model.quantize`) on keras_vit models: saved, reloaded in safe mode, the same numbers.

The Dense layers our layers build inside `build` reload with their quantized policies through a
`DTypePolicyMap` in the parent's `dtype` (`keras_vit/layers/policies.py`).
"""

import keras
import numpy as np
import pytest

from keras_vit.layers import TransformerBlock

MODES = ("int8", "int4", "float8")
FAMILIES = {
    "plain": {},
    # SigLIP's MAP head, DINOv2's registers and LayerScale in one model.
    "map_registers_layer_scale": dict(pooling="map", class_token=False, num_register_tokens=2, layer_scale_init=1e-5),
    "distilled": dict(distillation=True),
}


def _images(image_size=16, count=4):
    return np.random.default_rng(0).uniform(-1, 1, (count, image_size, image_size, 3)).astype("float32")


@pytest.mark.parametrize(
    "mode, family", [(mode, family) for mode in MODES for family in FAMILIES if family != "distilled" or mode == "int8"]
)
def test_a_quantized_model_reloads_in_safe_mode_with_identical_outputs(
    tmp_path, tiny_vit, randomize, to_numpy, mode, family
):
    model = randomize(tiny_vit(**FAMILIES[family]))
    model.quantize(mode)
    images = _images()
    expected = to_numpy(model(images))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(to_numpy(loaded(images)), expected)
    quantized = [layer.path for layer in loaded._flatten_layers() if layer.quantization_mode == mode]
    assert "block_0/attention/qkv" in quantized and "head" in quantized
    if family == "map_registers_layer_scale":
        assert "map_pooling/key_value" in quantized
    # evaluate (compiled anew after loading) runs on the quantized layers.
    loaded.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    loss, accuracy = loaded.evaluate(images, np.array([0, 1, 2, 0]), verbose=0)
    assert np.isfinite(loss) and 0 <= accuracy <= 1


def test_int8_agrees_with_float32_on_top1(tiny_vit, randomize, to_numpy):
    model = randomize(tiny_vit(num_classes=10), scale=0.1)
    images = _images(count=16)
    reference = to_numpy(model(images))
    model.quantize("int8")
    logits = to_numpy(model(images))
    assert np.mean(logits.argmax(-1) == reference.argmax(-1)) >= 0.9
    assert 0 < np.abs(logits - reference).max() < 0.1 * np.abs(reference).max()  # quantized, yet close


def test_an_unquantized_layer_keeps_its_plain_dtype_config():
    """Earlier `.keras` files and configs stay as they were: a policy name, no map."""
    block = TransformerBlock(num_heads=2, mlp_dim=8, name="block_0")
    block.build((None, 3, 4))
    assert block.get_config()["dtype"] == keras.dtype_policies.serialize(block.dtype_policy)
    assert block.get_config()["dtype"]["class_name"] == "DTypePolicy"


def test_a_quantized_block_config_rebuilds_its_dense_layers_quantized(to_numpy):
    block = TransformerBlock(num_heads=2, mlp_dim=8, name="block_0")
    block.build((None, 3, 4))
    for layer in block._flatten_layers():
        if isinstance(layer, keras.layers.Dense):
            layer.quantize("int8")
    config = block.get_config()
    assert config["dtype"]["class_name"] == "DTypePolicyMap"
    rebuilt = TransformerBlock.from_config(config)
    rebuilt.build((None, 3, 4))
    assert rebuilt.attention.qkv.quantization_mode == "int8"
    assert rebuilt.mlp_dense_2.quantization_mode == "int8"
    assert rebuilt.norm_1.quantization_mode is None  # only what was quantized
    for source, target in zip(block.weights, rebuilt.weights):
        target.assign(source)
    tokens = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    np.testing.assert_array_equal(to_numpy(rebuilt(tokens)), to_numpy(block(tokens)))
