"""Pictures and tables of a run: training curves and the confusion matrix."""

import csv

import numpy as np


def read_history(path):
    """Reads Keras' CSVLogger file; a repeated epoch (resumed run) keeps its last row."""
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = {k: float(v) for k, v in row.items() if v not in ("", None)}
    epochs = sorted(rows)
    keys = sorted({k for row in rows.values() for k in row})
    return {k: [rows[e].get(k) for e in epochs] for k in keys}


def plot_curves(history, path):
    """Loss and accuracy, train vs validation, one panel each; written as PNG."""
    from matplotlib.figure import Figure  # no pyplot: files only; imported here, as visualize.py does

    figure = Figure(figsize=(10, 4), dpi=100)
    axes = figure.subplots(1, 2)
    epochs = [e + 1 for e in history["epoch"]]
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(epochs, history[metric], marker="o", label="train")
        if f"val_{metric}" in history:
            axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axis.set(xlabel="epoch", ylabel=metric, title=metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)


def predicted_classes(model, ds):
    """`(true, predicted)` class indices over a batched `(images, one-hot labels)` dataset.

    Calls the model directly rather than `predict`: after training under a distribution
    strategy this runs on the chief alone, and `predict` would split batches over replicas
    (or wait for the other workers).
    """
    true, predicted = [], []
    for images, labels in ds:
        true.append(np.argmax(labels, axis=-1))
        predicted.append(np.argmax(model(images, training=False), axis=-1))
    return np.concatenate(true), np.concatenate(predicted)


def confusion_matrix(true, predicted, num_classes):
    """`(num_classes, num_classes)` counts: row = true class, column = predicted class."""
    pairs = np.asarray(true, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_metrics(matrix, labels):
    """`{label: {"precision", "recall", "f1", "support"}}` from a confusion matrix (rows true, columns predicted).

    A class never predicted has precision 0 (as scikit-learn's `zero_division=0`), one never present recall 0.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    hits, predicted, support = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return {
        str(label): {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": int(n)}
        for label, p, r, f, n in zip(labels, precision.tolist(), recall.tolist(), f1.tolist(), support)
    }


def plot_confusion_matrix(true, predicted, labels, path, max_annotated=20):
    """Writes the confusion matrix as PNG, counts written in the cells when there are few classes."""
    matrix = confusion_matrix(true, predicted, len(labels))
    side = min(4 + 0.4 * len(labels), 16)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(side, side), dpi=100)
    axis = figure.subplots()
    axis.imshow(matrix, cmap="Blues")
    if len(labels) <= max_annotated:
        for (row, column), count in np.ndenumerate(matrix):
            colour = "white" if count > matrix.max() / 2 else "black"
            axis.text(column, row, int(count), ha="center", va="center", color=colour, fontsize=8)
    if len(labels) <= 2 * max_annotated:
        ticks = np.arange(len(labels))
        axis.set_xticks(ticks, labels, rotation=90)
        axis.set_yticks(ticks, labels)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    axis.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({matrix.sum()} images, top-1 {accuracy:.2%})")
    figure.tight_layout()
    figure.savefig(path)
    return matrix


def per_class_text(per_class, matrix, max_classes=20):
    """The per-class table and the confusion matrix as text, for the terminal.

    With more than `max_classes` classes the table keeps the `max_classes` lowest F1 (the classes
    to look at) and the matrix is left to `confusion_matrix.png` and `results.json`.
    """
    rows = (
        sorted(per_class.items(), key=lambda item: item[1]["f1"]) if len(per_class) > max_classes else per_class.items()
    )
    rows = list(rows)[:max_classes]
    width = max(5, *(len(label) for label, _ in rows))
    title = "per class on the test split" + (
        f" ({max_classes} lowest F1 of {len(per_class)})" if len(per_class) > max_classes else ""
    )
    lines = [f"{title}:", f"  {'class':<{width}}  precision  recall     f1  images"]
    lines += [
        f"  {label:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:6d}"
        for label, m in rows
    ]
    if len(per_class) <= max_classes:
        labels = list(per_class)
        matrix = np.asarray(matrix)
        cell = max(3, len(str(matrix.max())), *(len(label) for label in labels))
        lines += ["confusion matrix (rows: true class, columns: predicted):"]
        lines += ["  " + " " * width + "".join(f" {label:>{cell}}" for label in labels)]
        lines += [
            f"  {label:<{width}}" + "".join(f" {n:>{cell}}" for n in row) for label, row in zip(labels, matrix.tolist())
        ]
    return "\n".join(lines)
