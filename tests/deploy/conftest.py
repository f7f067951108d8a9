"""What the deploy tests share: one tiny trained-model run folder, exported once per session.

The model is `tiny/4` at 32x32 with ten labels and every weight random (a zero head would hide
every bug); `raw_images` are uint8 pixels at other sizes than the model's, as users pass them.
"""

import numpy as np
import pytest

import keras_vit.deploy.export
from keras_vit import cli, run_folder
from keras_vit.preprocessing import preprocessing_model

LABELS = ["airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SIZE = (32, 32)


@pytest.fixture(scope="session")
def labels():
    """The run folder's ten labels (a fresh list: a test may change its copy)."""
    return list(LABELS)


@pytest.fixture(scope="session")
def image_size():
    """The model's input size, `(32, 32)`."""
    return IMAGE_SIZE


@pytest.fixture(scope="session")
def raw_images():
    """`raw_images(n, height=40, width=48, seed=0)`: random uint8 pixels, `(n, height, width, 3)`.

    Non-square and not at the model's size by default, so every reader and signature must resize.
    """

    def raw_images(n, height=40, width=48, seed=0):
        return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)

    return raw_images


@pytest.fixture(scope="session")
def keras_logits():
    """`keras_logits(model, images)`: the Keras model's logits on raw uint8 images, preprocessed as exported."""

    def keras_logits(model, images):
        return np.asarray(model(preprocessing_model(IMAGE_SIZE, "vit")(images)))

    return keras_logits


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_vit, randomize, write_run_folder):
    """The run folder of a tiny model with random weights, as `keras-vit train` leaves it."""
    model = randomize(tiny_vit(image_size=IMAGE_SIZE, num_classes=len(LABELS)))
    return write_run_folder(tmp_path_factory.mktemp("trained"), model, LABELS, variant="tiny/4")


@pytest.fixture(scope="session")
def model(model_dir):
    return run_folder.load_model(str(model_dir))[0]


@pytest.fixture(scope="session")
def exported(model_dir, tmp_path_factory, raw_images):
    """`(output_dir, report)` of a full export with test labels and calibration images."""

    images = raw_images(24)
    labels = np.random.default_rng(2).integers(0, len(LABELS), 24)
    output = tmp_path_factory.mktemp("export") / "out"
    report = keras_vit.deploy.export.export_model(
        str(model_dir),
        str(output),
        test_images=images,
        test_labels=labels,
        calibration_images=raw_images(48, 32, 32, seed=3),
        int8_tolerance=1.0,
    )
    return output, report


@pytest.fixture
def cli_main():
    """`keras-vit` in this process: `cli_main([command, *args])` returns the exit status."""
    return cli.main
