"""benchmarks/families.py: its --quick run end to end (never its timings), as `test_peers.py` imports it."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest


# find_spec, not import: timm imports torchvision, which crashes beside TensorFlow in one process.
@pytest.mark.slow  # ~26 s; .ci/run runs it after the default suite
@pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason="timm is not installed (keras-vision-transformer[bench])"
)
def test_quick_run_times_every_family_on_both_sides_with_equal_parameter_counts(repo, tmp_path):
    """Tiny models of every family, keras_vit and timm (a child process): equal counts, same architecture."""
    result = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "families.py"), "--quick", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "families.json").read_text())
    families = ["deit3", "deit_distilled", "dinov2_registers", "siglip", "clip", "gap_fc_norm", "dinov3", "eva02",
                "pe_core", "aimv2"]  # fmt: skip
    assert [row["family"] for row in report["rows"]] == families and report["size"] == "quick"
    for row in report["rows"]:
        assert row["params"] == row["timm_params"], row["family"]
        assert row["images_per_second"]["keras_vit"] > 0 and row["images_per_second"]["timm"] > 0
    assert "| dinov2_registers | 28 |" in result.stdout
