"""`keras-vit train --weights ... --lora RANK`: adapters on a trained run, the merged model, the adapters file."""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import run_folder
from keras_vit.deploy.export import export_model
from keras_vit.preprocessing import preprocessing_model
from keras_vit.training.train import TrainConfig, train


def _config(tmp_path, **kwargs):
    defaults = dict(
        output=str(tmp_path / "run"), image_size=16, epochs=1, batch_size=64, verbose=0, export=False, lora=4
    )
    return TrainConfig(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_vit, randomize, write_run_folder):
    """A --lora 4 run (with --layer-decay) on an earlier run's model, as `keras-vit train --weights RUN --lora 4`."""
    tmp_path = tmp_path_factory.mktemp("lora")
    keras.config.set_dtype_policy("float32")
    source = randomize(tiny_vit(), scale=0.05)
    earlier = write_run_folder(tmp_path / "earlier", source, ["a", "b", "c"])
    config = _config(tmp_path, weights=str(earlier / "model.keras"), learning_rate=0.05, layer_decay=0.75)
    results, model = train(config, return_model=True)
    return tmp_path / "run", earlier, source, results, model


def test_lora_trains_the_adapters_and_the_head_on_the_frozen_run(lora_run, capsys):
    run, _, source, results, model = lora_run
    before = {v.path: keras.ops.convert_to_numpy(v) for v in source.weights}
    trained = {v.path for v in model.trainable_variables}
    assert trained == {"head/kernel", "head/bias"} | {
        f"block_{i}/attention/{name}/lora_kernel_{ab}" for i in (0, 1) for name in ("qkv", "output") for ab in "ab"
    }
    qkv = model.get_layer("block_1").attention.qkv
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(qkv._kernel), before["block_1/attention/qkv/kernel"])
    assert np.abs(keras.ops.convert_to_numpy(qkv.lora_kernel_b)).max() > 0
    # --layer-decay applies to the adapters by their block (block_1 is depth 2 of 3).
    assert model.optimizer.learning_rate_multiplier(qkv.lora_kernel_a) == 0.75
    assert np.isfinite(results["test_loss"])


def test_the_run_saves_the_merged_model_and_the_adapters_alone(lora_run):
    run, earlier, _, _, model = lora_run
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    inputs = preprocessing_model((16, 16), "vit")(images)
    expected = keras.ops.convert_to_numpy(model(inputs))
    merged, _, _ = run_folder.load_model(run)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(merged(inputs)), expected, atol=1e-5)
    adapters = run / run_folder.ADAPTERS
    assert adapters.stat().st_size < (run / run_folder.MODEL).stat().st_size / 4
    base, _ = keras_vit.build_from_checkpoint(str(earlier / "model.keras"), num_classes=10)
    keras_vit.load_adapters(base, adapters)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(base(inputs)), expected, atol=1e-5)


def test_the_export_of_a_lora_run_equals_the_merged_model(lora_run, tmp_path):
    run, *_ = lora_run
    report = export_model(run, tmp_path / "export", quantizations=("float32",), with_onnx=None)
    rows = {row["artifact"]: row for row in report["artifacts"]}
    assert rows["SavedModel (serving_uint8)"]["max_abs_logit_diff"] < 1e-5
    assert rows["LiteRT float32"]["max_abs_logit_diff"] < 1e-4
    if rows["ONNX (ONNX Runtime)"]["status"] == "kept":
        assert rows["ONNX (ONNX Runtime)"]["max_abs_logit_diff"] < 1e-4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "--lora adapts a trained model: pass --weights"),
        (dict(weights="x.keras", freeze_backbone=True), "--lora and --freeze-backbone both choose what trains"),
        (dict(weights="x.keras", lora=0), "--lora 0 must be a positive rank"),
        (dict(weights="x.keras", lora_targets="query"), "expected some of"),
    ],
)
def test_lora_refuses_what_makes_no_sense_in_one_line(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(_config(tmp_path, **kwargs))
    assert not (tmp_path / "run").exists()
