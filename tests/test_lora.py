"""LoRA through Keras' `Dense.enable_lora`: what trains, what is saved, and adapters alone onto the same base."""

import os

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import lora


def _images(count=4, size=16):
    return np.random.default_rng(0).uniform(-1, 1, (count, size, size, 3)).astype("float32")


def _trained_adapters(model, seed=2):
    """Random adapters and head, as training leaves them (B starts at zero: the model would not change)."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(scale=0.1, size=variable.shape).astype("float32"))
    return model


@pytest.fixture
def base(tiny_vit, randomize):
    """A randomised tiny model and a copy of its weights (the base, as a checkpoint would give it)."""
    model = randomize(tiny_vit())
    return model, model.get_weights()


def test_enable_lora_trains_the_adapters_and_the_head_alone_and_starts_from_the_base(base, to_numpy):
    model, _ = base
    images = _images()
    before = to_numpy(model(images))
    total = model.count_params()
    keras_vit.enable_lora(model, rank=4)
    trained = {v.path for v in model.trainable_variables}
    # tiny/4: 2 blocks, D=64; qkv (64->192) and proj (64->64): r*(64+192) + r*(64+64) per block.
    adapters = 2 * 4 * ((64 + 192) + (64 + 64))
    head = 64 * 3 + 3
    assert lora.trainable_parameters(model) == (adapters + head, total + adapters)
    assert {"head/kernel", "head/bias", "block_1/attention/qkv/lora_kernel_a"} <= trained
    assert not any(path.endswith(("qkv/kernel", "qkv/bias", "norm_1/gamma")) for path in trained)
    np.testing.assert_allclose(to_numpy(model(images)), before, atol=1e-6)  # B = 0


def test_targets_choose_the_dense_layers(tiny_vit):
    model = tiny_vit(pooling="map", class_token=False)
    paths = [layer.path for layer in lora.targeted_layers(model, "mlp")]
    assert paths == sorted(
        [f"block_{i}/mlp_dense_{j}" for i in (0, 1) for j in (1, 2)] + [f"map_pooling/mlp_dense_{j}" for j in (1, 2)]
    )
    assert len(lora.targeted_layers(model, lora.TARGETS)) == 2 * 4 + 5
    with pytest.raises(ValueError, match="expected some of"):
        lora.check_targets("query,value")
    with pytest.raises(ValueError, match="positive integer"):
        keras_vit.enable_lora(model, rank=0)
    with pytest.raises(ValueError, match="names no layer"):
        keras_vit.enable_lora(model, rank=2, train=("classifier",))


def test_a_lora_model_saves_merged_and_reloads_as_a_plain_model(base, tmp_path, to_numpy):
    model = _trained_adapters(keras_vit.enable_lora(base[0], rank=2, targets=lora.TARGETS))
    images = _images()
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert not lora.lora_layers(loaded)  # the merged kernels: nothing of LoRA left to export
    np.testing.assert_allclose(to_numpy(loaded(images)), to_numpy(model(images)), atol=1e-5)


def test_adapters_alone_load_onto_the_same_base_and_refuse_another(base, tiny_vit, randomize, tmp_path, to_numpy):
    model, weights = base
    _trained_adapters(keras_vit.enable_lora(model, rank=4))
    path = keras_vit.save_adapters(model, tmp_path / "adapters.safetensors")
    assert os.path.getsize(path) < 0.1 * model.count_params() * 4  # a small file: the adapters and the head
    fresh = tiny_vit()
    fresh.set_weights(weights)
    keras_vit.load_adapters(fresh, path)
    images = _images()
    np.testing.assert_allclose(to_numpy(fresh(images)), to_numpy(model(images)), atol=1e-6)
    assert lora.lora_layers(fresh)[0].lora_rank == 4
    with pytest.raises(ValueError, match="another base"):
        keras_vit.load_adapters(randomize(tiny_vit(), seed=7), path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable adapters file"):
        keras_vit.load_adapters(tiny_vit(), tmp_path / "junk.safetensors")


def test_a_lora_model_fits(base):
    model = keras_vit.enable_lora(base[0], rank=2)
    frozen = model.get_layer("block_0").attention.qkv._kernel.numpy().copy()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(_images(8), np.arange(8) % 3, epochs=2, verbose=0)
    qkv = model.get_layer("block_0").attention.qkv
    np.testing.assert_array_equal(qkv._kernel.numpy(), frozen)
    assert np.abs(qkv.lora_kernel_b.numpy()).max() > 0
