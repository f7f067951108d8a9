"""Runs `keras_vit.training.train.train` in a process of its own, for tests/training/test_distribute.py.

    python distributed_worker.py STRATEGY OUTPUT WEIGHTS.npz [TF_CONFIG-json]

`mirrored` and `one_device` see two logical CPU devices (split before TensorFlow starts);
`multi_worker` takes its cluster from the TF_CONFIG argument. Writes the final weights.
"""

import json
import os
import sys


def main(strategy, output, weights, tf_config=None):
    if tf_config:
        os.environ["TF_CONFIG"] = tf_config
    import numpy as np
    import tensorflow as tf

    if strategy != "multi_worker":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from keras_vit.training.train import TrainConfig, train

    fit = keras.Model.fit

    def record_and_fit(model, *args, **kwargs):  # the initial weights too: tells a bad start from a bad step
        np.savez(weights.replace(".npz", ".initial.npz"), *model.get_weights())
        return fit(model, *args, **kwargs)

    keras.Model.fit = record_and_fit  # `train` builds, compiles, then fits once: the weights it starts from

    config = TrainConfig(
        output=output,
        strategy=strategy,
        variant="tiny/4",
        image_size=16,
        epochs=2,
        batch_size=32,
        shuffle=False,
        verbose=0,
        export=False,  # the strategies' training is under test; the export of a run has its own tests
    )
    results, model = train(config, return_model=True)
    np.savez(weights, *model.get_weights())
    print(json.dumps({"replicas": model.distribute_strategy.num_replicas_in_sync, **results}))


if __name__ == "__main__":
    main(*sys.argv[1:])
