"""The registry of published checkpoints: consistent rows; fetched once, checked, never half-kept.

Nothing downloads: a tiny model is "published" at a `file://` URL.
"""

import hashlib
import json
import pathlib

import numpy as np
import pytest

import keras_vit
from keras_vit import build_from_checkpoint, build_vit, checkpoints, preprocessing, save_npz


@pytest.fixture
def published(tmp_path, monkeypatch, tiny, randomize):
    """A registry row for a tiny model, "published" at a file:// URL, cached under tmp_path."""
    source = randomize(tiny())
    path = save_npz(source, tmp_path / "published.npz")
    digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    row = checkpoints.Checkpoint("tiny/8", "test_in1k", pathlib.Path(path).as_uri(), 32, 5, "test", sha256=digest)
    monkeypatch.setitem(checkpoints.CHECKPOINTS, row.name, row)
    monkeypatch.setattr(checkpoints.registry, "CACHE_DIR", str(tmp_path / "cache"))
    return source, row


def test_build_vit_fetches_a_registered_checkpoint_once(published, tmp_path):
    source, row = published
    model = build_vit("tiny/8", image_size=32, num_classes=5, weights="test_in1k")
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-6)
    assert (tmp_path / "cache" / "keras_vit" / "published.npz").exists()
    (tmp_path / "published.npz").unlink()  # the cached copy serves from now on
    again, report = build_from_checkpoint("tiny/8:test_in1k", image_size=48, num_classes=2)
    assert report.checkpoint is row and again.output_shape == (None, 2)


def test_a_registered_file_with_another_hash_is_refused(published, monkeypatch, tmp_path):
    _, row = published
    bad = checkpoints.Checkpoint(**{**row.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(checkpoints.CHECKPOINTS, row.name, bad)
    with pytest.raises(ValueError, match="corrupted"):
        build_vit("tiny/8", image_size=32, num_classes=5, weights="test_in1k")
    assert not list((tmp_path / "cache" / "keras_vit").iterdir())  # nothing half-checked is kept


def test_a_download_killed_half_way_is_not_served(published, tmp_path):
    source, row = published
    cache = tmp_path / "cache" / "keras_vit"
    cache.mkdir(parents=True)
    truncated = pathlib.Path(row.url.removeprefix("file://")).read_bytes()[:100]
    (cache / "published.npz.4242.part").write_bytes(truncated)  # what a killed download left
    model = build_vit("tiny/8", image_size=32, num_classes=5, weights="test_in1k")
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-6)
    assert (cache / "published.npz").read_bytes() == pathlib.Path(row.url.removeprefix("file://")).read_bytes()


def test_a_failed_download_says_where_to_put_the_file(published, monkeypatch, tmp_path):
    _, row = published
    missing = checkpoints.Checkpoint(**{**row.__dict__, "url": (tmp_path / "gone.npz").as_uri(), "sha256": None})
    monkeypatch.setitem(checkpoints.CHECKPOINTS, row.name, missing)
    target = tmp_path / "cache" / "keras_vit" / "gone.npz"
    with pytest.raises(ConnectionError) as error:
        build_vit("tiny/8", image_size=32, num_classes=5, weights="test_in1k")
    message = str(error.value)
    assert missing.url in message and str(target) in message and "--weights path/to/file.npz" in message
    assert not list(target.parent.iterdir())  # no partial file left behind
    from keras_vit.cli import USER_ERRORS

    assert isinstance(error.value, USER_ERRORS)  # one line on the command line, not a traceback


def test_registry_rows_are_consistent():
    for name, row in checkpoints.CHECKPOINTS.items():
        _, patch = keras_vit.parse_variant(row.variant)
        assert name == row.name and row.url.startswith("https://") and row.image_size % patch == 0
        assert row.scaling in preprocessing.SCALINGS and row.cache_name.endswith((".npz", ".safetensors"))
    cache_names = [row.cache_name for row in checkpoints.CHECKPOINTS.values()]
    assert len(set(cache_names)) == len(cache_names)  # two rows sharing a cached file would load each other's weights
    assert checkpoints.find_checkpoint("augreg_in21k_ft_in1k", "B/16").url.endswith("res_224.npz")


def test_family_rows_say_what_they_output_and_build_from_their_options():
    rows = [row for row in checkpoints.CHECKPOINTS.values() if row.family != "ViT"]
    assert {row.family for row in rows} == {
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
    }
    fields = set(keras_vit.ViTConfig.__dataclass_fields__)
    for row in rows:
        assert row.output in ("logits", "features", "embedding") and (row.num_classes == 0) == (
            row.output == "features"
        )
        assert {key for key, _ in row.options} <= fields, row.name
        keras_vit.ViTConfig.from_variant(row.variant, image_size=row.image_size, **dict(row.options))  # valid values
    openai = checkpoints.find_checkpoint("B/16:clip_openai")
    assert dict(openai.options) == {"activation": "quick_gelu"} and openai.scaling == "clip"


def test_an_unknown_name_lists_the_variants_known_checkpoints():
    with pytest.raises(
        FileNotFoundError, match=r"^B/16:bad_tag is neither a checkpoint file nor a known .*; B/16 has: B/16:"
    ):
        build_from_checkpoint("B/16:bad_tag")
    with pytest.raises(FileNotFoundError, match=r"no_such\.npz is neither .*; known names: "):
        keras_vit.load_weights(build_vit("tiny/4", image_size=8), "no_such.npz")


@pytest.mark.slow  # full-size models in both frameworks, ~2 minutes
def test_the_eva02_and_pe_rows_build_timms_models_parameter_for_parameter(run_torch, tmp_path):
    from keras_vit.checkpoints import families

    rows = {}
    for row in checkpoints.CHECKPOINTS.values():
        if row.family in ("EVA-02", "Perception Encoder"):
            architecture = row.url.split("/timm/")[1].split(".")[0]
            # The gigantic towers (1.9B parameters) with two blocks: their width, heads, MLP and heads checked.
            depth = ":2" if dict(row.options).get("hidden_dim", 0) >= 1536 else ""
            rows.setdefault(f"{architecture}:{row.num_classes}{depth}", row)  # one row per architecture and head
    run_torch("parameters", tmp_path, *rows)
    counts = json.loads((tmp_path / "parameters.json").read_text())
    for name, row in rows.items():
        _, shown = families.family(row.family).timm_facts(name.split(":")[0])  # what the file's tensors show
        shown = {key: value for key, value in shown.items() if key not in ("layer_scale", "num_register_tokens")}
        options = {**shown, **dict(row.options), **({"num_layers": 2} if name.endswith(":2") else {})}
        config = keras_vit.ViTConfig.from_variant(
            row.variant, image_size=row.image_size, num_classes=row.num_classes, include_top=row.num_classes > 0,
            **options,
        )  # fmt: skip
        assert build_vit(config).count_params() == counts[name], name
