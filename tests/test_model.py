"""The functional model: the paper's counts and shapes, saving, training, invalid configs."""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import VARIANTS, build_vit, parse_variant

PUBLISHED_PARAMS = {
    "Ti/16": 5_717_416,
    "S/16": 22_050_664,
    "B/16": 86_567_656,
    "L/16": 304_326_632,
    "H/14": 632_045_800,
}


def _images(shape=(2, 16, 16, 3), seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype("float32")


@pytest.mark.parametrize(
    "variant",
    [pytest.param(v, marks=pytest.mark.slow) if v in ("L/16", "H/14") else v for v in PUBLISHED_PARAMS],
)
def test_parameter_counts_equal_the_published_ones(variant):
    assert build_vit(variant, image_size=224, num_classes=1000).count_params() == PUBLISHED_PARAMS[variant]


def test_b16_has_the_shapes_of_the_paper():
    model = build_vit("B/16")
    names = ["patch_embedding", "class_token", "position_embedding"] + [f"block_{i}" for i in range(12)]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names] + [model.get_layer("head").input])
    outputs = probe(np.zeros((1, 224, 224, 3), "float32"))
    shapes = [tuple(o.shape) for o in outputs]
    assert shapes[0] == (1, 196, 768)
    assert shapes[1] == shapes[2] == (1, 197, 768)
    assert shapes[3:15] == [(1, 197, 768)] * 12
    assert shapes[15] == (1, 768)
    assert model.input.name == "images" and model.output_shape == (None, 1000)


def test_gap_pooling_has_no_class_token(tiny_vit):
    model = tiny_vit(pooling="gap")
    layer_names = [layer.name for layer in model.layers]
    assert "class_token" not in layer_names and "gap_pooling" in layer_names
    assert tuple(model.get_layer("position_embedding").embedding.shape) == (1, 16, 64)
    assert model.get_layer("position_embedding").num_prefix_tokens == 0


def test_token_pooling_reads_the_class_token_output(tiny_vit, randomize, to_numpy):
    model = tiny_vit()
    randomize(model, scale=0.1)
    x = _images()
    tokens = keras.Model(model.input, model.get_layer("encoder_norm").output)(x)
    features = build_vit("tiny/4", image_size=16, include_top=False)
    features.set_weights(model.get_weights()[:-2])  # everything but the head
    np.testing.assert_allclose(to_numpy(features(x)), to_numpy(tokens)[:, 0], rtol=1e-6)


def test_representation_layer_and_zero_head(tiny_vit):
    model = tiny_vit(representation_size=7)
    assert model.get_layer("pre_logits").activation is keras.activations.tanh
    assert model.get_layer("pre_logits").units == 7
    head = model.get_layer("head")
    assert all(np.all(keras.ops.convert_to_numpy(w) == 0) for w in head.weights)
    assert not any(layer.name == "pre_logits" for layer in build_vit("tiny/4", image_size=16).layers)


def test_pre_logits_starts_as_flax_dense_lecun_normal_with_zero_bias():
    # The original code's pre_logits is a plain flax nn.Dense: truncated normal with variance 1/fan_in.
    pre_logits = build_vit("tiny/4", image_size=16, representation_size=512).get_layer("pre_logits")
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in pre_logits.weights)
    assert 0.95 * 64**-0.5 < kernel.std() < 1.05 * 64**-0.5  # glorot_uniform would give 0.059
    assert np.abs(kernel).max() <= 2 * 64**-0.5 / 0.8796  # truncated at two (pre-truncation) stddevs
    assert not np.any(bias)


def test_include_top_false_returns_features(tiny_vit):
    assert tiny_vit(include_top=False).output_shape == (None, 64)


def test_explicit_arguments_override_the_variant():
    model = build_vit(
        "B/16",
        image_size=(32, 48),
        patch_size=(8, 4),
        hidden_dim=12,
        num_layers=1,
        num_heads=3,
        mlp_dim=5,
        num_classes=2,
        num_channels=1,
    )
    assert model.input_shape == (None, 32, 48, 1)
    assert model.get_layer("patch_embedding").output.shape == (None, 48, 12)
    assert [layer.name for layer in model.layers if layer.name.startswith("block_")] == ["block_0"]
    assert model.get_layer("block_0").num_heads == 3 and model.get_layer("block_0").mlp_dim == 5


def test_variant_names_and_aliases():
    assert parse_variant("S/32") == (VARIANTS["S"], 32)
    assert parse_variant("H/14") == (VARIANTS["H"], 14)
    assert parse_variant("tiny") == (VARIANTS["tiny"], None)
    assert keras_vit.vit_b32(image_size=64, num_classes=2).get_layer("patch_embedding").patch_size == (32, 32)
    assert keras_vit.vit_ti16(image_size=32).name == "vit_ti16"


def test_drop_path_rate_grows_linearly_with_depth():
    model = build_vit("tiny/4", image_size=16, num_layers=3, drop_path_rate=0.2)
    rates = [model.get_layer(f"block_{i}").drop_path_rate for i in range(3)]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2])


def test_inference_is_deterministic_and_dropout_only_acts_in_training(tiny_vit, randomize, to_numpy):
    model = tiny_vit(dropout_rate=0.3, attention_dropout_rate=0.3, drop_path_rate=0.3)
    randomize(model, scale=0.1)
    x = _images()
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(model(x)))
    np.testing.assert_allclose(model.predict(x, verbose=0), to_numpy(model(x, training=False)), rtol=1e-5, atol=1e-6)
    plain = tiny_vit()
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(to_numpy(model(x)), to_numpy(plain(x)), rtol=1e-5, atol=1e-6)  # no dropout at inference
    assert not np.allclose(to_numpy(model(x, training=True)), to_numpy(model(x, training=True)))


def test_keras_file_reloads_in_safe_mode_without_custom_objects(tmp_path, randomize):
    model = build_vit("tiny/4", image_size=(16, 24), num_classes=3, representation_size=5, drop_path_rate=0.1)
    randomize(model, scale=0.1)
    path = tmp_path / "vit.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = _images((2, 16, 24, 3))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert not [layer for layer in loaded._flatten_layers() if isinstance(layer, keras.layers.Lambda)]


def test_keras_file_reloads_in_a_fresh_process(tmp_path, tiny_vit, randomize):
    """Only `import keras_vit` registers the layers; nothing else is passed."""
    import subprocess
    import sys

    model = tiny_vit(pooling="gap")
    randomize(model, scale=0.1)
    x = _images()
    model.save(tmp_path / "vit.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", keras.ops.convert_to_numpy(model(x)))
    code = (
        "import numpy as np, keras, keras_vit\n"
        f"m = keras.saving.load_model({str(tmp_path / 'vit.keras')!r}, safe_mode=True)\n"
        f"got = keras.ops.convert_to_numpy(m(np.load({str(tmp_path / 'x.npy')!r})))\n"
        f"np.testing.assert_array_equal(got, np.load({str(tmp_path / 'expected.npy')!r}))\n"
        "print('same')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "same", result.stderr[-2000:]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_float32_weights_and_logits(policy, tiny_vit):
    keras.config.set_dtype_policy(policy)
    model = tiny_vit()
    assert model.get_layer("block_0").compute_dtype == policy.split("_")[1]
    assert model.get_layer("block_0").output.dtype == policy.split("_")[1]
    assert all(w.dtype == "float32" for w in model.weights)
    assert keras.backend.standardize_dtype(model(_images()).dtype) == "float32"


def test_fit_lowers_the_loss_and_jit_compile_gives_the_same_outputs(tiny_vit):
    model = tiny_vit()
    x = _images((32, 16, 16, 3))
    y = np.arange(32) % 3
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=15, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    eager = model.predict(x, verbose=0)
    model.compile(jit_compile=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variant="Q/16"), "Unknown variant='Q/16'"),
        (dict(variant="tiny"), "names no patch size"),
        (dict(image_size=225), r"image_size=\(225, 225\) is not divisible by patch_size=\(16, 16\)"),
        (dict(image_size=0), r"image_size=0 must be a positive int"),
        (dict(hidden_dim=100, num_heads=12), "hidden_dim=100 is not divisible by num_heads=12"),
        (dict(pooling="max"), "Unknown pooling='max'"),
        (dict(dropout_rate=1.0), r"dropout_rate=1.0 must be a number in \[0, 1\)"),
        (dict(attention_dropout_rate=-0.5), "attention_dropout_rate=-0.5"),
        (dict(drop_path_rate=1.5), "drop_path_rate=1.5"),
        (dict(num_classes=0), "num_classes=0"),
        (dict(num_layers=-2), "num_layers=-2"),
        (dict(hidden_dim=-8), "hidden_dim=-8"),
        (dict(representation_size=0), "representation_size=0"),
        (dict(patch_size=0), "patch_size=0"),
        (dict(num_channels=0), "num_channels=0"),
    ],
)
def test_invalid_configuration_names_the_argument(kwargs, match):
    kwargs = {"variant": "B/16", **kwargs}
    with pytest.raises(ValueError, match=match):
        build_vit(kwargs.pop("variant"), **kwargs)


def test_every_block_hook_gets_a_token_state_and_the_plain_hook_is_the_model(to_numpy):
    from keras_vit.model import TokenState, ViTLayers, call_block, forward

    model = keras_vit.build_vit("tiny/4", image_size=32, num_classes=10, num_register_tokens=2)
    seen = []

    def hook(block, state):
        assert isinstance(state, TokenState)
        seen.append((block.name, tuple(state.tokens.shape), state.num_prefix_tokens, state.positions))
        return call_block(block, state)

    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(forward(ViTLayers.of(model), images, hook)), to_numpy(model(images)), atol=1e-6)
    assert seen == [("block_0", (2, 67, 64), 3, None), ("block_1", (2, 67, 64), 3, None)]


@pytest.mark.parametrize(
    "options",
    [
        {},
        dict(distillation=True, pre_norm=True),
        dict(representation_size=16),
        dict(num_register_tokens=2, pooling="map"),
        dict(pooling="gap", pooled_norm=True),
        dict(adaptive_tokens=True),
    ],
)
def test_every_layer_with_weights_has_one_role(options):
    """Layer-wise decay, freezing and the layout map find every layer through `layer_role`."""
    from keras_vit.model import ROLES, layer_role

    model = keras_vit.build_vit("tiny/4", image_size=32, num_classes=10, **options)
    roles = {layer.name: layer_role(layer.name) for layer in model.layers if layer.weights}
    assert None not in roles.values(), roles
    assert {role for role in roles.values()} >= {"embedding", "block", "readout", "head"}
    names = [name for group in ROLES.values() for name in group]
    assert len(names) == len(set(names))  # one role per name
