"""Training with `model.fit`: datasets, optimisers, strategies, the run, its reports.

    data.py         TFDS names, image folders and the built-in digits -> tf.data pipelines
    digits.py       the built-in dataset, as a TFDS builder (scikit-learn's 1,797 digits)
    optimizers.py   AdamW / SGD as the papers use them (Keras only; registered by `import keras_vit`)
    distribute.py   tf.distribute strategies and the multi-worker work-around
    distillation.py DeiT's hard-label distillation from a teacher (`keras-vit train --teacher`)
    train.py        `train(TrainConfig)` and `keras-vit train` / `evaluate`
    reports.py      curves and the confusion matrix

Importing this package imports nothing else: `data`, `distribute` and `train`
need TensorFlow, which the core of keras_vit does not.
"""
