"""One tiny model with random weights, exported once per session, shared by the export tests."""

import numpy as np
import pytest
from export_helpers import LABELS, IMAGE_SIZE, randomize, raw_images, save_model_dir

import keras_vit
import keras_vit.deploy.export
from keras_vit import cli


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    model = randomize(keras_vit.build_vit("tiny/4", image_size=IMAGE_SIZE, num_classes=len(LABELS)))
    return save_model_dir(tmp_path_factory.mktemp("trained"), model)


@pytest.fixture(scope="session")
def model(model_dir):
    return keras_vit.deploy.export.load_model(str(model_dir))[0]


@pytest.fixture(scope="session")
def exported(model_dir, tmp_path_factory):
    """`(output_dir, report)` of a full export with test labels and calibration images."""

    images = raw_images(24)
    labels = np.random.default_rng(2).integers(0, len(LABELS), 24)
    output = tmp_path_factory.mktemp("export") / "out"
    report = keras_vit.deploy.export.export_model(
        str(model_dir), str(output), test_images=images, test_labels=labels,
        calibration_images=raw_images(48, 32, 32, seed=3), int8_tolerance=1.0,
    )
    return output, report


@pytest.fixture
def cli_main(monkeypatch):
    """`keras-vit` with only this branch's sub-commands (others register theirs elsewhere)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["keras_vit.deploy.export", "keras_vit.deploy.predict"])
    return cli.main
