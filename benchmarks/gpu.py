"""A ViT training step through `model.fit`, timed, for GPU readiness: images/s and MFU.

Measures one configuration: `keras_vit.build_vit(variant)` compiled with AdamW and a
cross-entropy loss on logits, trained by `model.fit` on random NumPy images and sparse labels
(no tf.data, no input pipeline to speak of), under the Keras backend that `KERAS_BACKEND` names
(tensorflow, jax or torch) and a dtype policy (`--precision`). A callback records the time at
every `on_train_batch_end` (`time.perf_counter`, after Keras has turned the step's loss into a
Python float, so the device has finished the step); the first `--warmup` steps (tracing and
compilation) are dropped, and the median of the rest is reported with

    images/s = batch / median step seconds
    MFU      = 3 x forward FLOPs per image x images/s / (--peak-tflops x 1e12)

where forward FLOPs are 2 x the multiply-adds of the patch projection, per block the QKV
projection (3 D^2 T), both attention products (2 T^2 D), the output projection (D^2 T) and the
MLP (2 T D mlp_dim), and the head; T = patches + 1 (the class token). A training step counts
3 x the forward. LayerNorm, softmax, GELU, biases and the optimizer are not counted, so MFU is
the usual lower bound on hardware utilisation. Everything runs on one device: the default one
of the backend (the first GPU when there is one). `--peak-tflops` is that one chip's dense
peak at the precision measured (bf16 for mixed_bfloat16, e.g. 989 for an H100 SXM); without it
MFU is printed as n/a.

On a GPU machine:

    python benchmarks/gpu.py --variant B/16 --batch 128 --precision mixed_bfloat16 --peak-tflops 989
    KERAS_BACKEND=jax python benchmarks/gpu.py --variant B/16 --batch 128 --precision mixed_bfloat16 --peak-tflops 989
    KERAS_BACKEND=torch python benchmarks/gpu.py --variant B/16 --batch 128 --peak-tflops 989 --output torch.json

Defaults: B/16 at 224, 1000 classes, batch 128, 20 steps of which 5 are warm-up,
mixed_bfloat16, `jit_compile="auto"` (Keras' choice per backend). The images are one random
batch repeated `--steps` times in host memory (B/16 at 224, batch 128, 20 steps: 1.5 GB in
float32); Keras copies each batch to the device as in real training.

On a CPU, `python benchmarks/gpu.py --quick` (tiny/4 at 32x32, 10 classes, batch 8, 8 steps)
is a smoke test only: it checks that the script, the model and the backend work end to end in
well under a minute, and its numbers say nothing about a GPU. Explicit flags override the
`--quick` settings.

Writes `--output FILE.json` (optional): backend, Keras version, device, variant, image size,
batch, precision, the median step seconds, images/s, MFU (null without `--peak-tflops`) and the
timed step times.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_CHOICES = {"auto": "auto", "true": True, "false": False}
FULL = dict(variant="B/16", image_size=224, num_classes=1000, batch=128, steps=20, warmup=5)
QUICK = dict(variant="tiny/4", image_size=32, num_classes=10, batch=8, steps=8, warmup=3)


def _checked(convert, valid, what):
    """An argparse `type` that converts a flag and refuses values outside `valid` in one line."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v > 0, "a positive integer")
_non_negative_int = _checked(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a positive number")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="benchmarks/gpu.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", help=f"e.g. B/16, S/16, L/16 (default {FULL['variant']})")
    parser.add_argument("--image-size", type=_positive_int, help=f"square images (default {FULL['image_size']})")
    parser.add_argument("--num-classes", type=_positive_int, help=f"(default {FULL['num_classes']})")
    parser.add_argument("--batch", type=_positive_int, help=f"images per step (default {FULL['batch']})")
    parser.add_argument("--steps", type=_positive_int, help=f"steps in all, warm-up included (default {FULL['steps']})")
    parser.add_argument(
        "--warmup", type=_non_negative_int, help=f"first steps not timed, must be < --steps (default {FULL['warmup']})"
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="mixed_bfloat16", help="Keras dtype policy")
    parser.add_argument(
        "--jit-compile",
        choices=sorted(JIT_CHOICES),
        default="auto",
        help="model.compile(jit_compile=...); auto is Keras' choice for the backend",
    )
    parser.add_argument(
        "--peak-tflops",
        type=_positive_float,
        help="the chip's dense peak TFLOP/s at this precision (bf16: 989 for an H100 SXM); without it MFU is n/a",
    )
    parser.add_argument("--seed", type=int, default=0, help="NumPy seed of the random images and labels")
    parser.add_argument("--output", help="also write the result here as JSON")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=(
            f"a smoke test: {QUICK['variant']} at {QUICK['image_size']}, {QUICK['num_classes']} classes, "
            f"batch {QUICK['batch']}, {QUICK['steps']} steps ({QUICK['warmup']} warm-up)"
        ),
    )
    return parser


def parse_args(argv=None):
    """The arguments with the defaults (full or `--quick`) filled in and checked; exits on bad ones."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.warmup >= args.steps:
        parser.error(f"--warmup ({args.warmup}) must be less than --steps ({args.steps}): no step would be timed")
    if args.output is not None and (not args.output or os.path.isdir(args.output)):
        parser.error(f"--output {args.output!r} is not a file path")
    return parser, args


def forward_flops_per_image(arch, patch_size, image_size, num_classes, num_channels=3):
    """2 x multiply-adds of one image's forward pass: patch projection, blocks' matmuls, head.

    `arch` needs only `hidden_dim`, `num_layers` and `mlp_dim` (as `keras_vit.parse_variant`'s row).
    """
    dim, layers, mlp = int(arch.hidden_dim), int(arch.num_layers), int(arch.mlp_dim)
    patch_h, patch_w = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    patches = (image_size // patch_h) * (image_size // patch_w)
    tokens = patches + 1  # the class token
    patch_projection = patches * patch_h * patch_w * num_channels * dim
    block = (
        3 * dim * dim * tokens  # QKV projection
        + 2 * tokens * tokens * dim  # Q K^T and attention x V, all heads together
        + dim * dim * tokens  # output projection
        + 2 * tokens * dim * mlp  # the MLP's two matmuls
    )
    head = dim * num_classes
    return 2 * (patch_projection + layers * block + head)


def mfu(flops_per_image, images_per_second, peak_tflops):
    """Model FLOP utilisation of a training step (3 x forward), or None without a peak."""
    if peak_tflops is None:
        return None
    return 3 * flops_per_image * images_per_second / (peak_tflops * 1e12)


def device_description(backend):
    """The device the backend computes on, in words."""
    try:
        if backend == "jax":
            import jax

            devices = jax.devices()
            kinds = sorted(
                {d.platform if d.platform == d.device_kind else f"{d.platform}: {d.device_kind}" for d in devices}
            )
            return f"{', '.join(kinds)} (x{len(devices)}; first used)" if len(devices) > 1 else kinds[0]
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        if backend == "tensorflow":
            import tensorflow as tf  # only here: TensorFlow is then the backend, already imported by Keras

            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                return "cpu"
            names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
            return f"{', '.join(sorted(set(names)))} (x{len(gpus)}; first used)" if len(gpus) > 1 else names[0]
    except Exception as error:  # a description must never sink the measurement
        return f"unknown ({type(error).__name__}: {error})"
    return f"unknown (backend {backend})"


def write_json(path, payload):
    """Writes `payload` to `path` through a temporary file in the same folder and `os.replace`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".gpu-", suffix=".json.tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def main(argv=None):
    parser, args = parse_args(argv)

    # keras_vit as installed (or on PYTHONPATH), else this checkout's: sys.path[0] is benchmarks/.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.append(root)

    import keras
    import numpy as np

    import keras_vit

    try:
        arch, patch_size = keras_vit.parse_variant(args.variant)
    except ValueError as error:
        parser.error(f"--variant: {error}")
    if patch_size is None:
        parser.error(f"--variant {args.variant!r} names no patch size; write e.g. '{args.variant}/16'")
    if any(args.image_size % p for p in ((patch_size,) if isinstance(patch_size, int) else patch_size)):
        parser.error(f"--image-size {args.image_size} is not a multiple of the patch size {patch_size}")

    backend = keras.backend.backend()
    keras.config.set_dtype_policy(args.precision)
    model = keras_vit.build_vit(args.variant, image_size=args.image_size, num_classes=args.num_classes)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT_CHOICES[args.jit_compile],
    )

    # One random batch, repeated: each epoch is exactly --steps steps of --batch images.
    rng = np.random.default_rng(args.seed)
    images = rng.standard_normal((args.batch, args.image_size, args.image_size, 3), dtype=np.float32)
    labels = rng.integers(0, args.num_classes, size=(args.batch,), dtype=np.int32)
    images = np.concatenate([images] * args.steps)
    labels = np.concatenate([labels] * args.steps)

    class StepTimes(keras.callbacks.Callback):
        """Time at the start of training and at every batch end (Keras has pythonified the loss by then)."""

        def on_train_begin(self, logs=None):
            self.times = [time.perf_counter()]

        def on_train_batch_end(self, batch, logs=None):
            for value in (logs or {}).values():  # the step's results on the host: the device is done
                try:
                    float(value)
                except (TypeError, ValueError):
                    pass
            self.times.append(time.perf_counter())

    timer = StepTimes()
    model.fit(
        images,
        labels,
        batch_size=args.batch,
        epochs=1,
        steps_per_epoch=args.steps,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    steps = np.diff(timer.times).tolist()
    if len(steps) != args.steps:
        raise RuntimeError(f"model.fit ran {len(steps)} steps, expected {args.steps}")
    timed = steps[args.warmup :]
    median = statistics.median(timed)
    images_per_second = args.batch / median
    flops = forward_flops_per_image(arch, patch_size, args.image_size, args.num_classes)
    utilisation = mfu(flops, images_per_second, args.peak_tflops)
    device = device_description(backend)

    mfu_text = "n/a" if utilisation is None else f"{100 * utilisation:.1f}% of {args.peak_tflops:g} TFLOP/s"
    print(
        f"{args.variant} {args.image_size}px batch {args.batch} {args.precision} {backend} "
        f"jit_compile={model.jit_compile} on {device}: median step {median * 1e3:.2f} ms "
        f"over {len(timed)} steps, {images_per_second:.1f} images/s, "
        f"{3 * flops * images_per_second / 1e12:.3g} TFLOP/s, MFU {mfu_text}",
        flush=True,
    )
    if args.output:
        write_json(
            args.output,
            {
                "backend": backend,
                "keras_version": keras.__version__,
                "device": device,
                "variant": args.variant,
                "image_size": args.image_size,
                "num_classes": args.num_classes,
                "batch": args.batch,
                "precision": args.precision,
                "jit_compile": model.jit_compile,
                "steps": args.steps,
                "warmup": args.warmup,
                "median_step_seconds": median,
                "images_per_second": images_per_second,
                "forward_flops_per_image": flops,
                "train_tflops_per_second": 3 * flops * images_per_second / 1e12,
                "peak_tflops": args.peak_tflops,
                "mfu": utilisation,
                "step_seconds": timed,
                "quick": args.quick,
                "tensorflow_imported": sys.modules.get("tensorflow") is not None,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
