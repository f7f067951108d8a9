"""Seconds of one epoch of the main job's tf.data input beside its train steps, on the current Keras backend.

    KERAS_BACKEND=jax python benchmarks/input_vs_step.py
    KERAS_BACKEND=torch python benchmarks/input_vs_step.py

tf.data feeds `fit` on every backend; this says whether it is what a run waits on: one cached
pass of the digits training pipeline read as NumPy (as Keras hands batches to JAX and torch),
then as many `train_on_batch` steps of the main job's model. A backend-neutral loader (Grain,
`keras.utils.PyDataset`) could save at most the first figure, which `fit` overlaps with the second.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402  (first: the torch backend's triton must load before TensorFlow)

import keras_vit  # noqa: E402
from keras_vit.training import data  # noqa: E402


def main():
    splits = data.load("digits")
    ds = data.pipeline(
        splits.train, image_size=32, num_classes=10, batch_size=64, training=True, augment="none", cache=True
    )
    for _ in ds:  # fills the cache, as the first epoch does
        pass
    start = time.perf_counter()
    batches = sum(1 for _ in ds.as_numpy_iterator())
    input_seconds = time.perf_counter() - start
    model = keras_vit.build_vit("tiny/4", image_size=32, num_classes=10)
    model.compile("adamw", keras.losses.CategoricalCrossentropy(from_logits=True))
    x, y = next(ds.as_numpy_iterator())
    model.train_on_batch(x, y)  # compiles
    start = time.perf_counter()
    for _ in range(batches):
        model.train_on_batch(x, y)
    step_seconds = time.perf_counter() - start
    print(
        f"{keras.backend.backend()}: tf.data epoch {input_seconds:.2f} s for {batches} batches; "
        f"{batches} train steps {step_seconds:.2f} s"
    )


if __name__ == "__main__":
    main()
