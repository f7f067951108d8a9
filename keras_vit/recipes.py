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


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync if tf.distribute.has_strategy() else 1


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


def make_strategy(name="auto"):
    """Returns the `tf.distribute` strategy for `--strategy NAME`.

    `auto`: `MirroredStrategy` over several GPUs, else the default strategy.
    `multi_worker` reads the cluster from `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy={name!r}; expected one of {STRATEGIES}.")
    gpus = tf.config.list_physical_devices("GPU")  # physical: listing logical ones starts the runtime
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


# keras-team/keras#20585 (open): Keras' TensorFlow trainer fails under MultiWorkerMirroredStrategy
# with several workers, twice:
# 1. `fit` first builds the model from one batch (`TensorFlowTrainer._maybe_symbolic_build`) and
#    takes a per-worker batch it cannot reduce across workers. The build needs only shapes: we
#    hand it a plain local batch, on this model instance.
# 2. Each step's logs go through `reduce_per_replica`, which averages across workers with
#    `strategy.reduce("MEAN", v, axis=0)`; the losses and metrics are scalars, so it fails. We wrap
#    that function to reduce scalars with `axis=None` (the average across workers, as on one
#    worker), only under a multi-worker strategy.
# Checked on these Keras versions; on others nothing is patched.
_MULTI_WORKER_FIX_CHECKED = ("3.10.", "3.11.", "3.12.", "3.13.", "3.14.", "3.15.")


def several_workers(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._num_workers > 1  # no public count of workers
    )


def worker_role(strategy):
    """`(is_chief, worker_index)`: the chief writes a run's files. `(True, 0)` on one worker."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not several_workers(strategy) or resolver is None:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief), task_id


def patch_multi_worker_fit(model, strategy, dataset):
    """Works around keras-team/keras#20585 for `model.fit` on `dataset`; True if patched.

    Takes one local batch of `dataset` only when it patches (several workers).
    """
    if not several_workers(strategy) or not keras.version().startswith(_MULTI_WORKER_FIX_CHECKED):
        return False
    from keras.src.backend.tensorflow import trainer as tf_trainer

    sample_batch = next(iter(dataset))

    def build_from_sample(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=sample_batch)

    model._maybe_symbolic_build = build_from_sample
    if not getattr(tf_trainer.reduce_per_replica, "keras_vit_patched", False):
        original = tf_trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):
            if reduction not in ("auto", "mean") or not several_workers(strategy):
                return original(values, strategy, reduction)

            def reduce(value):
                if value.shape.rank == 0:
                    return strategy.reduce("MEAN", value, axis=None)
                return original(value, strategy, reduction)

            return tf.nest.map_structure(reduce, values)

        reduce_per_replica.keras_vit_patched = True
        tf_trainer.reduce_per_replica = reduce_per_replica
    return True
