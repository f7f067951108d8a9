"""Training with model.fit: a short run end to end, resume after a kill, fine-tuning, CLI errors."""

import contextlib
import csv
import errno
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from keras_vit import run_folder
from keras_vit.training import data
from keras_vit.training.train import TrainConfig, _class_weights, _early_stopping, evaluate, train

CLI = [sys.executable, "-m", "keras_vit.cli"]


def _config(tmp_path, **kwargs):
    defaults = dict(
        output=str(tmp_path / "run"), variant="tiny/4", image_size=16, epochs=2, batch_size=64, verbose=0, export=False
    )
    return TrainConfig(**{**defaults, **kwargs})


def test_short_fit_writes_every_artifact_and_learns(tmp_path):
    results = train(_config(tmp_path, epochs=4, learning_rate=3e-3))
    run = tmp_path / "run"
    for name in (
        "model.keras",
        "keras_vit.json",
        "results.json",
        "history.csv",
        "history.json",
        "curves.png",
        "confusion_matrix.png",
        "checkpoints/best.keras",
    ):
        assert (run / name).exists(), name
    assert any((run / "logs").rglob("*tfevents*"))
    assert not (run / run_folder.LOCK).exists()  # released once the run ends
    assert results["test_top1"] > 0.3  # 10 classes: well above chance after 4 short epochs
    assert 0 <= results["test_top1"] <= results["test_top5"] <= 1
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [0, 1, 2, 3] and history["loss"][-1] < history["loss"][0]
    metadata = json.loads((run / "keras_vit.json").read_text())
    assert metadata["image_size"] == [16, 16] and metadata["labels"] == [str(i) for i in range(10)]
    with Image.open(run / "curves.png") as image:
        assert image.size == (1000, 400)
    with Image.open(run / "confusion_matrix.png") as image:
        assert image.size == (800, 800)  # 10 classes: (4 + 0.4 * 10) inches at 100 dpi
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert model.output_shape == (None, 10)
    assert metadata["source"] == "digits" and metadata["val_fraction"] == 0.1
    again = evaluate(str(run))  # the run's own dataset and split, and its loss (label smoothing included)
    np.testing.assert_allclose(again["accuracy"], results["test_top1"], atol=1e-6)
    np.testing.assert_allclose(again["loss"], results["test_loss"], rtol=1e-5)
    assert (again["dataset"], again["split"], again["images"]) == ("digits", "test", 360)


def test_an_existing_output_is_refused_unless_asked(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists: pass --overwrite"):
        train(_config(tmp_path))
    with pytest.raises(FileExistsError, match="not a keras-vit run folder; refusing to delete it"):
        train(_config(tmp_path, overwrite=True))
    assert (tmp_path / "run" / "precious.txt").read_text() == "mine"
    (tmp_path / "run" / "history.csv").write_text("epoch,loss\n")  # any Keras CSVLogger's folder has one
    with pytest.raises(FileExistsError, match="not a keras-vit run folder"):
        train(_config(tmp_path, overwrite=True))
    assert (tmp_path / "run" / "precious.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="no run in"):
        train(_config(tmp_path, output=str(tmp_path / "none"), resume=True))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(batch_size=5000), ValueError, "larger than the 1257 training images"),
        (dict(image_size=18), ValueError, r"image_size=\(18, 18\) is not divisible by patch_size=\(4, 4\)"),
        (dict(dataset="no_such_dataset"), ValueError, "Unknown dataset 'no_such_dataset'"),
        (dict(precision="float8"), ValueError, "Unknown precision='float8'"),
        (dict(recipe="lamb"), ValueError, "Unknown recipe='lamb'"),
        (dict(strategy="mirrored", jit_compile=True), ValueError, "does not work with a mirrored strategy"),
        (dict(variant="Q/16"), ValueError, "Q/16"),
        (dict(image_size=0), ValueError, "--image-size 0 is out of range"),
        (dict(learning_rate=0.0), ValueError, r"--learning-rate 0.0 is out of range: it must be > 0"),
        (dict(label_smoothing=1.0), ValueError, r"--label-smoothing 1.0 is out of range: it must be in \[0, 1\)"),
        (dict(mixup=-1.0), ValueError, "--mixup -1.0 is out of range"),
        (dict(cutmix=2.0), ValueError, "--cutmix 2.0 is out of range"),
        (dict(dropout_rate=1.5), ValueError, "--dropout-rate 1.5 is out of range"),
        (dict(weight_decay=-0.1), ValueError, "--weight-decay -0.1 is out of range"),
        (dict(seed=-5), ValueError, r"--seed -5 is out of range: it must be >= 0"),
        (dict(val_fraction=0.5), ValueError, r"--val-fraction 0.5 is out of range: it must be in \(0, 0.5\)"),
        (dict(verbose="5"), ValueError, "--verbose 5 is not one of auto, 0, 1, 2"),
        (
            dict(weights="B/16:bad_tag"),
            FileNotFoundError,
            r"--weights B/16:bad_tag is neither a checkpoint file nor a known checkpoint name; B/16 has: B/16:",
        ),
        (dict(freeze_backbone=True), ValueError, "--freeze-backbone trains the head alone .* pass --weights"),
        (dict(layer_decay=1.5), ValueError, r"--layer-decay 1.5 is out of range: it must be in \(0, 1\]"),
        (dict(weights="x.npz", freeze_backbone=True, layer_decay=0.75), ValueError, "--layer-decay is for full"),
        (dict(layer_decay=0.75), ValueError, "--layer-decay lowers the pretrained layers' .* pass --weights"),
        (
            dict(halting_gate_center=3.0, ponder_loss_weight=1e-3),
            ValueError,
            "--halting-gate-center, --ponder-loss-weight are A-ViT settings: pass --adaptive-tokens too, or leave them",
        ),
        (
            dict(adaptive_tokens=True, distribution_prior_weight=float("inf")),
            ValueError,
            "--distribution-prior-weight inf is not a finite number",
        ),
        (dict(learning_rate=float("nan")), ValueError, "--learning-rate nan is not a finite number"),
        (dict(mixup=float("-inf")), ValueError, "--mixup -inf is not a finite number"),
    ],
)
def test_bad_input_fails_before_anything_is_written(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        train(_config(tmp_path, **kwargs))
    assert not (tmp_path / "run").exists()


def test_a_small_dataset_from_scratch_gets_a_hint(tmp_path, capsys):
    """The README's own-photos mistake: Ti/16 from scratch on a few hundred images ends at chance."""
    with pytest.raises(ValueError, match="larger than the 1257 training images"):  # stopped once the hint is out
        train(_config(tmp_path, variant="Ti/16", image_size=32, batch_size=5000))
    err = capsys.readouterr().err
    assert (
        "keras-vit train: note: Ti/16 from scratch on 1,257 training images rarely learns (a ViT needs many more, "
        "or a pretrained start): fine-tune a checkpoint with --weights (e.g. --weights Ti/16:augreg_in21k), "
        "or try --variant tiny/4 --image-size 32."
    ) in err
    with pytest.raises(ValueError, match="larger than"):
        train(_config(tmp_path, batch_size=5000))  # the tiny row learns the digits from scratch: no note
    assert "note" not in capsys.readouterr().err


def test_cli_prints_one_line_errors(tmp_path):
    result = subprocess.run(
        [*CLI, "train", "--dataset", str(tmp_path / "missing") + "/", "--output", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("keras-vit train: error: No folder at")
    assert "Traceback" not in result.stderr


def test_mixed_bfloat16_training_keeps_float32_logits(tmp_path):
    results = train(_config(tmp_path, precision="mixed_bfloat16", epochs=1))
    assert np.isfinite(results["test_loss"]) and results["test_loss"] < 2 * np.log(10)  # trained, not diverged
    keras.config.set_dtype_policy("float32")
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert model.get_layer("block_0").compute_dtype == "bfloat16"
    assert keras.backend.standardize_dtype(model(np.zeros((1, 16, 16, 3))).dtype) == "float32"


def _epochs_logged(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f)]


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    output = tmp_path / "run"
    args = [
        *CLI,
        "train",
        "--output",
        str(output),
        "--variant",
        "tiny/4",
        "--image-size",
        "16",
        "--epochs",
        "8",
        "--verbose",
        "0",
        "--no-export",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(_epochs_logged(output / "history.csv")) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    # A second writer while the first trains: refused, naming the process, and nothing deleted.
    with pytest.raises(FileExistsError, match=rf"in use by another keras-vit process \(pid {process.pid}\)"):
        train(_config(tmp_path, overwrite=True))
    with pytest.raises(FileExistsError, match="in use by another keras-vit process"):
        train(_config(tmp_path, resume=True, epochs=8))
    process.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == (
        f"keras-vit train: interrupted; `keras-vit train --output {output} --resume` continues from the last "
        "finished epoch"
    )
    assert not (output / run_folder.LOCK).exists()
    before = _epochs_logged(output / "history.csv")
    assert 2 <= len(before) < 8, "the run must be stopped mid-training"
    assert not (output / "model.keras").exists()
    # Resumed without repeating --no-export: the run's own flags hold, so it does not export.
    without = [arg for arg in args if arg != "--no-export"]
    resumed = subprocess.run([*without, "--resume"], check=True, capture_output=True, text=True, timeout=600)
    assert f"keras-vit train: resuming {output} at epoch {len(before) + 1} of 8" in resumed.stdout
    assert not (output / "export").exists() and "export/" not in resumed.stdout
    again = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "has finished; nothing to resume" in again.stderr
    history = json.loads((output / "history.json").read_text())
    assert history["epoch"] == list(range(8))
    after = _epochs_logged(output / "history.csv")
    assert after[: len(before)] == before  # nothing earlier is lost
    # It continued rather than restarted: no epoch ran twice beyond the one a kill can repeat.
    assert len(after) <= 9


def test_resume_takes_the_runs_settings_and_refuses_contradicting_ones(tmp_path):
    started = _config(tmp_path, batch_size=32, epochs=3)
    run_folder.start(
        started.output, {"epochs": 3, "batch_size": 32}
    )  # in TrainConfig's field order, as train stores it
    with pytest.raises(ValueError, match=r"--batch-size 16 \(the run has 32\) contradict"):
        train(_config(tmp_path, resume=True, batch_size=16))
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "cats").mkdir()  # say, the dataset itself
    with pytest.raises(FileNotFoundError, match="holds no unfinished keras-vit run"):
        train(_config(tmp_path, output=str(tmp_path / "notarun"), resume=True))
    assert os.listdir(tmp_path / "notarun") == ["cats"]


def test_a_run_killed_after_fit_finishes_on_resume_without_training_again(tmp_path, capsys):
    first = train(_config(tmp_path, epochs=2))
    run = tmp_path / "run"
    (run / "results.json").unlink()  # as if killed while saving or exporting
    rows = _epochs_logged(run / "history.csv")
    again = train(_config(tmp_path, resume=True))
    assert "training had finished; saving and exporting" in capsys.readouterr().out
    assert _epochs_logged(run / "history.csv") == rows  # no epoch ran again
    assert again["test_top1"] == first["test_top1"] and again["fit_seconds"] is None
    assert (run / "results.json").exists()
    with warnings.catch_warnings(record=True) as caught:  # as the export loads it: whole, optimizer too
        warnings.simplefilter("always")
        keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]


def test_early_stopping_and_balanced_class_weights(tmp_path, capsys, monkeypatch):
    from keras_vit.training import train as train_module

    [stopper] = _early_stopping(3, start_from_epoch=2)
    assert (stopper.monitor, stopper.patience, stopper.restore_best_weights) == ("val_accuracy", 3, True)
    assert stopper.start_from_epoch == 2  # patience counts after the warm-up, not during it
    assert _early_stopping(0) == []
    asked = []
    monkeypatch.setattr(
        train_module, "_early_stopping", lambda *a, **k: asked.append((a, k)) or _early_stopping(*a, **k)
    )
    config = _config(tmp_path, epochs=3, early_stopping=1, warmup_epochs=1.5, class_weights="balanced", verbose="2")
    results = train(config)
    assert asked == [((1,), {"start_from_epoch": 2})]  # 1.5 warm-up epochs: counted from the third epoch
    out = capsys.readouterr().out
    # The first epoch also traces the steps: no estimate from it.
    assert "keras-vit train: 1 of 3 epochs done, estimating the time left" in out
    assert re.search(r"keras-vit train: 2 of 3 epochs done, about \dm \d\ds left", out)
    per_class = results["per_class"]  # with the confusion matrix's counts: the test split's 360 digits
    assert list(per_class) == [str(i) for i in range(10)] and sum(c["support"] for c in per_class.values()) == 360
    assert all(0 <= c[k] <= 1 for c in per_class.values() for k in ("precision", "recall", "f1"))
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["per_class"] == per_class and written["confusion_matrix"] == results["confusion_matrix"]
    matrix = np.array(results["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum(axis=1).tolist() == [c["support"] for c in per_class.values()]


def test_balanced_class_weights_weigh_rare_classes_up(tmp_path):
    root = tmp_path / "skewed"
    for name, count in (("common", 9), ("rare", 3)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / name / f"{i}.png")
    splits = data.load(str(root))
    assert splits.class_counts() == [7, 1]  # one of each held out for validation and one for test
    assert _class_weights("balanced", splits) == {0: 8 / (2 * 7), 1: 8 / (2 * 1)}
    assert _class_weights(None, splits) is None


def test_a_diverged_run_is_an_error_and_saves_no_model(tmp_path):
    with pytest.raises(ValueError, match=r"Training diverged \(loss nan"):
        train(_config(tmp_path, epochs=1, learning_rate=1e12, warmup_epochs=0))
    assert not (tmp_path / "run" / "model.keras").exists()


def test_evaluate_refuses_a_dataset_with_other_classes(tmp_path):
    train(_config(tmp_path, epochs=1))
    folder = tmp_path / "photos"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / label / f"{i}.png")
    with pytest.raises(
        ValueError, match=r"does not have the model's labels: it has 2 classes \(cat, dog\), the model 10 \(0, 1, 2"
    ):
        evaluate(str(tmp_path / "run"), str(folder))


def test_fine_tuning_an_earlier_runs_model_keeps_its_pixel_scaling(tmp_path, tiny_vit, write_run_folder):
    earlier = write_run_folder(tmp_path / "earlier", tiny_vit(), ["a", "b", "c"], scaling="imagenet")
    train(_config(tmp_path, weights=str(earlier / "model.keras"), variant=None, epochs=1))
    assert json.loads((tmp_path / "run" / "keras_vit.json").read_text())["scaling"] == "imagenet"


def test_the_main_job_trains_evaluates_and_exports(tmp_path):
    """`keras-vit train` as the README runs it, shortened: digits -> fit -> test metrics -> export."""
    output = tmp_path / "run"
    result = subprocess.run(
        [*CLI, "train", "--output", str(output), "--epochs", "3", "--image-size", "16"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| LiteRT float32 |" in result.stdout
    # The closing line names what the folder holds, and nothing it does not.
    wrote = next(line for line in result.stdout.splitlines() if line.startswith(f"Wrote {output}/: "))
    listed = re.sub(r" \([^)]*\)", "", wrote.split(": ", 1)[1]).split(", ")
    assert listed[0] == "model.keras" and "checkpoints/best.keras" in listed and "export/" in listed
    assert "SHA256SUMS" in wrote  # inside export/
    assert all((output / name).exists() for name in listed), listed
    assert "per class on the test split:" in result.stdout and "confusion matrix (rows: true class" in result.stdout
    for noise in ("XNNPACK", "fully_quantize", "Downloading and preparing"):  # LiteRT's C++ lines, TFDS' build
        assert noise not in result.stderr, result.stderr[-2000:]
    report = json.loads((output / "export" / "parity_report.json").read_text())
    rows = {row["artifact"]: row for row in report["artifacts"]}
    assert rows["LiteRT float32"]["max_abs_logit_diff"] < 1e-3
    assert rows["SavedModel (serving_uint8)"]["top1_agreement"] == 1.0
    assert (output / "export" / "saved_model" / "vit" / "1" / "saved_model.pb").exists()
    assert sorted(p.name for p in (output / "export" / "tflite").glob("*.tflite"))[:2] == [
        "vit_dynamic_int8.tflite",
        "vit_float16.tflite",
    ]
    results = json.loads((output / "results.json").read_text())
    assert results["export"]["LiteRT float32"] == pytest.approx(results["test_top1"], abs=0.01)


def test_fine_tuning_from_a_checkpoint_at_a_new_size_and_class_count(tmp_path, tiny_vit, randomize):
    from keras_vit import save_npz
    from keras_vit.training.train import resolve

    source = randomize(tiny_vit(num_classes=5, pooling="gap"), seed=0, scale=0.05)
    checkpoint = str(tmp_path / "pretrained.npz")
    save_npz(source, checkpoint)
    config = _config(tmp_path, weights=checkpoint, image_size=24, variant=None, epochs=1)
    assert resolve(config).recipe == "sgd" and resolve(config).learning_rate == 0.01
    results, model = train(config, return_model=True)
    assert model.input_shape == (None, 24, 24, 3) and model.output_shape == (None, 10)
    assert model.get_layer("position_embedding").embedding.shape == (1, 36, 64)  # 4x4 grid -> 6x6
    assert "class_token" not in [layer.name for layer in model.layers]  # the checkpoint's gap pooling
    # The encoder started from the checkpoint: one epoch of SGD moves it only a little.
    start = keras.ops.convert_to_numpy(source.get_layer("block_1").mlp_dense_2.kernel)
    tuned = keras.ops.convert_to_numpy(model.get_layer("block_1").mlp_dense_2.kernel)
    assert np.abs(tuned - start).max() < 0.05 * np.abs(start).max() + 0.05
    metadata = json.loads((tmp_path / "run" / "keras_vit.json").read_text())
    assert metadata["weights"] == checkpoint and metadata["variant"] == "tiny/4"  # the checkpoint's, as read from it
    assert np.isfinite(results["test_loss"]) and results["test_loss"] < 2 * np.log(10)


def test_a_tfds_dataset_is_built_before_the_seed_is_set(tmp_path, monkeypatch, capfd):
    # A first build draws random numbers: built after seeding, the same seed would train another model
    # on a fresh clone than later (the slow test below shows it end to end).
    data_dir = str(tmp_path / "tfds")

    def set_random_seed(seed):
        assert tfds.builder("digits", data_dir=data_dir).is_prepared(), "seeded before the dataset was built"
        raise KeyboardInterrupt  # seen what was needed: stop the run here

    monkeypatch.setattr(keras.utils, "set_random_seed", set_random_seed)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, data_dir=data_dir))
    assert "Downloading and preparing" not in "".join(capfd.readouterr())  # built in, nothing to say


@pytest.mark.slow
def test_the_first_build_of_a_tfds_dataset_trains_as_later_reads(tmp_path):
    # The README's number for a seed holds on a fresh clone too, where `digits` is built first.
    data_dir = str(tmp_path / "tfds")
    first = train(_config(tmp_path, epochs=1, data_dir=data_dir, output=str(tmp_path / "first")))
    later = train(_config(tmp_path, epochs=1, data_dir=data_dir, output=str(tmp_path / "later")))
    assert first["test_loss"] == later["test_loss"]


def test_freeze_backbone_trains_the_head_alone(tmp_path, tiny_vit, randomize, write_run_folder):
    source = randomize(tiny_vit(), scale=0.05)
    earlier = write_run_folder(tmp_path / "earlier", source, ["a", "b", "c"], scaling="imagenet")
    config = _config(tmp_path, weights=str(earlier / "model.keras"), variant=None, epochs=1, freeze_backbone=True)
    _, model = train(config, return_model=True)
    before = {v.path: keras.ops.convert_to_numpy(v) for v in source.weights}
    for v in model.weights:
        if v.path.startswith("head/"):  # a new head for 10 classes, from zeros
            assert np.abs(keras.ops.convert_to_numpy(v)).max() > 0, v.path
        else:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), before[v.path], err_msg=v.path)
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras", safe_mode=True, compile=False)
    assert len(saved.trainable_variables) == len(saved.weights)  # saved trainable, as a built model
    assert json.loads((tmp_path / "run" / "keras_vit.json").read_text())["scaling"] == "imagenet"


def test_freeze_backbone_leaves_both_heads_of_a_distilled_model_trainable(tiny_vit):
    from keras_vit.training.train import freeze_backbone

    model = freeze_backbone(tiny_vit(distillation=True, num_register_tokens=2, layer_scale_init=1e-6))
    assert sorted(v.path for v in model.trainable_variables) == [
        "head/bias", "head/kernel", "head_dist/bias", "head_dist/kernel"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="has no head to train"):
        freeze_backbone(tiny_vit(include_top=False))


def test_layer_decay_fine_tunes_through_the_cli(tmp_path, tiny_vit, write_run_folder):
    earlier = write_run_folder(tmp_path / "earlier", tiny_vit(), ["a", "b", "c"])
    config = _config(tmp_path, weights=str(earlier / "model.keras"), variant=None, epochs=1, layer_decay=0.75)
    results, model = train(config, return_model=True)
    assert (model.optimizer.layer_decay, model.optimizer.num_layers) == (0.75, 2)
    assert model.optimizer.learning_rate_multiplier(model.get_layer("patch_embedding").weights[0]) == 0.75**3
    assert np.isfinite(results["test_loss"])
    from keras_vit.cli import build_parser

    args = build_parser().parse_args(["train", "--freeze-backbone", "--layer-decay", "0.75"])
    assert args.freeze_backbone is True and args.layer_decay == 0.75


@pytest.mark.parametrize("scaling", ["imagenet", "clip", "vit"])
def test_a_family_checkpoints_reported_scaling_is_the_runs(scaling):
    """The loader names a hub folder's or registry row's scaling (DINOv2/DeiT, CLIP, SigLIP); training uses it."""
    import types

    from keras_vit.training.train import _checkpoint_scaling

    report = types.SimpleNamespace(scaling=scaling, checkpoint=None, format="safetensors")
    assert _checkpoint_scaling("folder", report) == scaling
    assert _checkpoint_scaling("file.npz", types.SimpleNamespace(checkpoint=None, format="npz")) == "vit"


def test_adaptive_tokens_fine_tune_a_plain_model_and_report_halting(tmp_path, tiny_vit, write_run_folder):
    """`keras-vit train --adaptive-tokens --weights ...`: A-ViT fine-tunes a model trained without it, as the paper does DeiT."""
    from keras_vit.cli import build_parser

    args = build_parser().parse_args(["train", "--adaptive-tokens", "--halting-gate-center", "3"])
    assert args.adaptive_tokens is True and args.halting_gate_center == 3.0 and args.ponder_loss_weight is None
    earlier = write_run_folder(tmp_path / "earlier", tiny_vit(num_classes=10), [str(i) for i in range(10)])
    config = _config(
        tmp_path,
        weights=str(earlier / "model.keras"),
        variant=None,
        epochs=1,
        adaptive_tokens=True,
        halting_gate_center=3.0,
    )
    results = train(config)
    halting = json.loads((tmp_path / "run" / "results.json").read_text())["halting"]
    assert halting == results["halting"] and 1.0 <= halting["mean_depth"] <= 2.0
    assert halting["active_fraction"][0] == 1.0 and 0.0 <= halting["active_fraction"][1] <= 1.0
    architecture = json.loads((tmp_path / "run" / "keras_vit.json").read_text())["architecture"]
    assert architecture["adaptive_tokens"]["gate_center"] == 3.0  # ViTConfig.adaptive_tokens, one record
    model = keras.saving.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
    assert "halting_loss" in [layer.name for layer in model.layers]


class _Killed(Exception):
    pass


def test_epoch_seeds_make_dropout_a_function_of_the_epoch(tiny_vit):
    from keras_vit.training.train import EpochSeeds

    model = tiny_vit(dropout_rate=0.5, drop_path_rate=0.5, include_top=False)  # features: the head starts at zero
    callback = EpochSeeds(seed=0)
    callback.set_model(model)
    images = np.random.default_rng(0).normal(size=(2, *model.input_shape[1:])).astype("float32")
    outputs = {}
    for epoch in (3, 1, 3):  # what ran before (epoch 1's steps) does not change epoch 3's masks
        callback.on_epoch_begin(epoch)
        outputs.setdefault(epoch, []).append(keras.ops.convert_to_numpy(model(images, training=True)))
    np.testing.assert_array_equal(outputs[3][0], outputs[3][1])
    assert not np.array_equal(outputs[1][0], outputs[3][0])


@pytest.mark.slow
def test_a_resumed_run_trains_as_the_uninterrupted_one(tmp_path, monkeypatch):
    """Stopped after epoch 2 of 4 and resumed: the same history, from the same order, crops, flips and dropout."""
    from keras_vit.training import train as train_module

    settings = dict(
        epochs=4,
        augment="crop_flip",
        mixup=0.2,
        dropout_rate=0.1,
        drop_path_rate=0.1,
        batch_size=128,
        learning_rate=3e-3,
    )
    train(_config(tmp_path, output=str(tmp_path / "whole"), **settings))

    class Kill(keras.callbacks.Callback):  # after BackupAndRestore's save: as a kill between two epochs
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise _Killed

    callbacks = train_module._callbacks
    monkeypatch.setattr(train_module, "_callbacks", lambda *args, **kwargs: callbacks(*args, **kwargs) + [Kill()])
    with pytest.raises(_Killed):
        train(_config(tmp_path, **settings))
    monkeypatch.setattr(train_module, "_callbacks", callbacks)
    assert len(_epochs_logged(tmp_path / "run" / "history.csv")) == 2
    train(_config(tmp_path, resume=True, **settings))
    whole = _epochs_logged(tmp_path / "whole" / "history.csv")
    resumed = _epochs_logged(tmp_path / "run" / "history.csv")
    assert [row["epoch"] for row in resumed] == ["0", "1", "2", "3"]
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(
            [float(row[name]) for row in resumed], [float(row[name]) for row in whole], rtol=1e-5, err_msg=name
        )


# --- the file system saying no -------------------------------------------------------------------

TINY_RUN = ["--variant", "tiny/4", "--image-size", "16", "--epochs", "2", "--verbose", "0", "--no-export"]


def test_cli_train_under_a_read_only_folder_is_one_line_before_any_image_is_read(read_only_folder, capsys):
    from keras_vit import cli

    output = read_only_folder / "run"
    assert cli.main(["train", "--output", str(output), *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"keras-vit train: error: {read_only_folder}: permission denied")


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes_once_there_is_space(tmp_path, capsys, monkeypatch):
    """The disk fills while `best.keras` is written: no half-written checkpoint is left, and
    `--resume` finishes the run once space is freed. (The no-space error is made at the file
    boundary, Keras' save, which writes part of the file first as a filling disk does.)"""
    from keras_vit import cli

    def disk_fills(model, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04" + b"\0" * 1000)  # a zip header, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    output = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save", disk_fills)
        assert cli.main(["train", "--output", str(output), *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"keras-vit train: error: {output}: no space left on the device") and "--resume" in err
    assert os.listdir(output / "checkpoints") == []  # neither best.keras nor its temporary file
    assert cli.main(["train", "--output", str(output), "--resume", "--verbose", "0", "--no-export"]) == 0
    assert (output / "results.json").exists()
    assert len(_epochs_logged(output / "history.csv")) == 2
    keras.saving.load_model(output / "checkpoints" / "best.keras", safe_mode=True)  # whole


@contextlib.contextmanager
def _as_another_user():
    """Root reads every folder: as root, this process acts as `nobody` (its effective ids) for a while."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_an_unreadable_class_folder_is_one_line_naming_it(capsys):
    from keras_vit import cli

    root = pathlib.Path(tempfile.mkdtemp(prefix="keras_vit_unreadable_"))  # tmp_path's parents are root's own
    try:
        root.chmod(0o777)
        for name in ("cat", "dog"):
            (root / "photos" / name).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(root / "photos" / name / f"{i}.png")
        (root / "photos" / "dog").chmod(0o000)
        with _as_another_user():
            code = cli.main(["train", "--dataset", str(root / "photos"), "--output", str(root / "run"), *TINY_RUN])
    finally:
        (root / "photos" / "dog").chmod(0o755)
        shutil.rmtree(root)
    err = capsys.readouterr().err
    assert code == 2, err
    assert (
        err.strip().splitlines()[-1].startswith(f"keras-vit train: error: {root / 'photos' / 'dog'}: permission denied")
    )


def test_the_default_model_from_scratch_is_regularized_and_others_keep_their_rates():
    """The main job's tiny/4 gets dropout and stochastic depth 0.1 (it overfits 1,257 digits without);
    a named variant keeps its row's dropout, a fine-tune its checkpoint's, and flags win."""
    from keras_vit.training.settings import TrainConfig
    from keras_vit.training.train import resolve

    default = resolve(TrainConfig())
    assert (default.variant, default.dropout_rate, default.drop_path_rate) == ("tiny/4", 0.1, 0.1)
    named = resolve(TrainConfig(variant="S/16"))
    assert (named.dropout_rate, named.drop_path_rate) == (None, 0.0)
    tuned = resolve(TrainConfig(weights="Ti/16:augreg_in21k"))
    assert (tuned.dropout_rate, tuned.drop_path_rate) == (None, 0.0)
    asked = resolve(TrainConfig(dropout_rate=0.0, drop_path_rate=0.2))
    assert (asked.dropout_rate, asked.drop_path_rate) == (0.0, 0.2)
