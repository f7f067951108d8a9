"""The built-in dataset: scikit-learn's 1,797 real handwritten digits as a TFDS dataset.

The images ship inside scikit-learn's wheel (UCI "Optical Recognition of
Handwritten Digits", 8x8, 17 grey levels), so this needs no network. Served
through our own TFDS builder, it loads like every other dataset:
`tfds.load("digits")` once `keras_vit.training.digits` is imported.

Splits are stratified and fixed (seed 0): train 1,257, validation 180, test 360.
"""

import numpy as np
import tensorflow_datasets as tfds

SPLIT_SIZES = {"train": 1257, "validation": 180, "test": 360}


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 handwritten digits, as 8x8x1 uint8 images in 0..255."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified train/validation/test split of sklearn.datasets.load_digits."}

    def _info(self):
        return self.dataset_info_from_configs(
            description="1,797 handwritten digits (8x8, grey levels 0..16 scaled to 0..255) "
            "from scikit-learn's bundled copy of the UCI dataset.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=[str(i) for i in range(10)]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
            citation="Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(split) for split in SPLIT_SIZES}

    def _generate_examples(self, split):
        images, labels = _split(split)
        for i, (image, label) in enumerate(zip(images, labels)):
            yield f"{split}_{i}", {"image": image, "label": int(label)}


def _split(split):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    index = np.arange(len(images))
    rest, test = train_test_split(index, test_size=SPLIT_SIZES["test"], stratify=digits.target, random_state=0)
    train, validation = train_test_split(
        rest, test_size=SPLIT_SIZES["validation"], stratify=digits.target[rest], random_state=0
    )
    chosen = {"train": train, "validation": validation, "test": test}[split]
    return images[chosen], digits.target[chosen]
