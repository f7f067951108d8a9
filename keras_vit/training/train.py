"""Training with `model.fit`: `keras_vit.training.train.train(TrainConfig(...))` and `keras-vit train`.

A run writes its folder as `keras_vit.run_folder` describes: the model and its
`keras_vit.json`, results, history and curves, the best checkpoint, the backup
`--resume` continues from, TensorBoard logs and the export.
"""

import contextlib
import dataclasses
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_vit import files, lora, run_folder
from keras_vit.builders import build_from_checkpoint, build_vit
from keras_vit.checkpoints import find_checkpoint
from keras_vit.checkpoints.registry import not_found
from keras_vit.config import ViTConfig, parse_variant
from keras_vit.deploy.export import export_model
from keras_vit.model import model_config
from keras_vit.training import data, distillation, distribute, optimizers, parallel
from keras_vit.training.reports import (
    per_class_metrics,
    plot_confusion_matrix,
    plot_curves,
    predicted_classes,
    read_history,
)
from keras_vit.training.settings import PRECISIONS, TrainConfig
from keras_vit.views.adaptive import halting_model, halting_statistics


def resolve(config):
    """Fills the fields left `None` with the defaults for training from scratch or fine-tuning."""
    fine_tune = bool(config.weights)
    recipe = config.recipe or ("sgd" if fine_tune else "adamw")
    # The default model from scratch (the main job: tiny/4 on 1,257 digits) learns its training set by
    # epoch 24 and then overfits: with dropout and stochastic depth 0.1 its test top-1 rose from
    # 96.9-97.8% to 97.5-99.2% over three backends and seeds (docs/training.md, "The main job").
    regularized = not fine_tune and config.variant is None
    dropout = config.dropout_rate if config.dropout_rate is not None else (0.1 if regularized else None)
    return dataclasses.replace(
        config,
        variant=config.variant or (None if fine_tune else "tiny/4"),
        image_size=config.image_size if config.image_size is not None else (None if fine_tune else 32),
        recipe=recipe,
        learning_rate=config.learning_rate if config.learning_rate is not None else (0.01 if recipe == "sgd" else 2e-3),
        warmup_epochs=config.warmup_epochs if config.warmup_epochs is not None else (1.0 if fine_tune else 2.0),
        # A frozen backbone runs as trained: its dropout would only add noise to the probe's features.
        dropout_rate=0.0 if config.freeze_backbone and config.dropout_rate is None else dropout,
        drop_path_rate=config.drop_path_rate if config.drop_path_rate is not None else (0.1 if regularized else 0.0),
    )


def train(config, return_model=False):
    """Trains, evaluates on the test split and saves; returns the results dict (and the model).

    Under a multi-worker strategy every worker calls this with the same config; the chief
    writes the run folder, each other worker only its own `backup/worker_<i>/`. The run folder
    is locked while this runs (`run_folder.lock`): a second `train` into it is refused.
    """
    config = dataclasses.replace(config, output=output_folder(config))
    try:
        return _train(config, return_model)
    finally:
        run_folder.unlock(config.output)
        keras.distribution.set_distribution(None)


def output_folder(config):
    """`config.output`, or the default folder named after the dataset (and the model, unless the default)."""
    return config.output or run_folder.default_output(config.dataset, config.variant or config.weights)


def _train(config, return_model):
    parallel.check_flags(config)
    strategy = distribute.make_strategy(config.strategy)  # first: multi-worker set-up precedes any TF op
    chief, worker = distribute.worker_role(strategy)
    process, processes = parallel.initialize_processes(config)  # JAX's multi-machine set-up, likewise
    if processes > 1:
        chief, worker = process == 0, process
    if config.resume:
        config = _resumed_config(config)
    requested = config  # what the run folder stores, for --resume
    config = resolve(config)
    _check(config)
    if chief:  # before any image is decoded: an output that cannot be written is the cheapest mistake
        run_folder.check_output(config.output, config.overwrite, config.resume)
    data.prepare(config.dataset, data_dir=config.data_dir)  # before seeding: a first build draws random numbers
    keras.utils.set_random_seed(config.seed)
    keras.config.set_dtype_policy(config.precision)
    if config.precision == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        print("keras-vit train: note: mixed_float16 runs several times slower than float32 on a CPU", file=sys.stderr)
    splits = data.load(
        config.dataset,
        data_dir=config.data_dir,
        bad_files=config.bad_files,
        validation_fraction=config.val_fraction,
        seed=config.seed,
    )
    _hint_small_from_scratch(config, splits.sizes["train"])
    if config.batch_size > splits.sizes["train"]:
        raise ValueError(
            f"--batch-size {config.batch_size} is larger than the {splits.sizes['train']} training "
            "images; use a smaller batch size."
        )
    distribution = parallel.make_distribution(config, None if config.weights else _architecture(config, splits))
    keras.distribution.set_distribution(distribution)  # fit, evaluate and predict run under it; None: off
    with strategy.scope():
        model, scaling, architecture = _build_model(config, splits)
        parallel.check_sharded(model, distribution)
        if config.freeze_backbone:
            freeze_backbone(model)
            trained = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
            print(
                f"keras-vit train: --freeze-backbone: training the head's {trained:,} of {model.count_params():,} parameters"
            )
        if config.lora:
            _enable_lora(model, config)
        # What fit trains: the model, or with --teacher the model and its teacher (the model alone is saved).
        fitted = _distillation(model, config, splits, architecture, scaling) if config.teacher else model
        steps = splits.sizes["train"] // config.batch_size  # the training pipeline drops the remainder
        _compile(fitted, config, total_steps=steps * config.epochs, warmup_steps=int(config.warmup_epochs * steps))
    config = dataclasses.replace(
        config, image_size=list(architecture.image_size), scaling=scaling, variant=architecture.variant
    )
    first_epoch = run_folder.epochs_done(config.output) if config.resume else 0  # where BackupAndRestore goes on
    train_ds, val_ds, test_ds = _pipelines(config, splits, first_epoch, whole_batches=processes > 1)
    distribute.patch_multi_worker_fit(fitted, strategy, train_ds)
    if chief and not config.resume:  # only once every input checked out
        run_folder.start(config.output, _stored(requested), overwrite=config.overwrite)
    elif chief:
        run_folder.lock(config.output)
        _say_where_it_resumes(config)
    start = time.perf_counter()
    if config.resume and run_folder.fit_finished(config.output):  # killed after fit, while saving or exporting
        # The optimizer built first, so the saved model loads whole (its optimizer state too) and is
        # saved again whole: an unbuilt one is saved without its variables, and every later load
        # of model.keras (the export's) warns that it skips them.
        fitted.optimizer.build(fitted.trainable_variables)
        model.load_weights(os.path.join(config.output, run_folder.MODEL))
        start = None
    else:
        history = fitted.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            steps_per_epoch=steps,  # train_ds holds every epoch left, back to back
            callbacks=[EpochSeeds(config.seed)]
            + _callbacks(
                config.output,
                chief,
                worker if distribute.several_workers(strategy) or processes > 1 else None,
                lockstep=processes > 1,
            )
            + _early_stopping(config.early_stopping, start_from_epoch=math.ceil(config.warmup_epochs))
            + ([_TimeLeft()] if chief and _verbosity(config.verbose) else []),
            class_weight=_class_weights(config.class_weights, splits),
            shuffle=False,  # tf.data shuffles, with the seed
            verbose=_verbosity(config.verbose),
        )
        _check_not_diverged(history.history.get("loss", []), config.output)
    if config.freeze_backbone:  # saved trainable, as a built model is (Keras restores frozen blocks only in part)
        freeze_backbone(model, frozen=False)
    seconds = None if start is None else time.perf_counter() - start
    metrics = fitted.evaluate(test_ds, return_dict=True, verbose=0)
    parallel.local_copy(model, processes)
    results = _finish(model, config, splits, metrics, seconds, test_ds) if chief else _summary(config, splits, metrics)
    if chief and config.teacher:
        results["distillation"] = distillation.teacher_agreement(fitted, test_ds)
    if chief and config.export:
        results["export"] = _export(config, splits)
    if chief:
        run_folder.write_results(config.output, results)
    return (results, model) if return_model else results


def _say_where_it_resumes(config):
    if run_folder.fit_finished(config.output):
        print(f"keras-vit train: resuming {config.output}: training had finished; saving and exporting")
    else:
        epoch = run_folder.epochs_done(config.output) + 1
        print(f"keras-vit train: resuming {config.output} at epoch {epoch} of {config.epochs}")


# Below this many training images a ViT larger than the tiny row rarely learns from scratch: ViTs
# lack convolutions' inductive biases and need large datasets or a pretrained start (Dosovitskiy
# et al. 2020, Steiner et al. 2021). The README's own-photos example at Ti/16 on 200 images ended at chance.
SMALL_FROM_SCRATCH = 5_000


def _hint_small_from_scratch(config, train_images):
    """A one-line note when a run trains a real-sized ViT from scratch on a small dataset."""
    if config.weights or train_images >= SMALL_FROM_SCRATCH or parse_variant(config.variant)[0].hidden_dim <= 64:
        return
    pretrained = f"{config.variant}:augreg_in21k"
    pretrained = pretrained if find_checkpoint(pretrained) else "S/16:augreg_in21k"
    print(
        f"keras-vit train: note: {config.variant} from scratch on {train_images:,} training images rarely learns "
        f"(a ViT needs many more, or a pretrained start): fine-tune a checkpoint with --weights (e.g. --weights "
        f"{pretrained}), or try --variant tiny/4 --image-size 32.",
        file=sys.stderr,
    )


def _verbosity(verbose):
    """`auto`: a progress bar on a terminal, one line per epoch in a log file."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def _build_model(config, splits):
    """`(model, scaling, ViTConfig)`: from scratch, or from `config.weights` with a new head at the asked size."""
    if not config.weights:
        architecture = _architecture(config, splits)
        return build_vit(architecture), config.scaling or "vit", architecture
    model, report = build_from_checkpoint(
        config.weights,
        image_size=config.image_size,
        num_classes=splits.num_classes,
        variant=config.variant,
        dropout_rate=config.dropout_rate,
        drop_path_rate=config.drop_path_rate,
        **_halting_options(config),
    )
    for line in report.adapted:
        print(f"keras-vit train: {line}")
    return model, config.scaling or _checkpoint_scaling(config.weights, report), report.config


def _architecture(config, splits):
    """The `ViTConfig` of a model trained from scratch."""
    return ViTConfig.from_variant(
        config.variant,
        image_size=config.image_size,
        num_classes=splits.num_classes,
        dropout_rate=config.dropout_rate,
        drop_path_rate=config.drop_path_rate,
        **({"distillation": True} if config.teacher else {}),  # DeiT's token, whose head the teacher trains
        **_halting_options(config),
    )


def _distillation(model, config, splits, architecture, scaling):
    """`--teacher`: the model wrapped with its frozen teacher for `fit` (DeiT's hard-label distillation)."""
    distillation.check_student(model)
    teacher, teacher_input = distillation.load_teacher(config.teacher, splits.labels, architecture.image_size, scaling)
    print(f"keras-vit train: --teacher {config.teacher}: its top class trains the distillation head")
    return distillation.HardDistillation(model, teacher, teacher_input)


# The layers a linear probe trains: the classifier heads (DeiT's distillation head too).
HEAD_LAYERS = ("head", "head_dist")


def freeze_backbone(model, frozen=True):
    """Makes every layer but the heads untrainable (`frozen=False` undoes it); returns the model.

    A linear probe on frozen features, as DINOv2's features are meant to be used. Compile
    after freezing: Keras collects the trainable variables when the optimiser is built.
    """
    heads = [layer for layer in model.layers if layer.name in HEAD_LAYERS]
    if not heads:
        raise ValueError(
            f"{model.name!r} has no head to train (include_top=False); build it with num_classes to fine-tune."
        )
    for layer in model.layers:
        layer.trainable = not frozen or layer.name in HEAD_LAYERS
    return model


def _enable_lora(model, config):
    """LoRA adapters on `--lora-targets`, the rest frozen but the heads and `--lora-train`; says what trains."""
    names = tuple(name.strip() for name in (config.lora_train or "").split(",") if name.strip())
    lora.enable_lora(model, config.lora, config.lora_targets, train=names)
    trained, total = lora.trainable_parameters(model)
    print(
        f"keras-vit train: --lora {config.lora} on {config.lora_targets}: training {trained:,} of {total:,} "
        f"parameters ({trained / total:.1%}: the adapters and the head{', ' + ', '.join(names) if names else ''})"
    )


def _check_lora(config):
    if isinstance(config.lora, bool) or not isinstance(config.lora, int) or config.lora < 1:
        raise ValueError(f"--lora {config.lora} must be a positive rank, e.g. 4.")
    if not config.weights:
        raise ValueError("--lora adapts a trained model: pass --weights (a checkpoint or a run folder's model.keras).")
    if config.freeze_backbone:
        raise ValueError(
            "--lora and --freeze-backbone both choose what trains: pass one (--freeze-backbone: the head)."
        )
    if config.resume:
        raise ValueError("--resume does not continue a --lora run (Keras saves LoRA layers merged); start it again.")
    lora.check_targets(config.lora_targets)


def _halting_options(config):
    """The A-ViT `ViTConfig` fields the run sets (`None`: the paper's defaults); none without `--adaptive-tokens`."""
    if not config.adaptive_tokens:
        return {}
    return {"adaptive_tokens": True, **{name: getattr(config, name) for name in HALTING_FLAGS}}


def _checkpoint_scaling(weights, report):
    """The pixel scaling the checkpoint was trained with: the registry's, a keras-vit run's, or ViT's.

    A family's (ImageNet mean/std for DeiT and DINOv2, CLIP's, [-1, 1] for SigLIP) comes with
    its registry row or hub folder's `config.json`, as the loader reports it.
    """
    if getattr(report, "scaling", None):  # the registry row's or the hub config's, named in SCALINGS
        return report.scaling
    if report.checkpoint:
        return report.checkpoint.scaling
    if report.format == "keras" and run_folder.has_metadata(weights):
        return run_folder.read_metadata(weights)["scaling"]  # fine-tuning a model.keras of an earlier run
    return "vit"


def _export(config, splits):
    """The main job's last step: SavedModel + LiteRT into `<output>/export`, with the parity report."""
    test_images, test_labels, calibration = data.report_arrays(splits, config.image_size)
    report = export_model(
        config.output,
        os.path.join(config.output, run_folder.EXPORT),
        test_images=test_images,
        test_labels=test_labels,
        calibration_images=calibration,
        overwrite=True,
    )
    return {row["artifact"]: row.get("accuracy") for row in report["artifacts"]}


def _check(config):
    _check_finite(config)
    if config.precision not in PRECISIONS:
        raise ValueError(f"Unknown precision={config.precision!r}; expected one of {PRECISIONS}.")
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError(f"epochs={config.epochs} and batch_size={config.batch_size} must be positive.")
    if config.variant is not None:
        parse_variant(config.variant)  # an unknown name fails before any image is decoded
    sizes = config.image_size if isinstance(config.image_size, (list, tuple)) else [config.image_size]
    checks = [  # flag, value, whether it is valid, what it must be
        ("--image-size", config.image_size, all(size is None or size >= 1 for size in sizes), "a positive size"),
        ("--learning-rate", config.learning_rate, config.learning_rate > 0, "> 0"),
        ("--weight-decay", config.weight_decay, config.weight_decay >= 0, ">= 0"),
        ("--warmup-epochs", config.warmup_epochs, config.warmup_epochs >= 0, ">= 0"),
        ("--label-smoothing", config.label_smoothing, 0 <= config.label_smoothing < 1, "in [0, 1)"),
        ("--mixup", config.mixup, config.mixup >= 0, ">= 0 (0: off)"),
        ("--cutmix", config.cutmix, 0 <= config.cutmix <= 1, "in [0, 1] (0: off)"),
        (
            "--dropout-rate",
            config.dropout_rate,
            config.dropout_rate is None or 0 <= config.dropout_rate < 1,
            "in [0, 1)",
        ),
        (
            "--drop-path-rate",
            config.drop_path_rate,
            config.drop_path_rate is None or 0 <= config.drop_path_rate < 1,
            "in [0, 1)",
        ),
        ("--seed", config.seed, config.seed >= 0, ">= 0"),
        ("--early-stopping", config.early_stopping, config.early_stopping >= 0, ">= 0 (0: off)"),
        ("--val-fraction", config.val_fraction, 0 < config.val_fraction < 0.5, "in (0, 0.5)"),
    ]
    for flag, value, valid, requirement in checks:
        if not valid:
            raise ValueError(f"{flag} {value} is out of range: it must be {requirement}.")
    if str(config.verbose) not in ("auto", "0", "1", "2"):
        raise ValueError(f"--verbose {config.verbose} is not one of auto, 0, 1, 2.")
    if config.freeze_backbone and not config.weights:
        raise ValueError("--freeze-backbone trains the head alone on a trained backbone: pass --weights.")
    if config.layer_decay is not None and not 0 < config.layer_decay <= 1:
        raise ValueError(f"--layer-decay {config.layer_decay} is out of range: it must be in (0, 1], e.g. 0.75.")
    if config.freeze_backbone and config.layer_decay is not None:
        raise ValueError("--layer-decay is for full fine-tuning; with --freeze-backbone only the head trains.")
    if config.layer_decay is not None and not config.weights:
        raise ValueError(
            "--layer-decay lowers the pretrained layers' learning rates when fine-tuning: pass --weights, or leave it out."
        )
    _check_halting_flags(config)
    if config.jit_compile and config.strategy in ("mirrored", "multi_worker"):
        raise ValueError("--jit-compile does not work with a mirrored strategy (variables on several devices).")
    if config.lora is not None:
        _check_lora(config)
    if config.overwrite and config.resume:
        raise ValueError("Pass either --overwrite (start again) or --resume (continue), not both.")
    if config.weights:  # after the flags: it looks at the disk (and names the checkpoints it knows)
        _check_weights(config.weights)
    if config.teacher:
        distillation.check_teacher_path(config.teacher)


def _check_finite(config):
    """`inf` and `nan` parse as floats: a flag given one is refused by name, before any range check."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.type is float and value is not None and not math.isfinite(value):
            raise ValueError(f"--{field.name.replace('_', '-')} {value} is not a finite number: give a number.")


HALTING_FLAGS = ("halting_gate_scale", "halting_gate_center", "ponder_loss_weight", "distribution_prior_weight")


def _check_halting_flags(config):
    """A-ViT's settings mean nothing without `--adaptive-tokens`: refused, not silently recorded."""
    given = [name for name in HALTING_FLAGS if getattr(config, name) is not None]
    if given and not config.adaptive_tokens:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        what = "is an A-ViT setting" if len(given) == 1 else "are A-ViT settings"
        raise ValueError(
            f"{flags} {what}: pass --adaptive-tokens too, or leave {'it' if len(given) == 1 else 'them'} out."
        )


def _check_weights(weights):
    """A `--weights` that is neither a file nor a registry name fails before any image is decoded."""
    if not os.path.exists(os.path.expanduser(weights)) and find_checkpoint(weights) is None:
        raise not_found(weights, given_as="--weights ")


# Settings that say where and how to run, not what: never stored, never compared on `--resume`.
_NOT_STORED = ("output", "overwrite", "resume", "verbose", "cache", "data_dir") + parallel.WHERE_FLAGS


def _stored(config):
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_STORED}


def _resumed_config(config):
    """`config` with the run's stored settings where it left them at their defaults.

    A setting given that contradicts the run's is an error: a resumed run with another batch
    size or model would silently train something else.
    """
    stored = run_folder.read_settings(config.output)
    if stored is None:  # no run here (refused later), or a worker without the chief's folder
        return config
    defaults, taken, conflicts = TrainConfig(), {}, []
    for name, value in stored.items():
        given = getattr(config, name, value)
        if name == "export":  # a run started with --no-export resumes without; --no-export may be given now too
            taken[name] = value and given
            continue
        if given == value or name in _NOT_STORED:
            continue
        if given == getattr(defaults, name):
            taken[name] = value
        else:
            conflicts.append(f"--{name.replace('_', '-')} {given} (the run has {value})")
    if conflicts:
        raise ValueError(
            f"--resume continues the run in {config.output} with its own settings, which "
            f"{', '.join(conflicts)} contradict: leave them out, or start again with --overwrite."
        )
    return dataclasses.replace(config, **taken)


def _check_not_diverged(losses, output):
    if losses and not math.isfinite(losses[-1]):
        raise ValueError(
            f"Training diverged (loss {losses[-1]} in epoch {len(losses)}), so no model was saved or exported; "
            f"lower --learning-rate, or check --mixup/--cutmix and the data (history.csv is in {output})."
        )


def _pipelines(config, splits, first_epoch=0, whole_batches=False):
    """Train, validation and test pipelines; `whole_batches`: evaluation drops its last partial batch too.

    Keras splits each batch over several JAX processes only when its size is known in the graph.
    """
    common = dict(
        image_size=config.image_size, num_classes=splits.num_classes, scaling=config.scaling, cache=config.cache
    )
    train_ds = data.pipeline(
        splits.train,
        batch_size=config.batch_size,
        training=True,
        augment=config.augment or ("none" if splits.name == "digits" else "crop_flip"),
        randaugment=config.randaugment,
        mixup=config.mixup,
        cutmix=config.cutmix,
        shuffle=config.shuffle,
        seed=config.seed,
        epochs=config.epochs,
        first_epoch=first_epoch,
        **common,
    )
    val_ds, test_ds = (
        data.pipeline(s, batch_size=config.batch_size, drop_remainder=whole_batches or None, **common)
        for s in (splits.validation, splits.test)
    )
    return train_ds, val_ds, test_ds


def _compile(model, config, total_steps, warmup_steps):
    optimizer = optimizers.make_optimizer(
        config.recipe,
        learning_rate=config.learning_rate,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        weight_decay=config.weight_decay,
        layer_decay=config.layer_decay,
        num_layers=model_config(model).num_layers if config.layer_decay is not None else None,
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"),
        ],
        # JAX's train step is always `jax.jit`-compiled: without it Keras runs every op eagerly, 20-40x
        # slower (the main job took 4-8 s a step). `--jit-compile` is XLA on TensorFlow (off by default:
        # slower on CPU) and torch.compile on torch.
        jit_compile=config.jit_compile or keras.backend.backend() == "jax",
    )


def _callbacks(output, chief=True, worker=None, lockstep=False):
    # Keras' callbacks are not multi-worker aware: each worker backs up into a folder of its
    # own, and only the chief logs and checkpoints. Several JAX processes read their weights
    # together (each reading is a collective), so with `lockstep` the others save whatever the
    # chief saves, at the same moments, into their backup folder.
    backup = os.path.join(output, run_folder.BACKUP, *([f"worker_{worker}"] if worker is not None else []))
    if not chief and lockstep:
        return [
            keras.callbacks.BackupAndRestore(backup, double_checkpoint=True),
            AtomicModelCheckpoint(
                os.path.join(backup, "best.keras"), monitor="val_accuracy", mode="max", save_best_only=True
            ),
        ]
    if not chief:
        return [keras.callbacks.BackupAndRestore(backup)]
    # BackupAndRestore before CSVLogger: a kill between the two repeats an epoch's row, never loses one.
    return [
        keras.callbacks.BackupAndRestore(backup, double_checkpoint=True),  # a half-written backup falls back
        keras.callbacks.CSVLogger(os.path.join(output, run_folder.HISTORY_CSV), append=True),
        AtomicModelCheckpoint(
            os.path.join(output, run_folder.BEST), monitor="val_accuracy", mode="max", save_best_only=True
        ),
        keras.callbacks.TensorBoard(os.path.join(output, run_folder.LOGS)),
        keras.callbacks.TerminateOnNaN(),
    ]


class EpochSeeds(keras.callbacks.Callback):
    """Reseeds the model's random layers (dropout, drop path) as each epoch begins, from `(seed, epoch)`.

    Their seed generators' state is not in Keras' `BackupAndRestore` backup, and would otherwise depend
    on how many steps ran in this process: reseeded, a run resumed at epoch k draws the masks the
    uninterrupted run drew (the data's randomness is keyed by epoch in `data.pipeline`).
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.variables if v.name == "seed_generator_state"]
        for i, state in enumerate(states):
            value = np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0] >> 1  # fits any int dtype
            state.assign(np.array([value, 0], dtype=state.dtype))


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' `ModelCheckpoint`, writing through a temporary file renamed into place.

    Keras writes the `.keras` file in place: a full disk (or a kill) in the middle would leave a
    half-written `best.keras` where the last good one was.
    """

    def __init__(self, filepath, **kwargs):
        self.target = filepath
        folder, name = os.path.split(filepath)
        super().__init__(os.path.join(folder, f".{name}.tmp.keras"), **kwargs)  # Keras saves only to *.keras

    def _save_model(self, epoch, batch, logs):
        try:
            super()._save_model(epoch, batch, logs)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.filepath)
            raise
        if os.path.exists(self.filepath):  # saved this epoch (renamed away after each save)
            os.replace(self.filepath, self.target)


class _TimeLeft(keras.callbacks.Callback):
    """Between epochs, one line saying about how long the rest will take (from the epochs so far).

    Said as an epoch begins: Keras prints the last epoch's metrics after every other callback's end.
    The first epoch of a process also traces and compiles the steps, often longer than the
    epoch itself: the estimate starts from the second.
    """

    def on_train_begin(self, logs=None):
        self.first, self.timed = None, None  # (epoch, time) from which the estimate counts

    def on_epoch_begin(self, epoch, logs=None):
        now, total = time.perf_counter(), self.params["epochs"]
        if self.first is None:  # a resumed run starts later than 0
            self.first = epoch
        elif self.timed is None:
            self.timed = (epoch, now)
            print(f"keras-vit train: {epoch} of {total} epochs done, estimating the time left")
        else:
            seconds = round((now - self.timed[1]) / (epoch - self.timed[0]) * (total - epoch))
            print(f"keras-vit train: {epoch} of {total} epochs done, about {seconds // 60}m {seconds % 60:02d}s left")


def _early_stopping(patience, start_from_epoch=0):
    """Keras' `EarlyStopping` on validation accuracy, counting from `start_from_epoch` (the warm-up's end).

    During the warm-up the learning rate is still rising: a run at chance there has not started yet.
    """
    if not patience:
        return []
    # Its state (best epoch so far) is not in BackupAndRestore's: a resumed run counts patience anew.
    return [
        keras.callbacks.EarlyStopping(
            "val_accuracy",
            mode="max",
            patience=patience,
            restore_best_weights=True,
            start_from_epoch=start_from_epoch,
            verbose=1,
        )
    ]


def _class_weights(rule, splits):
    """`{class: weight}` for `fit`: "balanced" weighs a class by n / (k * its count), as scikit-learn does."""
    if rule is None:
        return None
    counts = splits.class_counts()
    if 0 in counts:
        raise ValueError("--class-weights balanced: a class has no training image; balanced weights need one each.")
    return {i: sum(counts) / (len(counts) * count) for i, count in enumerate(counts)}


def _summary(config, splits, metrics):
    return {
        "dataset": splits.name,
        "variant": config.variant,
        "test_top1": float(metrics["accuracy"]),
        "test_top5": float(metrics["top5"]),
        "test_loss": float(metrics["loss"]),
        "train_images": splits.sizes["train"],
        "test_images": splits.sizes["test"],
    }


def _finish(model, config, splits, metrics, seconds, test_ds):
    output = config.output
    run_folder.save_model(model, output)  # under LoRA, the merged model (Keras merges the adapters on save)
    if lora.lora_layers(model):
        lora.save_adapters(model, os.path.join(output, run_folder.ADAPTERS))
    run_folder.write_metadata(
        output,
        image_size=run_folder.input_size(model),
        scaling=config.scaling,
        weights=config.weights,
        labels=splits.labels,
        variant=config.variant,
        dataset=splits.name,
        # What `evaluate` and `export` need to load the same splits again: the folder (absolute) or
        # TFDS name and data_dir, and the hold-out rule (seed, share, bad files) of a missing split.
        source=data.source(config.dataset),
        data_dir=config.data_dir and os.path.abspath(os.path.expanduser(config.data_dir)),
        seed=config.seed,
        val_fraction=config.val_fraction,
        bad_files=config.bad_files,
        label_smoothing=config.label_smoothing,  # in the test loss: `evaluate` reports the same one
        architecture=model_config(model).to_dict(),  # read from the model: right for a resumed run too
    )
    history = read_history(os.path.join(output, run_folder.HISTORY_CSV))
    files.write_json(os.path.join(output, run_folder.HISTORY_JSON), history)
    plot_curves(history, os.path.join(output, run_folder.CURVES))
    matrix = plot_confusion_matrix(
        *predicted_classes(model, test_ds), splits.labels, os.path.join(output, run_folder.CONFUSION_MATRIX)
    )
    fit_seconds = None if seconds is None else round(seconds, 1)
    results = {**_summary(config, splits, metrics), "epochs": len(history["epoch"]), "fit_seconds": fit_seconds}
    results["per_class"] = per_class_metrics(matrix, splits.labels)
    results["confusion_matrix"] = matrix.tolist()  # rows: true class, columns: predicted, in `labels` order
    if model_config(model).adaptive_tokens:
        results["halting"] = _halting_results(model, test_ds)
    return results


def _halting_results(model, test_ds):
    """A-ViT on the test split: mean blocks per token, and the share of tokens each block still updates."""
    view = halting_model(model)
    depth = np.concatenate([keras.ops.convert_to_numpy(view(images, training=False)["depth"]) for images, _ in test_ds])
    return halting_statistics(depth, num_layers=model_config(model).num_layers)


# --- evaluation ------------------------------------------------------------------


def evaluate(model_path, dataset=None, *, split="test", data_dir=None, batch_size=64):
    """Loads a trained model and returns its loss, top-1 and top-5 on a split, and its number of images.

    `dataset` and `data_dir` default to the run's own (recorded in its `keras_vit.json`), with the
    same held-out splits; the loss is the run's (with its label smoothing), as in `results.json`.
    """
    model, metadata, _ = run_folder.load_model(model_path)  # checks the file and that it fits its keras_vit.json
    if dataset is None:
        dataset = metadata.get("source") or metadata.get("dataset") or "digits"
        data_dir = data_dir or metadata.get("data_dir")
    splits = data.load_for_model(dataset, metadata, data_dir=data_dir)
    ds = data.pipeline(
        getattr(splits, split),
        image_size=metadata["image_size"],
        num_classes=splits.num_classes,
        batch_size=batch_size,
        scaling=metadata["scaling"],
    )
    model.compile(
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=metadata.get("label_smoothing", 0.0)
        ),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(5, name="top5"),
        ],
    )
    metrics = model.evaluate(ds, return_dict=True, verbose=0)
    return {**metrics, "dataset": dataset, "split": split, "images": splits.sizes[split]}
