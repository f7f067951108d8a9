"""The docs' numbers for the main job (`keras-vit train`) are the ones a run measured.

`docs/main_job.json` holds what one run of the main job measured (its results and parity
report). The fast test checks that the docs cite exactly those numbers; the slow one runs the main
job again and checks that it still gives them (seed 0 gives the same model on the same machine).
"""

import json
import pathlib
import subprocess
import sys

import pytest

from keras_vit.deploy import parity

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def _measured():
    return json.loads((DOCS / "main_job.json").read_text())


def test_the_docs_cite_the_main_jobs_measured_numbers():
    measured = _measured()
    training = " ".join((DOCS / "training.md").read_text().split())  # the prose wraps anywhere
    assert f"**{measured['test_top1']:.2%} top-1** on the {measured['test_images']} test digits" in training
    # The parity table of docs/deployment.md is the stored report's, row for row.
    table = [line for line in parity.markdown(measured["parity"]).splitlines() if line.startswith("| ")]
    deployment = (DOCS / "deployment.md").read_text()
    missing = [row for row in table if row not in deployment]
    assert not missing, f"docs/deployment.md's parity table differs from docs/main_job.json: {missing}"


@pytest.mark.slow
def test_the_main_job_still_gives_the_documented_numbers(tmp_path):
    measured = _measured()
    output = tmp_path / "digits"
    result = subprocess.run(
        [sys.executable, "-m", "keras_vit.cli", "train", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())
    one_image = 1 / measured["test_images"]
    assert results["test_top1"] == pytest.approx(measured["test_top1"], abs=one_image + 1e-9)
    report = json.loads((output / "export" / "parity_report.json").read_text())
    accuracy = {row["artifact"]: row.get("accuracy") for row in report["artifacts"]}
    for row in measured["parity"]["artifacts"]:
        if row.get("accuracy") is not None:
            assert accuracy[row["artifact"]] == pytest.approx(row["accuracy"], abs=one_image + 1e-9), row["artifact"]
