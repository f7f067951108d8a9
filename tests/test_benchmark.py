"""The benchmark's arithmetic and outputs (never its timings)."""

import json

import pytest

from keras_vit import cli
from keras_vit.benchmark import Case, flops_per_image, plot, summarize


@pytest.mark.parametrize("variant, gmacs", [("B/16", 17.58), ("S/16", 4.61), ("Ti/16", 1.26)])
def test_flops_match_the_published_multiply_adds(variant, gmacs):
    # timm's model cards: ViT-B/16 17.6, S/16 4.6, Ti/16 1.3 GMACs at 224.
    assert flops_per_image(variant) / 2e9 == pytest.approx(gmacs, rel=0.01)


def test_summary_ratios_and_roofline_fraction(tmp_path):
    case = Case("Ti/16", "train", 32)
    roofline_seconds = 2 * 4096**3 / 100e9  # a 100 GFLOP/s machine
    row = summarize(case, {"roofline": [roofline_seconds] * 3, "a": [1.0, 1.0, 9.0], "b": [2.0] * 3})
    a, b = row["results"]["a"], row["results"]["b"]
    assert row["roofline_gflops"] == pytest.approx(100)
    assert a["images_per_second"] == pytest.approx(32) and a["ratio_vs"]["b"] == pytest.approx(2)
    assert a["roofline_fraction"] == pytest.approx(3 * 32 * flops_per_image("Ti/16") / 1e9 / 100)
    plot([row], tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 0
    json.dumps(row)


def test_benchmark_is_a_command():
    args = cli.build_parser().parse_args(["benchmark", "--variants", "Ti/16", "--train-variants", "--skip", "timm"])
    assert args.variants == ["Ti/16"] and args.train_variants == [] and args.skip == ["timm"]
