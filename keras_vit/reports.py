"""Pictures and tables of a run: training curves (and, later, confusion matrices)."""

import csv

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402


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
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
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
    plt.close(figure)
