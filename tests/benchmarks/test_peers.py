"""benchmarks/peers.py: its arithmetic, outputs and flags (never its timings).

`benchmarks/` is no package and is not installed: its scripts import one another by name, since
`python benchmarks/X.py` puts that folder first on `sys.path`. The `peers` fixture imports
`peers.py` the same way, with `benchmarks/` on `sys.path` only while it imports (so no other test
can pick up a script by accident), and forgets the module afterwards.
"""

import importlib
import json
import sys

import numpy as np
import pytest


@pytest.fixture(scope="module")
def peers(repo):
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(repo / "benchmarks"))
        module = importlib.import_module("peers")
    yield module
    sys.modules.pop("peers", None)


@pytest.mark.parametrize("variant, gmacs", [("B/16", 17.58), ("S/16", 4.61), ("Ti/16", 1.26)])
def test_flops_match_the_published_multiply_adds(peers, variant, gmacs):
    # timm's model cards: ViT-B/16 17.6, S/16 4.6, Ti/16 1.3 GMACs at 224.
    assert peers.flops_per_image(variant) / 2e9 == pytest.approx(gmacs, rel=0.01)


def test_summary_ratios_and_roofline_fraction(peers, tmp_path):
    case = peers.Case("Ti/16", "train", 32)
    roofline_seconds = 2 * 4096**3 / 100e9  # a 100 GFLOP/s machine
    row = peers.summarize(case, {"roofline": [roofline_seconds] * 3, "a": [1.0, 1.0, 9.0], "b": [2.0] * 3})
    a = row["results"]["a"]
    assert row["roofline_gflops"] == pytest.approx(100)
    assert a["images_per_second"] == pytest.approx(32) and a["ratio_vs"]["b"] == pytest.approx(2)
    assert a["roofline_fraction"] == pytest.approx(3 * 32 * peers.flops_per_image("Ti/16") / 1e9 / 100)
    peers.plot([row], tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 0
    json.dumps(row)


def test_peers_takes_its_flags_as_a_script(peers):
    args = peers.build_parser().parse_args(["--variants", "Ti/16", "--train-variants", "--skip", "timm"])
    assert args.variants == ["Ti/16"] and args.train_variants == [] and args.skip == ["timm"]


def _multiply_adds(graph):
    """Multiply-adds of every MatMul / BatchMatMulV2 in a traced graph, from its static shapes."""
    total = 0
    for op in graph.get_operations():
        if op.type not in ("MatMul", "BatchMatMulV2"):
            continue
        a = op.inputs[0].shape.as_list()
        out = op.outputs[0].shape.as_list()
        transposed = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
        inner = a[-2] if transposed else a[-1]
        total += int(np.prod(out)) * inner
    return total


@pytest.mark.parametrize("task", ["forward", "train"])
def test_matmul_ceiling_does_exactly_the_models_multiply_adds(peers, task):
    # The ceiling is only meaningful if it runs the same matmuls as the model, no more, no fewer.
    case = peers.Case("Ti/16", task, 2)
    step = peers.matmuls_only(case)
    macs = _multiply_adds(step.get_concrete_function().graph)
    expected = case.flops / 2
    if task == "train":  # "3 x forward" counts the pixels' gradient, which neither the chain nor a model computes
        expected -= case.batch * 197 * 16 * 16 * 3 * 192
    # Patches are projected for T = N + 1 rows (the class token's row is free in the model): +0.1%.
    assert macs == pytest.approx(expected, rel=2e-3)
    assert np.isfinite(step().numpy())


def test_the_ceiling_is_not_a_peer(peers):
    case = peers.Case("Ti/16", "forward", 16)
    row = peers.summarize(case, {"roofline": [1.0] * 3, peers.CEILING: [1.0] * 3, "a": [2.0] * 3, "b": [4.0] * 3})
    a, ceiling = row["results"]["a"], row["results"][peers.CEILING]
    assert a["ceiling_fraction"] == pytest.approx(0.5) and set(a["ratio_vs"]) == {"b"}
    assert "ratio_vs" not in ceiling and "ceiling_fraction" not in ceiling
