"""Optimisers as the papers use them, and the tf.distribute strategies.

- `"adamw"` (from scratch, ViT paper / DeiT / AugReg): AdamW, linear warmup
  then cosine decay to zero, no weight decay on biases, LayerNorm scales and
  offsets, the position embedding or the class token; global gradient-norm
  clipping at 1.0.
- `"sgd"` (fine-tuning, ViT paper appendix B.1.1): SGD with momentum 0.9, no
  weight decay, the same clipping, warmup and cosine decay.
"""

import os

import keras
import tensorflow as tf

RECIPES = ("adamw", "sgd")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
# Variable names (regex) exempt from weight decay: biases, LayerNorm gamma/beta,
# the position embedding ("embedding") and the class token ("token").
NO_WEIGHT_DECAY = ["bias", "gamma", "beta", "embedding", "token"]


def make_optimizer(recipe, *, learning_rate, total_steps, warmup_steps, weight_decay=0.05, clipnorm=1.0):
    """Builds the recipe's optimiser with a warmup + cosine learning-rate schedule."""
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe={recipe!r}; expected one of {RECIPES}.")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate={learning_rate} must be positive.")
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup_steps, 1),
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )
    if recipe == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, global_clipnorm=clipnorm)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay, global_clipnorm=clipnorm)
    optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    return optimizer


def make_strategy(name="auto"):
    """Returns the `tf.distribute` strategy for `--strategy NAME`.

    `auto`: `MirroredStrategy` over several GPUs, else the default strategy.
    `multi_worker` reads the cluster from `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy={name!r}; expected one of {STRATEGIES}.")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multi_worker needs TF_CONFIG describing the cluster (see the README).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
