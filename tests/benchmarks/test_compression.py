"""benchmarks/quantization.py and benchmarks/lora.py: their --quick runs end to end (never their timings)."""

import json
import os
import subprocess
import sys

import pytest


def _run(repo, script, tmp_path, *extra):
    output = tmp_path / "rows.json"
    result = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / script), "--quick", "--json", str(output), *extra],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text()), result.stdout


@pytest.mark.slow  # ~1 min on 2 cores
def test_compression_quick_times_every_mode_against_float32_of_the_same_run(repo, tmp_path):
    report, stdout = _run(repo, "quantization.py", tmp_path, "--batch-sizes", "2")
    modes = ["float32", "bfloat16", "int8", "int4", "float8"]
    assert [(r["call"], r["mode"]) for r in report["rows"]] == [(c, m) for c in ("compiled", "eager") for m in modes]
    for row in report["rows"]:
        assert row["ms_per_batch"] > 0 and row["batch"] == 2
        assert row["speed_vs_float32"] == 1.0 if row["mode"] == "float32" else row["speed_vs_float32"] > 0
    assert "flags:" in stdout and isinstance(report["flags"], list)


@pytest.mark.slow  # ~1-3 min on 2 cores: five child processes
def test_lora_quick_counts_what_each_way_trains(repo, tmp_path):
    report, _ = _run(repo, "lora.py", tmp_path)
    rows = {row["way"]: row for row in report["rows"]}
    assert list(rows) == ["full", "lora", "lora_mlp", "probe", "full_bfloat16"]
    assert rows["full"]["trainable_parameters"] == rows["full"]["total_parameters"] == 75_082  # tiny/4, 10 classes
    # tiny/4: 2 blocks, D=64, rank 4; qkv (64->192) and proj (64->64), the MLP (64->128->64) too; a 650-weight head.
    assert rows["lora"]["trainable_parameters"] == 650 + 2 * 4 * ((64 + 192) + (64 + 64))
    assert rows["lora_mlp"]["trainable_parameters"] == rows["lora"]["trainable_parameters"] + 2 * 4 * 2 * (64 + 128)
    assert rows["probe"]["trainable_parameters"] == 650
    assert rows["full_bfloat16"]["trainable_parameters"] == 75_082  # the policy changes compute, not weights
    assert all(row["step_ms"] > 0 and row["peak_rss_mb"] > 0 for row in rows.values())


def test_no_benchmark_script_shadows_an_installed_module(repo):
    """A script's folder is first on `sys.path`: `compression.py` once hid the `compression` package JAX imports."""
    import importlib.util

    stems = sorted(path.stem for path in (repo / "benchmarks").glob("*.py"))
    folder = str(repo / "benchmarks")
    specs = {stem: importlib.util.find_spec(stem) for stem in stems}
    shadowing = [stem for stem, spec in specs.items() if spec and not str(spec.origin).startswith(folder)]
    assert shadowing == [], f"benchmarks/{shadowing[0]}.py hides an installed module of that name: rename it"
