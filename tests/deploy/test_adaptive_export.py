"""Adaptive tokens (A-ViT) leave the model exportable: SavedModel and LiteRT of the masked graph, the gathered path."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vit.deploy import litert
from keras_vit.deploy.saved_model import gathered_archive

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def adaptive(tiny_vit, randomize):
    """tiny/4 at 16x16, 4 blocks, every weight random, a gate that halts tokens after different blocks."""
    return randomize(
        tiny_vit(num_layers=4, adaptive_tokens=True, halting_gate_scale=5.0, halting_gate_center=0.0), scale=0.3
    )


def test_the_masked_graph_exports_to_saved_model_and_litert(adaptive, tmp_path):
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    expected = np.asarray(adaptive(images))
    adaptive.export(str(tmp_path / "saved_model"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))  # kept: its functions need its variables alive
    np.testing.assert_allclose(loaded.serve(images), expected, atol=1e-5)
    path = litert.convert(adaptive, tmp_path / "adaptive.tflite", "float32")  # builtin operators only
    np.testing.assert_allclose(litert.LiteRTModel(path)(images), expected, atol=1e-4)


def test_the_gathered_path_exports_to_saved_model(adaptive, tmp_path):
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    gathered_archive(adaptive).write_out(str(tmp_path / "gathered"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "gathered"))
    np.testing.assert_allclose(loaded.serve(images).numpy(), adaptive(images), atol=1e-5)  # any batch
    np.testing.assert_allclose(loaded.serve(images[:1]).numpy(), adaptive(images[:1]), atol=1e-5)
