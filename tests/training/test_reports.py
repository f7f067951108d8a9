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


def test_per_class_text_prints_the_table_and_the_matrix_and_the_worst_classes_past_the_limit():
    matrix = np.array([[50, 2, 0], [1, 40, 3], [0, 0, 30]])
    per_class = reports.per_class_metrics(matrix, ["cat", "dog", "horse"])
    lines = reports.per_class_text(per_class, matrix).splitlines()
    assert lines[2].split() == ["cat", "0.980", "0.962", "0.971", "52"]
    assert lines[5].startswith("confusion matrix") and lines[9].split() == ["horse", "0", "0", "30"]
    short = reports.per_class_text(per_class, matrix, max_classes=2).splitlines()
    assert short[0] == "per class on the test split (2 lowest F1 of 3):" and len(short) == 4
    assert [line.split()[0] for line in short[2:]] == ["dog", "horse"]  # F1 0.930, 0.952: the ones to look at
