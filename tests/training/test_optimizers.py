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
