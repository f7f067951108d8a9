"""DeiT hard-label distillation (`keras-vit train --teacher`): the loss, what the heads learn, what is saved."""

import json

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import run_folder
from keras_vit.model import model_config
from keras_vit.training.distillation import HardDistillation, teacher_agreement
from keras_vit.training.train import TrainConfig, evaluate, train

DIGITS = [str(i) for i in range(10)]


def _config(tmp_path, **kwargs):
    defaults = dict(
        output=str(tmp_path / "run"), variant="tiny/4", image_size=16, epochs=2, batch_size=64, verbose=0, export=False
    )
    return TrainConfig(**{**defaults, **kwargs})


@pytest.fixture
def images():
    return np.random.default_rng(0).normal(size=(96, 16, 16, 3)).astype("float32")


def _teacher(tiny_vit, randomize, images, num_classes=3):
    """A random tiny ViT whose head is centred on `images`, so that its decisions spread over the classes."""
    teacher = randomize(tiny_vit(num_classes=num_classes), seed=2, scale=0.3)
    kernel, bias = teacher.get_layer("head").get_weights()
    mean = keras.ops.convert_to_numpy(teacher(images)).mean(axis=0)
    teacher.get_layer("head").set_weights([kernel, bias - mean])
    return teacher


def _trainer(tiny_vit, teacher, num_classes=3):
    keras.utils.set_random_seed(0)
    trainer = HardDistillation(tiny_vit(num_classes=num_classes, distillation=True), teacher)
    trainer.compile(
        keras.optimizers.Adam(3e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return trainer


def _cross_entropy(labels, logits):
    logits = logits - logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(-(labels * log_p).sum(-1).mean())


def test_the_loss_is_half_true_labels_half_the_teachers(tiny_vit, randomize, images, to_numpy):
    teacher = _teacher(tiny_vit, randomize, images)
    trainer = _trainer(tiny_vit, teacher)
    randomize(trainer.student, seed=3, scale=0.2)
    y = np.eye(3, dtype="float32")[np.random.default_rng(1).integers(0, 3, len(images))]
    cls, dist = (to_numpy(t) for t in trainer(images))
    hard = np.eye(3, dtype="float32")[to_numpy(teacher(images)).argmax(-1)]
    loss = to_numpy(trainer.compute_loss(images, y, trainer(images), training=True))
    np.testing.assert_allclose(loss, 0.5 * _cross_entropy(y, cls) + 0.5 * _cross_entropy(hard, dist), rtol=1e-5)
    # Evaluation: the run's loss on the student's own output, the average of its two heads.
    loss = to_numpy(trainer.compute_loss(images, y, trainer(images), training=False))
    np.testing.assert_allclose(loss, _cross_entropy(y, (cls + dist) / 2), rtol=1e-5)
    np.testing.assert_allclose((cls + dist) / 2, to_numpy(trainer.student(images)), atol=1e-6)


def test_the_distillation_head_learns_the_teachers_labels_and_the_student_alone_is_saved(
    tiny_vit, randomize, images, to_numpy, tmp_path
):
    teacher = _teacher(tiny_vit, randomize, images)
    decisions = to_numpy(teacher(images)).argmax(-1)
    assert np.bincount(decisions, minlength=3).min() > 20  # a teacher with something to teach
    y = np.eye(3, dtype="float32")[np.random.default_rng(1).integers(0, 3, len(images))]  # unrelated to the teacher
    trainer = _trainer(tiny_vit, teacher)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    before = teacher_agreement(trainer, [(images, y)])
    trainer.fit(images, y, batch_size=32, epochs=8, verbose=0)
    after = teacher_agreement(trainer, [(images, y)])
    assert after["distillation_head"] > 0.9 > 0.6 > before["distillation_head"], (before, after)
    cls = to_numpy(trainer(images)[0])
    assert np.mean(cls.argmax(-1) == y.argmax(-1)) > 0.9  # the class head learns the true labels
    assert not teacher.trainable_variables and len(trainer.trainable_variables) == len(
        trainer.student.trainable_variables
    )
    for trained, kept in zip(teacher.get_weights(), teacher_weights):
        np.testing.assert_array_equal(trained, kept)  # frozen
    trainer.save(tmp_path / "student.keras")
    saved = keras.saving.load_model(tmp_path / "student.keras", safe_mode=True)
    assert len(saved.weights) == len(trainer.student.weights)  # no teacher inside
    np.testing.assert_allclose(to_numpy(saved(images)), to_numpy(trainer.student(images)), atol=1e-6)


def test_bad_combinations_are_refused_in_one_line(tmp_path, tiny_vit, write_run_folder):
    from keras_vit.cli import build_parser

    assert build_parser().parse_args(["train", "--teacher", "runs/teacher"]).teacher == "runs/teacher"
    three = write_run_folder(tmp_path / "three", tiny_vit(), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"^--teacher .*three.* was trained on other classes \(3: a, b, c\) than"):
        train(_config(tmp_path, teacher=str(three)))
    plain = write_run_folder(tmp_path / "plain", tiny_vit(num_classes=10), DIGITS)
    with pytest.raises(ValueError, match=r"^--teacher trains a distilled model's distillation head, and .* no dist"):
        train(_config(tmp_path, teacher=str(plain), weights=str(plain / "model.keras"), variant=None))
    bare = tmp_path / "bare.keras"
    tiny_vit(num_classes=10).save(bare)
    with pytest.raises(ValueError, match=r"^--teacher .*bare.keras has no keras_vit.json beside it"):
        train(_config(tmp_path, teacher=str(bare)))
    with pytest.raises(FileNotFoundError, match=r"^--teacher .*missing: no such run folder"):
        train(_config(tmp_path, teacher=str(tmp_path / "missing")))
    assert not (tmp_path / "run").exists()


def test_a_distilled_checkpoint_fine_tunes_with_a_teacher(tmp_path, tiny_vit, write_run_folder):
    distilled = write_run_folder(tmp_path / "distilled", tiny_vit(num_classes=4, distillation=True), list("abcd"))
    teacher = write_run_folder(tmp_path / "teacher", tiny_vit(num_classes=10), DIGITS, scaling="imagenet")
    config = _config(tmp_path, weights=str(distilled / "model.keras"), variant=None, epochs=1, teacher=str(teacher))
    results = train(config)
    assert set(results["distillation"]) == {"distillation_head", "class_head", "model"}
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
    assert model_config(saved).distillation and saved.output_shape == (None, 10)


def test_the_teacher_sees_the_batch_in_its_own_scaling_and_size(tiny_vit, to_numpy):
    from keras_vit.preprocessing import preprocessing_model
    from keras_vit.training.distillation import _teacher_input

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    student_input = to_numpy(preprocessing_model(16, "vit")(pixels))
    convert = _teacher_input(tiny_vit(image_size=8), {"scaling": "imagenet"}, (16, 16), "vit")
    expected = to_numpy(preprocessing_model(16, "imagenet")(pixels))  # the scaling first: resizing is linear
    expected = to_numpy(keras.ops.image.resize(expected, (8, 8), interpolation="bilinear", antialias=True))
    np.testing.assert_allclose(to_numpy(convert(student_input)), expected, atol=1e-4)
    assert _teacher_input(tiny_vit(), {"scaling": "vit"}, (16, 16), "vit") is None


@pytest.mark.slow
def test_keras_vit_train_teacher_writes_a_normal_run_whose_distillation_head_follows_the_teacher(tmp_path):
    """A digits teacher that says c + 1 where it thinks c: the distillation head says so too, the class head not."""
    _, teacher = train(_config(tmp_path, output=str(tmp_path / "t"), epochs=3, learning_rate=3e-3), return_model=True)
    head = teacher.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([np.roll(kernel, 1, axis=-1), np.roll(bias, 1)])
    run_folder.save(teacher, tmp_path / "teacher", labels=DIGITS, scaling="vit")
    results = train(_config(tmp_path, epochs=3, learning_rate=3e-3, teacher=str(tmp_path / "teacher")))
    agreement = results["distillation"]
    assert agreement["distillation_head"] > 0.4 and agreement["class_head"] < 0.2, agreement
    run = tmp_path / "run"
    assert json.loads((run / "results.json").read_text())["distillation"] == agreement
    for name in ("model.keras", "checkpoints/best.keras"):
        model = keras.saving.load_model(run / name, safe_mode=True)
        assert model_config(model).distillation and "head_dist" in [layer.name for layer in model.layers]
        assert len(model.weights) == len(keras_vit.build_vit(model_config(model)).weights)  # the student alone
    assert json.loads((run / "train_config.json").read_text())["teacher"] == str(tmp_path / "teacher")
    again = evaluate(str(run))
    np.testing.assert_allclose(again["accuracy"], results["test_top1"], atol=1e-6)
