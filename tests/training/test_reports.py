"""The run's figures: the confusion matrix, counted and drawn."""

import numpy as np
from PIL import Image

from keras_vit.training import reports


def test_confusion_matrix_counts_and_png(tmp_path, not_blank):
    true, predicted = [0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0]
    expected = [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    np.testing.assert_array_equal(reports.confusion_matrix(true, predicted, 3), expected)
    matrix = reports.plot_confusion_matrix(true, predicted, ["a", "b", "c"], tmp_path / "cm.png")
    np.testing.assert_array_equal(matrix, expected)
    with Image.open(tmp_path / "cm.png") as image:
        assert image.size == (520, 520)
    assert not_blank(tmp_path / "cm.png")
