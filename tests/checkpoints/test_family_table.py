"""The family table (`keras_vit/checkpoints/families.py`) against timm's own factories and files.

Every ViT-shaped timm architecture is either built, with the head count, GELU flavour and LayerNorm
epsilon its factory function sets (read from timm's source, `torch_reference.py factories`), or
refused by name in one line; the architectures whose name alone decides what no tensor shows load
from their hub folders without `num_heads=` and equal timm; damaged or contradictory folders are
refused naming the tensor or the setting.
"""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from keras_vit import CheckpointError, build_from_checkpoint
from keras_vit.checkpoints import families
from keras_vit.checkpoints.canonical import model_variables

RELATIVE_TOLERANCE = 2e-5  # of the largest output: float32 in two frameworks
_ACTIVATIONS = {"gelu_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}  # timm's act_layer -> ours; else exact GELU


@pytest.fixture(scope="module")
def factories(run_torch, tmp_path_factory):
    """`{architecture: {"num_heads", "act_layer", "eps"}}` read from timm's factory functions."""
    out = tmp_path_factory.mktemp("factories")
    run_torch("factories", out)
    return json.loads((out / "factories.json").read_text())


@pytest.fixture(scope="module")
def folder(reference):
    return reference / "families"


def test_every_timm_vit_is_built_as_its_factory_says_or_refused_in_one_line(factories):
    built = 0
    for name, factory in factories.items():
        try:
            family = families.timm_family(name)
        except CheckpointError as e:
            assert "\n" not in str(e) and name in str(e)
            continue
        built += 1
        options, _ = family.timm_facts(name)
        if factory["num_heads"] is not None:
            assert families.timm_num_heads(name) == factory["num_heads"], name
        assert options.get("activation", "gelu") == _ACTIVATIONS.get(factory["act_layer"], "gelu"), name
        assert options.get("layer_norm_epsilon", 1e-6) == (factory["eps"] or 1e-6), name
    assert built > 100  # ViT, DeiT, DeiT III, DINOv2, SigLIP, CLIP in their sizes


@pytest.mark.parametrize(
    "name, reason",
    [
        ("timm_rope_mixed", "'vit_small_patch16_rope_mixed_224': RoPE-Mixed learns its rotary frequencies in every"),
        ("timm_relpos", "'vit_relpos_medium_patch16_224': a relative position bias in every block, not built"),
    ],
)
def test_a_timm_model_keras_vit_does_not_build_is_refused_by_name_in_one_line(folder, name, reason):
    with pytest.raises(CheckpointError) as error:
        build_from_checkpoint(folder / name)
    assert reason in str(error.value) and "nothing was built" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("timm_pe_core", "is a Perception Encoder tower (a MAP head after a pre-norm), whose rotary position"),
        ("timm_dinov3", "no absolute position embedding, and neither a config.json naming its family"),
        ("timm_rope", "no absolute position embedding, and neither a config.json naming its family"),
    ],
)
def test_their_weights_file_alone_is_refused_too_never_loaded_with_a_guess(folder, name, reason):
    with pytest.raises(CheckpointError) as error:
        build_from_checkpoint(folder / name / "model.safetensors")
    assert reason in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_architecture_is_refused_naming_the_known_families(folder, tmp_path):
    shutil.copytree(folder / "timm_deit3", tmp_path / "convnext")
    config = json.loads((tmp_path / "convnext" / "config.json").read_text())
    (tmp_path / "convnext" / "config.json").write_text(json.dumps({**config, "architecture": "convnext_tiny"}))
    with pytest.raises(
        CheckpointError, match=r"'convnext_tiny' is not a ViT architecture keras_vit knows; known: ViT, "
    ):
        build_from_checkpoint(tmp_path / "convnext")


def test_a_transformers_model_type_keras_vit_does_not_know_is_refused_naming_the_known_ones(folder, tmp_path):
    # Every transformers model_type the table names is built now (DINOv3 and SigLIP 2 NaFlex were the last
    # refused): one no record claims is refused as unknown, in one line, listing those it builds.
    shutil.copytree(folder / "hf_dinov2", tmp_path / "convnext")
    config = json.loads((tmp_path / "convnext" / "config.json").read_text())
    (tmp_path / "convnext" / "config.json").write_text(json.dumps({**config, "model_type": "convnext"}))
    with pytest.raises(CheckpointError) as error:
        build_from_checkpoint(tmp_path / "convnext")
    message = str(error.value)
    assert "model_type 'convnext' is not a ViT keras_vit knows; known: " in message and "dinov3_vit" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "name, fields",
    [
        ("timm_so400m_siglip", {"num_heads": 16, "activation": "gelu_tanh", "pooling": "map"}),
        ("timm_medium_reg4", {"num_heads": 8, "num_register_tokens": 4, "pooling": "gap"}),
    ],
)
def test_the_architecture_name_decides_heads_and_gelu_and_the_model_equals_timm(folder, name, fields):
    model, report = build_from_checkpoint(folder / name)  # no num_heads=: the name tells
    assert len(report.loaded) == len(model_variables(model)) and not report.skipped
    for field, value in fields.items():
        assert getattr(report.config, field) == value, field
    images = np.load(folder / "images_32.npy")
    expected = np.load(folder / f"{name}.out.npy")
    difference = np.abs(model.predict(images, verbose=0) - expected).max() / max(1.0, np.abs(expected).max())
    assert difference < RELATIVE_TOLERANCE


def test_a_wrong_shaped_tensor_is_named_with_both_shapes(folder, tmp_path):
    shutil.copytree(folder / "timm_deit3", tmp_path / "damaged")
    weights = tmp_path / "damaged" / "model.safetensors"
    state = load_file(weights)
    state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"][:190]
    save_file(state, weights)
    with pytest.raises(CheckpointError) as error:
        build_from_checkpoint(tmp_path / "damaged")
    assert "blocks.0.attn.qkv.weight has shape (190, 64), but a width-64 ViT's is (192, 64)" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name, edit, message",
    [
        ("timm_deit3", {"model_args": {"embed_dim": 128}}, "config.json has embed_dim=128, its tensors hidden_dim=64"),
        ("hf_dinov2", {"num_hidden_layers": 12}, "config.json has num_hidden_layers=12, its tensors num_layers=2"),
    ],
)
def test_a_config_json_that_contradicts_its_tensors_is_refused_naming_both(folder, tmp_path, name, edit, message):
    shutil.copytree(folder / name, tmp_path / name)
    config = json.loads((tmp_path / name / "config.json").read_text())
    (tmp_path / name / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(CheckpointError, match="nothing was built") as error:
        build_from_checkpoint(tmp_path / name)
    assert message in str(error.value)


def test_every_family_record_is_one_frozen_row_named_once():
    names = [family.name for family in families.FAMILIES]
    assert len(names) == len(set(names))
    with pytest.raises(AttributeError):
        families.FAMILIES[0].name = "other"  # frozen
    with pytest.raises(TypeError):
        families.family("CLIP").options["layer_norm_epsilon"] = 1e-6  # all the way down
    built = [family for family in families.FAMILIES if not family.not_built]
    assert [f.name for f in built] == [
        "ViT",
        "DeiT",
        "DeiT III",
        "DINOv2",
        "SigLIP",
        "CLIP",
        "EVA-02",
        "Perception Encoder",
        "SigLIP 2 NaFlex",
        "DINOv3",
        "AIMv2",
        "RoPE ViT",
        "timm's rotary ViTs",
        "ViTs without query/key/value bias",
        "DINOv2 giant",
    ]
    assert all(row["variant"] and row["tag"] for family in built for row in family.checkpoints)


def test_the_rotary_families_rotate_as_their_timm_factories_say(factories):
    checked = 0
    for name, factory in factories.items():
        if "rotary" not in factory or not name.startswith(("eva02_", "vit_pe_")):
            continue
        try:
            options, _ = families.timm_family(name).timm_facts(name)
        except CheckpointError:
            continue  # refused by name (the first test)
        rows, cols, offset, indexing = factory["rotary"]
        rotary = options["rotary"]
        assert rotary.reference_grid == (rows, cols) and rotary.grid_offset == offset, name
        assert rotary.grid_indexing == indexing and rotary.coordinates == "index" and not rotary.rotate_half, name
        checked += 1
    assert checked == 23  # EVA-02 Ti/S/B/L at two sizes each, its three CLIP towers; PE's 5 core, 2 lang, 5 spatial


def test_every_timm_dinov3_factory_is_claimed_with_its_heads():
    """timm's eva.py DINOv3 factories (not in `factories`, which reads vision_transformer.py): each is claimed
    by the DINOv3 record, with the heads its factory sets (H+ has 20, 7B 32: not their size words'). Read as
    text, so that no PyTorch loads here."""
    import importlib.util
    import pathlib
    import re

    spec = importlib.util.find_spec("timm")
    if spec is None:
        pytest.skip("needs timm")
    source = (pathlib.Path(spec.origin).parent / "models" / "eva.py").read_text()
    found = re.findall(r"def (vit_\w+_dinov3\w*)\(.*?num_heads=(\d+)", source, flags=re.S)
    assert len(found) >= 12
    for name, heads in found:
        assert families.timm_family(name).name == "DINOv3", name
        assert families.timm_num_heads(name) == int(heads), name
    options, tensors = families.family("DINOv3").timm_facts("vit_7b_patch16_dinov3")
    assert tensors["num_register_tokens"] == 4 and options["layer_norm_epsilon"] == 1e-5
