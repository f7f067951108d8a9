"""The core and the checkpoint code run on every Keras backend, without TensorFlow.

Each backend gets a fresh process (Keras picks its backend once, at import):
`import keras_vit` must not import TensorFlow, and a tiny model must build,
fit on NumPy arrays (through the hand-written LayerNorm and GELU gradients),
save and reload in safe mode, write and load a checkpoint, and take token
merging and the attention view. CI also runs the core and checkpoint test
files themselves under `KERAS_BACKEND=torch` (`.ci/run`).
"""

import importlib.util
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import sys

import keras
import numpy as np

import keras_vit
from keras_vit.training.optimizers import make_optimizer

assert "tensorflow" not in sys.modules, "import keras_vit imported TensorFlow"
assert keras.backend.backend() == sys.argv[1]
folder = sys.argv[2]
# No keras.utils.set_random_seed: it seeds TensorFlow too, importing it where installed.
rng = np.random.default_rng(0)
x = rng.normal(size=(32, 16, 16, 3)).astype("float32")
y = np.arange(32) % 3

model = keras_vit.build_vit("tiny/4", image_size=16, num_classes=3, dropout_rate=0.1, drop_path_rate=0.1)
model.compile(
    make_optimizer("adamw", learning_rate=3e-3, total_steps=60, warmup_steps=5),
    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
losses = model.fit(x, y, epochs=15, batch_size=8, verbose=0).history["loss"]
assert losses[-1] < 0.7 * losses[0], losses
logits = keras.ops.convert_to_numpy(model(x))

keras_vit.save_npz(model, f"{folder}/model.npz")
rebuilt, report = keras_vit.build_from_checkpoint(f"{folder}/model.npz")
np.testing.assert_allclose(keras.ops.convert_to_numpy(rebuilt(x)), logits, atol=1e-5)
assert report.variant == "tiny/4"

np.testing.assert_allclose(keras.ops.convert_to_numpy(keras_vit.apply_token_merging(model, r=0)(x)), logits, atol=1e-5)
assert keras_vit.apply_token_merging(model, r=4)(x).shape == (32, 3)
assert len(keras_vit.attention_model(model)(x)["attention"]) == 2

# The 2025-26 options (issue 20): rotary at two sizes, SwiGLU, RMSNorm, qk-norm, the bias flags.
from keras_vit.config import Rotary

rotary = keras_vit.build_vit(
    "tiny/4", image_size=16, num_classes=3, rotary=Rotary(), position_embedding=False, dynamic_image_size=True,
    num_register_tokens=1, mlp="swiglu", norm="rmsnorm", qk_norm=True, key_bias=False, attention_norm=True,
    mlp_norm=True,
)  # fmt: skip
rotary.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rotary.fit(x, y, epochs=1, batch_size=8, verbose=0)
assert rotary(x[:, :, :8]).shape == (32, 3) and np.all(np.isfinite(keras.ops.convert_to_numpy(rotary(x))))
assert len(keras_vit.attention_model(rotary)(x[:, :8])["attention"]) == 2
assert "tensorflow" not in sys.modules, "the core imported TensorFlow on the way"

# Last: Keras' own serialisation imports TensorFlow when it is installed (`serialization_lib` checks
# for `tf.TensorShape`), so this part runs without it only where it is absent, as on the GPU machine.
model.save(f"{folder}/model.keras")
loaded = keras.saving.load_model(f"{folder}/model.keras", safe_mode=True)
np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), logits, atol=1e-5)
print("ok", losses[0], losses[-1])
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_the_core_runs_without_tensorflow(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, backend, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-3000:]
