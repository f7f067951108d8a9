"""`keras-vit train` over several devices and machines on JAX, through `keras.distribution`.

`--data-parallel` replicates the model on every device and splits each batch
(`keras.distribution.DataParallel`, JAX's counterpart of `MirroredStrategy`); it is on by default
when JAX sees several devices. `--model-parallel N` shards the weights over N devices as
`keras_vit.get_layout_map` says (`ModelParallel`), with the rest of the devices splitting the
batch. Several machines (processes) join with `--coordinator-address`, `--num-processes` and
`--process-id`, or Keras' environment variables `KERAS_DISTRIBUTION_JOB_ADDRESSES`,
`KERAS_DISTRIBUTION_NUM_PROCESSES` and `KERAS_DISTRIBUTION_PROCESS_ID`
(`keras.distribution.initialize`, which calls `jax.distributed.initialize`). Keras 3.15
distributes this way on JAX only; TensorFlow keeps `--strategy` (`training/distribute.py`).
"""

import os
import sys

import keras

from keras_vit.distribution import check_layout, get_layout_map

# Where and how a run computes, not what: never stored in the run folder, never compared on --resume.
WHERE_FLAGS = ("data_parallel", "model_parallel", "coordinator_address", "num_processes", "process_id")
_PROCESS_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES")


def check_flags(config):
    """A flag the backend cannot honour is a one-line error, before any image is decoded."""
    backend = keras.backend.backend()
    if config.model_parallel < 1:
        raise ValueError(f"--model-parallel {config.model_parallel} must be >= 1 (1: off).")
    asked = [
        flag
        for flag, given in (
            ("--model-parallel", config.model_parallel > 1),
            ("--data-parallel", config.data_parallel),
            ("--coordinator-address", config.coordinator_address),
        )
        if given
    ]
    if asked and backend != "jax":
        raise ValueError(
            f"{' and '.join(asked)} use keras.distribution, which Keras runs on JAX only: set KERAS_BACKEND=jax"
            + (
                "; on TensorFlow, --strategy mirrored or multi_worker splits the batch."
                if backend == "tensorflow"
                else "."
            )
        )
    if config.model_parallel > 1 and (config.coordinator_address or os.environ.get(_PROCESS_VARIABLES[0])):
        raise ValueError(
            "--model-parallel runs within one machine here; with several processes use --data-parallel "
            "(a run's weights sharded across machines cannot yet be saved by one of them)."
        )
    if config.strategy != "auto" and backend != "tensorflow":
        raise ValueError(
            f"--strategy {config.strategy} is a tf.distribute strategy (KERAS_BACKEND=tensorflow); on JAX, "
            "--data-parallel and --model-parallel split the work."
        )


def initialize_processes(config):
    """Joins the other processes of a multi-machine run; returns `(process index, process count)`.

    From the flags, else from Keras' environment variables; `(0, 1)` when neither is given.
    Must run before JAX computes anything.
    """
    if keras.backend.backend() != "jax":
        return 0, 1
    if not config.coordinator_address and not all(name in os.environ for name in _PROCESS_VARIABLES):
        return 0, 1
    if config.coordinator_address and (config.num_processes is None or config.process_id is None):
        raise ValueError("--coordinator-address needs --num-processes and --process-id (this machine's, from 0).")
    import jax

    keras.distribution.initialize(config.coordinator_address, config.num_processes, config.process_id)
    index, count = jax.process_index(), jax.process_count()
    print(f"keras-vit train: process {index} of {count}, {jax.local_device_count()} local devices")
    return index, count


def make_distribution(config, architecture=None):
    """The `keras.distribution` the run uses on JAX, or `None` (one device, or another backend).

    `architecture` (the `ViTConfig`, when known before building) lets the layout map leave
    whole a dimension the model-parallel size does not divide.
    """
    if keras.backend.backend() != "jax":
        return None
    devices = keras.distribution.list_devices()
    data_parallel = config.data_parallel if config.data_parallel is not None else len(devices) > 1
    if config.model_parallel > 1:
        if len(devices) % config.model_parallel:
            raise ValueError(
                f"--model-parallel {config.model_parallel} does not divide the {len(devices)} devices JAX sees."
            )
        replicas = len(devices) // config.model_parallel
        _check_batch(config.batch_size, replicas)
        mesh = keras.distribution.DeviceMesh((replicas, config.model_parallel), ("batch", "model"), devices)
        layout_map = get_layout_map(mesh, "model", "batch", config=architecture)
        _say(f"model parallel: weights sharded over {config.model_parallel} devices, the batch over {replicas}")
        return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    if not data_parallel or len(devices) == 1:
        return None
    _check_batch(config.batch_size, len(devices))
    automatic = "" if config.data_parallel else " (--no-data-parallel: one device)"
    _say(f"data parallel over {len(devices)} devices, {config.batch_size // len(devices)} images each{automatic}")
    return keras.distribution.DataParallel(devices=devices)


def local_copy(model, processes):
    """After a multi-process run, makes each process's weights its own, so the chief alone can save.

    Data parallel replicates every variable on every device of every process: each process
    already holds the whole value, but as one global array that no process may read alone (and
    any computation on it needs every process). The variables take their local copy instead,
    with no layout, and the distribution is turned off; the other processes then stop.
    """
    if processes < 2:
        return
    import numpy as np

    keras.distribution.set_distribution(None)
    optimizer = getattr(model, "optimizer", None)
    for variable in model.variables + (list(optimizer.variables) if optimizer else []):
        value = variable.value
        if not getattr(value, "is_fully_addressable", True):
            variable._layout = None  # private: the global layout would put the local value back on every process
            variable.assign(np.asarray(value.addressable_data(0)))


def check_sharded(model, distribution):
    """Under model parallelism, refuses a model whose large kernels stayed whole (a renamed layer)."""
    if isinstance(distribution, keras.distribution.ModelParallel):
        check_layout(model)


def _check_batch(batch_size, replicas):
    if batch_size % replicas:
        raise ValueError(
            f"--batch-size {batch_size} does not split evenly over {replicas} model replicas; "
            f"use a multiple of {replicas}."
        )


def _say(line):
    print(f"keras-vit train: {line}", file=sys.stdout, flush=True)
