"""The parity report: does each exported artifact still compute the Keras model?

One row per artifact: its size, the largest absolute logit difference against
the Keras model on the test images, top-1 agreement with Keras, accuracy (when
labels are given) and latency per image at batch 1 on this machine; and under
`"sha256"` the SHA-256 of every file written (each file artifact's in its row too).
"""

import json
import os

import numpy as np

COLUMNS = (
    ("artifact", "artifact", "{}"),
    ("size_mb", "size (MB)", "{:.2f}"),
    ("max_abs_logit_diff", "max abs logit diff", "{:.2e}"),
    ("top1_agreement", "top-1 agreement", "{:.2%}"),
    ("accuracy", "accuracy", "{:.2%}"),
    ("latency_ms", "latency (ms/img, batch 1)", "{:.2f}"),
    ("status", "status", "{}"),
)


def size_mb(path):
    """Megabytes of a file, or of every file below a folder."""
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files) / 1e6


def artifact_row(name, path, logits, reference_logits, labels=None, latency_ms=None, root=None):
    """Measures one artifact's `logits` `(N, C)` against the Keras model's; `path` is shown relative to `root`."""
    logits = np.asarray(logits, dtype=np.float64)
    reference_logits = np.asarray(reference_logits, dtype=np.float64)
    predictions = logits.argmax(-1)
    return {
        "artifact": name,
        "path": os.path.relpath(path, root) if root else path,
        "size_mb": size_mb(path),
        "max_abs_logit_diff": float(np.abs(logits - reference_logits).max()),
        "top1_agreement": float(np.mean(predictions == reference_logits.argmax(-1))),
        "accuracy": None if labels is None else float(np.mean(predictions == np.asarray(labels))),
        "latency_ms": latency_ms,
        "status": "kept",
    }


def int8_verdict(int8_row, float32_row, tolerance):
    """Keeps full int8 only when its accuracy (or, without labels, its top-1 agreement) is within
    `tolerance` of float32's; returns `(keep, reason)`."""
    metric = "accuracy" if float32_row["accuracy"] is not None else "top1_agreement"
    drop = float32_row[metric] - int8_row[metric]
    if drop > tolerance:
        return (
            False,
            f"{metric} {int8_row[metric]:.2%} is {drop:.2%} below float32's, more than int8_tolerance={tolerance}",
        )
    return True, f"{metric} within int8_tolerance={tolerance} of float32"


def markdown(report):
    """The report's rows as a Markdown table, then any notes."""
    lines = [
        f"Parity on {report['num_test_images']} {report['test_images']} images "
        f"(reference: the Keras model {report['model']}).",
        "",
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in report["artifacts"]:
        cells = ["-" if row.get(key) is None else form.format(row[key]) for key, _, form in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- {row['artifact']}: {row['reason']}" for row in report["artifacts"] if row.get("reason")]
    if report.get("sha256"):
        lines += [
            "",
            "Every file's SHA-256 is in SHA256SUMS (and parity_report.json); `sha256sum -c SHA256SUMS` checks a copy.",
        ]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report, directory):
    """Writes `parity_report.json` and `parity_report.md` into `directory`."""
    with open(os.path.join(directory, "parity_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(directory, "parity_report.md"), "w") as f:
        f.write(markdown(report))
