"""The optimisers as the papers use them: weight decay, the warmup + cosine schedule, the fine-tuning recipe.

`_use_weight_decay` and `_learning_rate` are Keras' own attributes (Keras has no public way to ask
which variables decay, and `learning_rate` evaluates a schedule rather than returning it).
"""

import numpy as np
import pytest

from keras_vit.training import optimizers


def test_weight_decay_skips_biases_norms_position_embedding_and_class_token(tiny_vit):
    model = tiny_vit()
    optimizer = optimizers.make_optimizer("adamw", learning_rate=1e-3, total_steps=10, warmup_steps=2)
    optimizer.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert "block_0/mlp_dense_1/kernel" in decayed and "patch_embedding/projection/kernel" in decayed
    assert "block_0/attention/qkv/kernel" in decayed and "head/kernel" in decayed
    for path in (
        "block_0/mlp_dense_1/bias",
        "block_0/norm_1/gamma",
        "encoder_norm/beta",
        "position_embedding/embedding",
        "class_token/token",
    ):
        assert path not in decayed, path
    assert optimizer.global_clipnorm == 1.0


def test_schedule_warms_up_linearly_then_decays_to_zero():
    optimizer = optimizers.make_optimizer("sgd", learning_rate=0.1, total_steps=100, warmup_steps=10)
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    np.testing.assert_allclose(rates, [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-6)
    assert optimizer.momentum == 0.9 and optimizer.global_clipnorm == 1.0


def test_fine_tune_recipe_is_the_papers():
    recipe = optimizers.FINE_TUNE_RECIPE
    optimizer = recipe.optimizer(0.03, total_steps=1000)
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    assert optimizer.momentum == 0.9 and optimizer.global_clipnorm == 1.0 and not optimizer.weight_decay
    rates = [float(schedule(step)) for step in (0, 50, 100, 550, 1000)]
    assert rates[0] == 0 and rates[1] == pytest.approx(0.015) and rates[2] == pytest.approx(0.03)
    assert rates[3] == pytest.approx(0.015, rel=1e-3) and rates[4] == pytest.approx(0.0, abs=1e-7)


def test_layer_depth_puts_the_embedding_at_0_each_block_at_its_index_plus_1_and_the_head_last(tiny_vit):
    model = tiny_vit(distillation=True, num_register_tokens=2, pre_norm=True)  # 2 blocks
    depths = {v.path: optimizers.layer_depth(v.path, 2) for v in model.trainable_variables}
    for path in ("patch_embedding/projection/kernel", "class_token/token", "distillation_token/token",
                 "register_tokens/tokens", "position_embedding/embedding", "pre_norm/gamma"):  # fmt: skip
        assert depths[path] == 0, path
    assert depths["block_0/attention/qkv/kernel"] == 1 and depths["block_1/mlp_dense_2/bias"] == 2
    for path in ("encoder_norm/gamma", "head/kernel", "head_dist/bias"):
        assert depths[path] == 3, path


@pytest.mark.parametrize("recipe", ["sgd", "adamw"])
def test_layer_decay_scales_each_variables_step_as_computed_by_hand(tiny_vit, randomize, recipe):
    """One step: lr * decay^(L + 1 - depth) per variable, weight decay scaled alike (AdamW's is lr-coupled)."""
    model = randomize(tiny_vit())
    variables = model.trainable_variables
    lr, decay, weight_decay, b1, b2, eps = 0.1, 0.5, 0.05, 0.9, 0.999, 1e-7
    if recipe == "sgd":
        optimizer = optimizers.SGD(lr, layer_decay=decay, num_layers=2)
    else:
        optimizer = optimizers.AdamW(lr, weight_decay=weight_decay, layer_decay=decay, num_layers=2, epsilon=eps)
        optimizer.exclude_from_weight_decay(var_names=optimizers.NO_WEIGHT_DECAY)
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
    before = [np.array(v.numpy()) for v in variables]
    optimizer.apply(grads, variables)
    for v, g, old in zip(variables, grads, before):
        rate = lr * decay ** (3 - optimizers.layer_depth(v.path, 2))  # head 1x, blocks 0.5x, 0.25x; embedding 0.125x
        assert optimizer.learning_rate_multiplier(v) == pytest.approx(rate / lr)
        if recipe == "sgd":
            expected = old - rate * g
        else:  # Adam's first step, after the decoupled weight decay
            decayed = optimizer._use_weight_decay(v)
            m, s = (1 - b1) * g, (1 - b2) * g * g
            step = rate * np.sqrt(1 - b2) / (1 - b1) * m / (np.sqrt(s) + eps)
            expected = old * (1 - weight_decay * rate if decayed else 1) - step
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=v.path)


def test_layer_decay_survives_the_config_round_trip_and_refuses_bad_values():
    optimizer = optimizers.make_optimizer(
        "adamw", learning_rate=1e-3, total_steps=10, warmup_steps=2, layer_decay=0.75, num_layers=12
    )
    clone = optimizers.AdamW.from_config(optimizer.get_config())
    assert (clone.layer_decay, clone.num_layers) == (0.75, 12)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"layer_decay=.* must be in \(0, 1\]"):
            optimizers.SGD(0.1, layer_decay=bad, num_layers=12)
