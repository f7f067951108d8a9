"""Adaptive tokens (A-ViT): the paper's halting, its losses, training with fit, the gathered path, saving."""

import math

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.layers.halting import DEPTH, MASK_BIAS, PONDER, Halting, halting_losses, target_distribution
from keras_vit.model import model_config
from keras_vit.views.adaptive import gathered_forward, halting_model, halting_statistics, plain_model

# A gate that fires on random weights: scores spread over (0, 1), so tokens halt after different blocks.
GATE = dict(halting_gate_scale=5.0, halting_gate_center=0.0)


@pytest.fixture(scope="module")
def model(tiny_vit, randomize):
    """tiny/4 at 16x16 (17 tokens) with 4 blocks, every weight random."""
    return randomize(tiny_vit(num_layers=4, adaptive_tokens=True, **GATE), seed=0, scale=0.3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).normal(size=(3, 16, 16, 3)).astype("float32")


def test_off_is_the_plain_model(tiny_vit, images, to_numpy):
    plain, adaptive = tiny_vit(), tiny_vit(adaptive_tokens=True)
    # No new weights: the same variables by name and shape, so checkpoints move both ways.
    assert [(w.path, w.shape) for w in plain.weights] == [(w.path, w.shape) for w in adaptive.weights]
    assert "halting_loss" not in [layer.name for layer in plain.layers]
    # A gate that never fires leaves every token to run every block: exactly the plain model.
    never = tiny_vit(adaptive_tokens=True, halting_gate_center=1e4)
    never.set_weights(plain.get_weights())
    np.testing.assert_array_equal(to_numpy(never(images)), to_numpy(plain(images)))
    np.testing.assert_array_equal(to_numpy(plain_model(never)(images)), to_numpy(plain(images)))


def test_halting_follows_the_paper_by_hand():
    """Two tokens through three blocks, gate `sigmoid(x0)`: their scores, outputs, ponder and depth."""
    steps = [Halting(1.0, 0.0), Halting(1.0, 0.0), Halting(1.0, 0.0, last=True)]
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731  x0 whose score is p
    # token 0: scores 0.6, 0.5 -> halts after block 2 (1.1 >= 0.99), remainder 0.4
    # token 1: scores 0.2, 0.3, then the last block's forced 1 -> remainder 0.5 there
    x = [np.array([[[logit(a), 1.0], [logit(b), 2.0]]], "float32") for a, b in [(0.6, 0.2), (0.5, 0.3), (0.9, 0.9)]]
    output = state = None
    for step, tokens in zip(steps, x):
        next_tokens, bias, output, state, _ = step(tokens, output, state)
    output, state = keras.ops.convert_to_numpy(output), keras.ops.convert_to_numpy(state)
    np.testing.assert_allclose(output[0, 0], 0.6 * x[0][0, 0] + 0.4 * x[1][0, 0], rtol=1e-5)
    np.testing.assert_allclose(output[0, 1], 0.2 * x[0][0, 1] + 0.3 * x[1][0, 1] + 0.5 * x[2][0, 1], rtol=1e-5)
    np.testing.assert_allclose(state[0, :, PONDER], [2 + 0.4, 3 + 0.5], rtol=1e-5)  # rho = blocks run + remainder
    np.testing.assert_array_equal(state[0, :, DEPTH], [2, 3])
    # After block 2 token 0 is masked out of attention and zeroed.
    _, bias, _, _, _ = steps[1](x[1], *steps[0](x[0])[2:4])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bias)[0, 0, 0], [MASK_BIAS, 0])


def test_losses_match_a_hand_computed_case():
    state = np.zeros((2, 3, 5), "float32")
    state[..., PONDER] = [[2.4, 3.5, 1.0], [2.0, 2.0, 3.0]]
    scores = [np.array([0.2, 0.4], "float32"), np.array([0.3, 0.3], "float32"), np.array([0.1, 0.3], "float32")]
    ponder, prior = halting_losses(state, scores, ponder_loss_weight=0.5, distribution_prior_weight=2.0)
    assert math.isclose(float(ponder), 0.5 * np.mean(state[..., PONDER]), rel_tol=1e-6)
    # The authors' target for 3 blocks centred on block 2: N(2, 1) at 0, 1, 2, blocks 0-1 summing to 0.98.
    pdf = np.exp(-0.5 * (np.arange(3) - 2.0) ** 2) / np.sqrt(2 * np.pi)
    target = pdf * 0.98 / pdf[:2].sum()
    np.testing.assert_allclose(target_distribution(3), target, rtol=1e-6)
    layer_means = np.array([0.3, 0.3, 0.2])
    distribution = np.clip(layer_means / layer_means.sum(), 0.01, 0.99)
    kl = np.sum(target * (np.log(target) - np.log(distribution))) / 3
    assert math.isclose(float(prior), 2.0 * max(kl, 0.0), rel_tol=1e-5)
    # The 12-block target of the paper peaks at block 8.
    assert int(np.argmax(target_distribution(12))) == 8


def test_a_short_fit_lowers_task_and_ponder_loss(tiny_vit, to_numpy):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=48)
    images = (rng.normal(size=(48, 16, 16, 3)) * 0.3 + labels[:, None, None, None]).astype("float32")
    model = tiny_vit(adaptive_tokens=True, ponder_loss_weight=0.05, distribution_prior_weight=0.0, **GATE)
    task = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def losses():
        logits = model(images, training=False)
        return float(to_numpy(task(labels, logits))), float(to_numpy(model.losses[0]))  # ponder alone here

    task_before, ponder_before = losses()
    model.compile(keras.optimizers.Adam(3e-3), task)
    model.fit(images, labels, batch_size=16, epochs=8, verbose=0)
    task_after, ponder_after = losses()
    assert task_after < task_before * 0.8
    assert ponder_after < ponder_before


def test_masked_tokens_do_not_change_the_others(model, images, to_numpy):
    block = model.get_layer("block_1")
    tokens = np.random.default_rng(2).normal(size=(2, 17, 64)).astype("float32")
    active = np.ones((2, 17), "float32")
    active[0, [3, 9]] = active[1, 5] = 0
    bias = ((1 - active) * MASK_BIAS)[:, None, None, :]
    changed = tokens.copy()
    changed[active == 0] = np.random.default_rng(3).normal(scale=10, size=(3, 64))
    before, after = (to_numpy(block(t, attention_bias=bias)) for t in (tokens, changed))
    np.testing.assert_array_equal(before[active == 1], after[active == 1])


@pytest.mark.parametrize("distillation", [False, True])
def test_gathered_path_equals_the_masked_path_at_batch_1_and_32(tiny_vit, randomize, distillation, to_numpy):
    """Halted tokens removed after every block, the batch run on its longest active prefix: the
    masked graph's logits and depths, for a distilled model too (its head also reads token 1)."""
    model = tiny_vit(num_layers=4, adaptive_tokens=True, distillation=distillation, halting_gate_scale=1.0,
                     halting_gate_center=1.0)  # fmt: skip
    model = randomize(model, seed=0, scale=0.3)
    images = np.random.default_rng(1).normal(size=(32, 16, 16, 3)).astype("float32")
    outputs = to_numpy(halting_model(model)(images))
    assert len(np.unique(outputs["depth"])) == 4, "the gate should halt tokens after every block"
    for batch in (1, 32):
        logits, depth = to_numpy(gathered_forward(model, images[:batch], all_tokens=True))
        np.testing.assert_allclose(logits, outputs["logits"][:batch], atol=1e-5)
        np.testing.assert_array_equal(depth, outputs["depth"][:batch])
        fast_logits, fast_depth = to_numpy(gathered_forward(model, images[:batch]))
        np.testing.assert_allclose(fast_logits, logits, atol=1e-5)
        assert np.all(fast_depth <= depth) and np.all(fast_depth[:, 0] == depth[:, 0])  # the class token ran as far
    np.testing.assert_allclose(outputs["logits"], to_numpy(model(images)), atol=1e-5)


@pytest.mark.tensorflow
def test_gathered_path_runs_in_a_tf_function_with_a_dynamic_token_axis(model, images):
    import tensorflow as tf

    compiled = tf.function(lambda x: gathered_forward(model, x)[0], reduce_retracing=True)
    np.testing.assert_allclose(compiled(images).numpy(), gathered_forward(model, images)[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(compiled(images[:1]).numpy(), gathered_forward(model, images[:1])[0].numpy(), atol=1e-5)


def test_gathered_path_keeps_the_distillation_token(tiny_vit, randomize, images, to_numpy):
    """DeiT's head_dist reads token 1: the gathered path runs it to its own halt, as the masked graph."""
    gate = dict(halting_gate_scale=1.0, halting_gate_center=2.0)  # class and distillation tokens halt apart
    model = randomize(tiny_vit(num_layers=4, distillation=True, adaptive_tokens=True, **gate), seed=0, scale=0.3)
    outputs = to_numpy(halting_model(model)(images))
    assert np.any(outputs["depth"][:, 1] > outputs["depth"][:, 0]), "the distillation token should outlive the class"
    for i in range(len(images)):
        for all_tokens in (True, False):
            logits, depth = to_numpy(gathered_forward(model, images[i : i + 1], all_tokens=all_tokens))
            np.testing.assert_allclose(logits, outputs["logits"][i : i + 1], atol=1e-5)
            np.testing.assert_array_equal(depth[0, :2], outputs["depth"][i, :2])


def test_statistics_of_depths():
    stats = halting_statistics(np.array([[1, 2, 4], [4, 4, 3]]), num_layers=4)
    assert stats == {"mean_depth": 3.0, "active_fraction": [1.0, 5 / 6, 4 / 6, 3 / 6]}


def test_keras_round_trip_in_safe_mode(model, images, tmp_path, to_numpy):
    path = str(tmp_path / "adaptive.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_numpy(loaded(images)), to_numpy(model(images)))
    assert len(loaded.losses) == 1  # the losses come back with the graph
    assert model_config(loaded) == model_config(model)
    assert model_config(loaded).adaptive_tokens and model_config(loaded).halting_gate_scale == 5.0


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(adaptive_tokens=True, pooling="gap"), "pooling='token'"),
        (dict(halting_gate_scale="10"), "halting_gate_scale"),
        (dict(ponder_loss_weight=-1.0), "ponder_loss_weight"),
        (dict(halting_target_depth=3), "halting_target_depth"),
    ],
)
def test_bad_options_name_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        keras_vit.ViTConfig.from_variant("tiny/4", image_size=16, **options)


def test_mixed_precision_keeps_the_halting_sums_in_float32(tiny_vit, images, to_numpy):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = tiny_vit(adaptive_tokens=True, **GATE)
    assert to_numpy(model(images)).dtype == np.float32 and np.isfinite(to_numpy(model.losses[0]))
    assert model.get_layer("halting_0").compute_dtype == model.get_layer("halting_loss").compute_dtype == "float32"
    assert model.get_layer("block_0").compute_dtype == "bfloat16"
