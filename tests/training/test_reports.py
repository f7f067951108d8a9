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


def test_per_class_precision_recall_f1_agree_with_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    true, predicted = [0, 0, 1, 2, 2, 2, 3], [0, 1, 1, 2, 2, 0, 1]  # class 3 never predicted right
    per_class = reports.per_class_metrics(reports.confusion_matrix(true, predicted, 4), ["a", "b", "c", "d"])
    expected = precision_recall_fscore_support(true, predicted, labels=[0, 1, 2, 3], zero_division=0)
    for i, label in enumerate("abcd"):
        row = per_class[label]
        assert [row["precision"], row["recall"], row["f1"]] == [round(float(e[i]), 4) for e in expected[:3]]
        assert row["support"] == expected[3][i]
