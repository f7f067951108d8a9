"""DeiT's hard-label distillation from a teacher: `keras-vit train --teacher RUN`.

    student = keras_vit.build_vit("tiny/4", image_size=32, num_classes=10, distillation=True)
    trainer = HardDistillation(student, teacher)  # teacher: a trained model with the same classes
    trainer.compile(optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    trainer.fit(images, one_hot_labels)           # trains the student; trainer.save writes the student

Touvron et al. 2021 ("Training data-efficient image transformers & distillation
through attention", hard-label distillation): a distilled ViT has a distillation
token with its own head (`head_dist`). The class head learns the true labels,
the distillation head the teacher's hard decisions, the argmax of the teacher's
logits on the same augmented batch:

    loss = 1/2 loss(class head, y) + 1/2 CE(distillation head, argmax teacher(x))

`loss` is the run's own (label smoothing, MixUp's mixed labels); the teacher's
label is taken as it is, as in DeiT's code. The model's output stays what it is
at inference, the average of the two heads: metrics, validation loss and
`evaluate` read it. The teacher is frozen and not part of what is saved.

Legend: `B` batch, `C` classes, `(H, W)` image size.
"""

import os

import keras
from keras import ops

from keras_vit import run_folder
from keras_vit.model import model_config
from keras_vit.preprocessing import SCALINGS


class HardDistillation(keras.Model):
    """A distilled student and a frozen teacher, for `fit`: DeiT's hard-label distillation loss.

    `call` returns both heads' logits `(class, distillation)`, each `(B, C)`;
    `compute_loss` adds the two cross-entropies (training) or applies the
    compiled loss to their average, the student's output (evaluation);
    `compute_metrics` reads the average. `save` writes the student alone, so a
    checkpoint callback saves the model the run is about.

    Args:
        student: a `build_vit` model with `distillation=True` and its heads.
        teacher: a trained `keras.Model` with the student's classes, from
            images `(B, H, W, C)` to logits `(B, C)`.
        teacher_input: a function from the student's input to the teacher's
            (another pixel scaling or size), or `None` for the same input.
            Defaults to `None`.
    """

    def __init__(self, student, teacher, teacher_input=None, **kwargs):
        check_student(student)
        super().__init__(**{"name": f"{student.name}_distillation", **kwargs})
        self.student = student
        # The student's graph up to its two heads: the same layers (and weights), before they are averaged.
        self.heads = keras.Model(student.inputs, student.get_layer("head_average").input, name=f"{student.name}_heads")
        self.teacher = teacher
        self.teacher.trainable = False
        self.teacher_input = teacher_input
        self.distillation_loss = keras.losses.CategoricalCrossentropy(from_logits=True)

    def build(self, input_shape):
        pass  # the student and the teacher come built

    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """Keras' `compile`, once; `loss` (the class head's, and evaluation's) and `metrics` read the averaged logits."""
        self.task_loss = loss
        self.task_metrics = list(metrics or [])  # tracked (reset each epoch, logged) as the model's own metrics
        super().compile(optimizer=optimizer, **kwargs)
        # Built from here on (state added later is refused): Keras' BackupAndRestore refuses an unbuilt model.
        self.build(self.student.input_shape)

    def call(self, images, training=False):
        return tuple(self.heads(images, training=training))  # (class (B, C), distillation (B, C))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        cls, dist = y_pred
        if training:
            teacher = ops.stop_gradient(self.teacher_logits(x))
            hard = ops.one_hot(ops.argmax(teacher, axis=-1), ops.shape(dist)[-1])  # (B, C): the teacher's decision
            loss = 0.5 * self.task_loss(y, cls, sample_weight) + 0.5 * self.distillation_loss(hard, dist, sample_weight)
        else:
            loss = self.task_loss(y, average(y_pred), sample_weight)
        for extra in self.losses:  # the student's own add_loss terms (A-ViT's halting losses)
            loss = loss + ops.cast(ops.sum(extra), loss.dtype)
        return loss

    def teacher_logits(self, images):
        """The frozen teacher's float32 logits `(B, C)` on the student's input `(B, H, W, C)`."""
        inputs = images if self.teacher_input is None else self.teacher_input(images)
        return ops.cast(self.teacher(inputs, training=False), "float32")

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logits = average(y_pred)
        for metric in self.task_metrics:
            metric.update_state(y, logits, sample_weight)
        return self.get_metrics_result()

    def save(self, filepath, *args, **kwargs):
        """Saves the student alone: the model the run trains (the teacher only teaches)."""
        return self.student.save(filepath, *args, **kwargs)


def teacher_agreement(trainer, dataset):
    """How often the student follows its teacher on a batched `(images, labels)` dataset.

    Returns:
        `{"distillation_head", "class_head", "model"}`: the share of images
        whose top class from that head (`model`: their average) is the teacher's.
    """
    agree, total = {"distillation_head": 0, "class_head": 0, "model": 0}, 0
    for images, _ in dataset:
        cls, dist = (ops.convert_to_numpy(logits) for logits in trainer(images, training=False))
        teacher = ops.convert_to_numpy(trainer.teacher_logits(images)).argmax(-1)
        for name, logits in (("distillation_head", dist), ("class_head", cls), ("model", cls + dist)):
            agree[name] += int((logits.argmax(-1) == teacher).sum())
        total += len(teacher)
    return {name: count / total for name, count in agree.items()}


def average(y_pred):
    """The student's output: the mean of its two heads' logits, as its `head_average` layer computes."""
    cls, dist = y_pred
    return (cls + dist) / 2.0


def check_student(student):
    """A `ValueError` unless `student` has DeiT's distillation token and both heads."""
    config = model_config(student)
    if not config.distillation:
        raise ValueError(
            f"--teacher trains a distilled model's distillation head, and {student.name!r} has no distillation "
            "token: train from scratch (--teacher adds one), or fine-tune a distilled checkpoint (e.g. DeiT's "
            "*_distilled_* models)."
        )
    if not config.include_top:
        raise ValueError(f"{student.name!r} has no heads (include_top=False); build it with num_classes.")


def load_teacher(path, labels, image_size, scaling):
    """`(teacher, teacher_input)` from a run folder or its `.keras` file, checked against the student's data.

    Args:
        path: a `keras-vit train` run folder, or a `.keras` file with its `keras_vit.json` beside it.
        labels: the dataset's class names, in order: the teacher's must be the same.
        image_size: `(H, W)` of the student's input.
        scaling: the student's pixel scaling (a `keras_vit.preprocessing.SCALINGS` key).

    Returns:
        The model, and `None` or a function mapping the student's input to the
        teacher's (its own pixel scaling; resized, antialiased, to its size).
    """
    if run_folder.model_path(path) is None:
        raise FileNotFoundError(
            f"--teacher {path}: no model there; give a run folder of `keras-vit train` or its model.keras."
        )
    if not run_folder.has_metadata(path):
        raise ValueError(
            f"--teacher {path} has no {run_folder.METADATA} beside it, so its classes cannot be checked against "
            "the dataset's: give the run folder `keras-vit train` wrote."
        )
    teacher, metadata, _ = run_folder.load_model(path)
    if list(metadata["labels"]) != list(labels):
        raise ValueError(
            f"--teacher {path} was trained on other classes ({_names(metadata['labels'])}) than the dataset's "
            f"({_names(labels)}): the teacher must have the same classes, in the same order."
        )
    teacher_config = model_config(teacher)
    if teacher_config.adaptive_tokens:
        raise ValueError(
            f"--teacher {path} has adaptive tokens (A-ViT), whose halting losses would join the student's: "
            "use a teacher without them."
        )
    return teacher, _teacher_input(teacher, metadata, tuple(image_size), scaling)


def _names(labels):
    labels = [str(label) for label in labels]
    return f"{len(labels)}: {', '.join(labels[:5])}{', ...' if len(labels) > 5 else ''}"


def _teacher_input(teacher, metadata, image_size, scaling):
    """`None` when the teacher takes the student's input as it is, else the function converting it."""
    takes_any_size = None in teacher.input_shape[1:3]
    size = image_size if takes_any_size else tuple(teacher.input_shape[1:3])
    (mean, std), (teacher_mean, teacher_std) = SCALINGS[scaling], SCALINGS[metadata["scaling"]]
    if size == image_size and scaling == metadata["scaling"]:
        return None
    # x = (p - mean) / std  ->  (p - teacher_mean) / teacher_std, per channel
    a = [s / t for s, t in zip(std, teacher_std)]
    b = [(m - tm) / t for m, tm, t in zip(mean, teacher_mean, teacher_std)]

    def teacher_input(images):
        x = images * ops.convert_to_tensor(a, images.dtype) + ops.convert_to_tensor(b, images.dtype)
        if size != image_size:
            x = ops.image.resize(x, size, interpolation="bilinear", antialias=True)
        return x  # (B, teacher H, teacher W, C)

    return teacher_input


def check_teacher_path(path):
    """A `--teacher` that is not on disk fails before any image is decoded."""
    if not os.path.exists(os.path.expanduser(path)):
        raise FileNotFoundError(f"--teacher {path}: no such run folder or .keras file.")
