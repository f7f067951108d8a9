"""The tf.distribute strategies `keras-vit train --strategy` names, and a Keras work-around for several workers."""

import os

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer  # private: the #20585 work-around patches it

from keras_vit.training.settings import STRATEGIES  # declared with the flag


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
