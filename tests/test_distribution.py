"""`keras_vit.get_layout_map` shards a ViT over JAX devices and the sharded model computes the same.

JAX in a fresh process with 8 virtual CPU devices (`--xla_force_host_platform_device_count`, set
before JAX starts): on a 1x4 and a 2x4 (batch x model) mesh the big kernels are split, the logits
equal the unsharded model's, a training step runs, and the model saves and reloads whole.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

# On a busy 2-core machine 8 virtual devices' collectives can wait longer than XLA's default 40 s.
XLA_FLAGS = "--xla_force_host_platform_device_count=8 --xla_cpu_collective_call_terminate_timeout_seconds=900"

SCRIPT = r"""
import math, sys

import keras
import numpy as np

import keras_vit
from keras_vit.config import ViTConfig
from keras_vit.distribution import check_layout, get_layout_map

folder = sys.argv[1]
devices = keras.distribution.list_devices()
assert len(devices) == 8, devices
config = ViTConfig.from_variant("tiny/4", image_size=16, num_classes=10)
reference = keras_vit.build_vit(config)
rng = np.random.default_rng(0)
for variable in reference.variables:  # no zero head: the logits must depend on every weight
    variable.assign(rng.normal(0, 0.05, variable.shape).astype("float32"))
x = rng.normal(size=(8, 16, 16, 3)).astype("float32")
y = keras.utils.to_categorical(np.arange(8) % 10, 10)
expected = keras.ops.convert_to_numpy(reference(x))
sizes = {}
for shape in [(1, 4), (2, 4)]:
    mesh = keras.distribution.DeviceMesh(shape, ("batch", "model"), devices[: math.prod(shape)])
    layout_map = get_layout_map(mesh, config=config)
    distribution = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    with distribution.scope():
        model = keras_vit.build_vit(config)
        model.set_weights(reference.get_weights())
        assert check_layout(model, min_size=4096) >= 8  # the blocks' four kernels, twice
        qkv = model.get_layer("block_0").attention.qkv.kernel.value
        assert not qkv.sharding.is_fully_replicated, qkv.sharding
        per_device = qkv.addressable_shards[0].data.shape
        assert per_device == (64 // shape[0], 192 // 4), per_device
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, atol=2e-5)
        model.compile(keras.optimizers.AdamW(1e-3), keras.losses.CategoricalCrossentropy(from_logits=True))
        loss = model.train_on_batch(x, y)
        assert np.isfinite(loss), loss
        trained = keras.ops.convert_to_numpy(model(x))
        # Elements one device holds: weights, and AdamW's two moments (they take the weights' layout).
        state = [v for v in model.optimizer.variables if v.path.endswith(("_momentum", "_velocity"))]
        sizes[shape] = [sum(v.value.addressable_shards[0].data.size for v in vs) for vs in (model.trainable_variables, state)]
    model.save(f"{folder}/sharded_{shape[0]}x{shape[1]}.keras")
    loaded = keras.saving.load_model(f"{folder}/sharded_{shape[0]}x{shape[1]}.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), trained, atol=2e-5)

# A renamed layer matches no role: check_layout says so instead of leaving it whole in silence.
mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
renamed = keras_vit.build_vit(config)
renamed.get_layer("block_1").mlp_dense_1.kernel._path = "block_1/fc1/kernel"
try:
    check_layout(renamed, get_layout_map(mesh), min_size=4096)
except ValueError as error:
    assert "block_1/fc1/kernel" in str(error), error
else:
    raise AssertionError("a kernel matched by no role passed check_layout")
total = sum(math.prod(v.shape) for v in reference.variables)
print("ok", total, *sizes[(1, 4)], *sizes[(2, 4)])
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_the_layout_map_shards_a_vit_and_it_computes_the_same(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": XLA_FLAGS}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-3000:]
    total, weights_4, moments_4, weights_8, moments_8 = map(int, result.stdout.split()[1:6])
    # The blocks' kernels are most of the model: about a quarter of them per device on 4, an eighth on
    # 8 (the replicated LayerNorms, biases and tokens stay whole); AdamW's two moments follow the weights.
    assert weights_8 < weights_4 < 0.5 * total, (total, weights_4, weights_8)
    assert moments_4 == 2 * weights_4 and moments_8 == 2 * weights_8, (weights_4, moments_4, weights_8, moments_8)
    print(f"per device of {total} elements: 1x4 {weights_4} + {moments_4}, 2x4 {weights_8} + {moments_8}")
