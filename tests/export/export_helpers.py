"""Helpers shared by the export tests: a tiny model with random weights and raw images."""

import os

import numpy as np

from keras_vit.preprocessing import preprocessing_model
from keras_vit.run_folder import write_metadata

# The repository root, where the export/ deployment kit lives.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABELS = ["airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SIZE = (32, 32)


def randomize(model, seed=1):
    """Replaces zero initialisations (class token, head): a zero head would hide every bug."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.2, size=weight.shape).astype("float32"))
    return model


def raw_images(n, height=40, width=48, seed=0):
    """Random uint8 pixels, deliberately non-square and not at the model's size."""
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def keras_logits(model, images):
    return np.asarray(model(preprocessing_model(IMAGE_SIZE, "vit")(images)))


def save_model_dir(directory, model):
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    write_metadata(directory, image_size=IMAGE_SIZE, scaling="vit", labels=LABELS, variant="tiny/4")
    return directory
