"""Optimisers as the papers use them.

- `"adamw"` (from scratch, ViT paper / DeiT / AugReg): AdamW, linear warmup
  then cosine decay to zero, no weight decay on biases, LayerNorm scales and
  offsets, the position embedding or the class token; global gradient-norm
  clipping at 1.0.
- `"sgd"` (fine-tuning, ViT paper appendix B.1.1): SGD with momentum 0.9, no
  weight decay, the same clipping, warmup and cosine decay (`FINE_TUNE_RECIPE`).

Keras only: `import keras_vit` registers these optimisers (trained models are
saved with them) on every backend. TensorFlow is imported only on its own
backend, where the replicas of a `tf.distribute` strategy exist.
"""

import dataclasses

import keras

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
else:  # no tf.distribute replicas on the other backends
    tf = None

RECIPES = ("adamw", "sgd")
# Variable names (regex) exempt from weight decay: biases, LayerNorm gamma/beta,
# the position embedding ("embedding") and the class token ("token").
NO_WEIGHT_DECAY = ["bias", "gamma", "beta", "embedding", "token"]


def _replicas():
    if tf is None or not tf.distribute.has_strategy():
        return 1
    return tf.distribute.get_strategy().num_replicas_in_sync


class _ClipAfterAllReduce:
    """Global-norm clipping of the summed gradients under several replicas.

    Keras 3's TensorFlow optimizers clip each replica's partial gradient before
    the all-reduce (`BaseOptimizer.apply` calls `_clip_gradients`, then
    `TFOptimizer._backend_update_step` calls `_all_reduce_sum_gradients`), so
    under `MirroredStrategy` `global_clipnorm=1.0` clips something else than
    on one device and the runs diverge (tf.keras once disabled clipping under
    strategies for this reason: tensorflow/tensorflow#33929). This moves the
    clip after the sum. Private hooks, checked on Keras 3.10-3.15.
    """

    def _clip_gradients(self, grads):
        if _replicas() > 1 and tf.distribute.in_cross_replica_context() is False:
            return grads  # clipped once summed, below
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        summed = list(super()._all_reduce_sum_gradients(grads_and_vars))
        if _replicas() > 1 and self.global_clipnorm:
            grads, _ = tf.clip_by_global_norm([g for g, _ in summed], self.global_clipnorm)
            summed = [(g, v) for g, (_, v) in zip(grads, summed)]
        return summed


@keras.saving.register_keras_serializable(package="keras_vit")
class AdamW(_ClipAfterAllReduce, keras.optimizers.AdamW):
    """Keras' AdamW, clipping correctly under several replicas."""


@keras.saving.register_keras_serializable(package="keras_vit")
class SGD(_ClipAfterAllReduce, keras.optimizers.SGD):
    """Keras' SGD, clipping correctly under several replicas."""


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
        return SGD(schedule, momentum=0.9, global_clipnorm=clipnorm)
    optimizer = AdamW(schedule, weight_decay=weight_decay, global_clipnorm=clipnorm)
    optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    return optimizer


@dataclasses.dataclass(frozen=True)
class FineTuneRecipe:
    """The ViT paper's fine-tuning setup (Dosovitskiy et al. 2020, Appendix B.1.1).

    SGD with momentum 0.9, no weight decay, gradients clipped at global norm 1,
    a short linear warmup then cosine decay to zero, batch 512. The paper
    sweeps the learning rate over `learning_rates` and fine-tunes at a higher
    resolution than pre-training (384 for the ImageNet results).
    """

    momentum: float = 0.9
    weight_decay: float = 0.0
    global_clipnorm: float = 1.0
    warmup_steps: int = 500  # the original code's fine-tuning configs
    batch_size: int = 512
    learning_rates: tuple = (0.001, 0.003, 0.01, 0.03)
    steps: int = 20_000  # ImageNet; the paper uses 500-10k for the smaller transfer sets

    def optimizer(self, learning_rate, total_steps=None):
        """A `keras.optimizers.SGD` following the recipe (warmup, then cosine to 0)."""
        total_steps = total_steps or self.steps
        return make_optimizer(
            "sgd",
            learning_rate=learning_rate,
            total_steps=total_steps,
            warmup_steps=min(self.warmup_steps, max(total_steps // 10, 1)),
            clipnorm=self.global_clipnorm,
        )


FINE_TUNE_RECIPE = FineTuneRecipe()
