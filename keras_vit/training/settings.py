"""`TrainConfig`: every setting of a run, one `keras-vit train` flag per field, and their choices.

Apart from the code that uses them, and importing nothing heavy: the command line builds its
flags (and answers `--help` and a mistyped flag) from this dataclass before Keras and TensorFlow
are imported, which takes seconds. `keras_vit.training.train` runs a `TrainConfig`.
"""

import dataclasses

# The choices of the flags; the modules that implement them import them from here.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
RECIPES = ("adamw", "sgd")  # training/optimizers.py
AUGMENTATIONS = ("none", "crop", "crop_flip")  # training/data.py
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")  # training/distribute.py
SCALINGS = (
    "vit",
    "imagenet",
    "clip",
    "dinov3_sat",
)  # the keys of keras_vit.preprocessing.SCALINGS (a test keeps them equal)


def _field(default, help, choices=None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on; `keras-vit train` has one flag per field, with this help."""

    dataset: str = _field("digits", "TFDS name, 'digits' (built in) or a folder of class sub-folders")
    data_dir: str = _field(None, "where TFDS keeps datasets (default: TFDS' own)")
    output: str = _field(
        None, "the run folder to write (default: runs/<dataset>, runs/<dataset>-<variant> for another model)"
    )
    variant: str = _field(None, "e.g. Ti/16, S/16, B/16, B/32, L/16, H/14 (default: tiny/4, or the checkpoint's)")
    image_size: int = _field(None, "training resolution, a multiple of the patch (default: 32, or the checkpoint's)")
    scaling: str = _field(None, "pixel scaling (default: vit, or the checkpoint's)", SCALINGS)
    epochs: int = _field(40, "epochs")
    early_stopping: int = _field(
        0, "stop after this many epochs without a better validation accuracy, keeping the best weights (0: off)"
    )
    batch_size: int = _field(64, "global batch size, split across replicas")
    learning_rate: float = _field(None, "peak learning rate (default: 2e-3 for adamw, 0.01 for sgd)")
    weight_decay: float = _field(0.05, "AdamW's decoupled weight decay")
    warmup_epochs: float = _field(None, "linear warmup (default: 2 from scratch, 1 when fine-tuning)")
    label_smoothing: float = _field(0.1, "label smoothing")
    class_weights: str = _field(
        None, "balanced: weigh each class's loss by the inverse of its share of train", ("balanced",)
    )
    recipe: str = _field(None, "optimiser recipe (default: adamw from scratch, sgd with --weights)", RECIPES)
    augment: str = _field(None, "crop/flip (default: crop_flip; none for digits)", AUGMENTATIONS)
    randaugment: bool = _field(False, "Keras RandAugment on training images")
    mixup: float = _field(0.0, "MixUp alpha (0: off)")
    cutmix: float = _field(0.0, "CutMix factor (0: off)")
    dropout_rate: float = _field(None, "dropout (default: the variant's; 0.1 for the default tiny/4 from scratch)")
    drop_path_rate: float = _field(None, "stochastic depth of the last block (default: 0; 0.1 for the default tiny/4)")
    precision: str = _field("float32", "mixed_float16 on GPU, mixed_bfloat16 on TPU", PRECISIONS)
    jit_compile: bool = _field(False, "compile with XLA (TensorFlow) or torch.compile (torch); JAX always compiles")
    strategy: str = _field("auto", "tf.distribute strategy (TensorFlow backend)", STRATEGIES)
    data_parallel: bool = _field(
        None, "JAX: split each batch over every device, keras.distribution.DataParallel (default: when several)"
    )
    model_parallel: int = _field(1, "JAX: shard the weights over this many devices (keras_vit.get_layout_map)")
    coordinator_address: str = _field(None, "JAX, several machines: host:port of process 0")
    num_processes: int = _field(None, "JAX, several machines: how many processes join")
    process_id: int = _field(None, "JAX, several machines: this process's index, 0 for the coordinator")
    seed: int = _field(0, "seed of initialisation, shuffling and hold-out")
    val_fraction: float = _field(0.1, "share of each class held out of train for validation (and test) where missing")
    bad_files: str = _field("skip", "unreadable files in an image folder", ("skip", "refuse"))
    cache: bool = _field(True, "cache decoded images in memory")
    shuffle: bool = _field(True, "shuffle training examples each epoch")
    overwrite: bool = _field(False, "replace an existing --output run")
    resume: bool = _field(False, "continue the run in --output where it stopped")
    weights: str = _field(None, "checkpoint file or registry name to fine-tune from")
    teacher: str = _field(
        None, "DeiT hard distillation: a run folder (or its model.keras) of a trained model with the same classes"
    )
    freeze_backbone: bool = _field(False, "train the head alone on the frozen --weights (a linear probe)")
    layer_decay: float = _field(None, "layer-wise learning-rate decay for full fine-tuning, e.g. 0.75 (default: off)")
    lora: int = _field(None, "LoRA rank: train low-rank adapters and the head on the frozen --weights, e.g. 4")
    lora_targets: str = _field("qkv,proj", "the Dense layers --lora adapts: some of qkv, proj, mlp, comma-separated")
    lora_train: str = _field(None, "more layers --lora trains in full, comma-separated (e.g. map_pooling,encoder_norm)")
    adaptive_tokens: bool = _field(False, "A-ViT: tokens learn when to stop (ponder loss + distribution prior)")
    halting_gate_scale: float = _field(None, "A-ViT gate sigmoid(scale * x[0] - center) (default: 10, the paper's)")
    halting_gate_center: float = _field(None, "A-ViT gate centre (default: 30, the paper's A-ViT-T)")
    ponder_loss_weight: float = _field(None, "A-ViT alpha_p (default: 5e-4, the paper's)")
    distribution_prior_weight: float = _field(None, "A-ViT alpha_d (default: 1e-3, the paper's)")
    export: bool = _field(True, "export SavedModel + LiteRT with a parity report into <output>/export")
    verbose: str = _field("auto", "0, 1 (progress bar), 2 (a line per epoch) or auto", ("auto", "0", "1", "2"))
