"""LiteRT latency per quantization at batch 1, against the TensorFlow forward, in one run.

    python benchmarks/tflite_latency.py                          # ViT-Ti/16 at 224, random weights
    python benchmarks/tflite_latency.py --variants Ti/16 S/16 B/16
    python benchmarks/tflite_latency.py --model runs/digits --dataset digits   # + top-1 agreement

Random weights are enough for latency (the same ops run whatever the values);
full int8 is calibrated on random pixels then, so its accuracy means nothing.
With `--model` (a trained model folder) and `--dataset`, int8 is calibrated on
training images and every file is also run on the test split: top-1 agreement
with LiteRT float32 and accuracy. The TensorFlow row is the Keras model under
`tf.function` at batch 1, using every core. Printed as a Markdown table.
"""

import argparse
import os
import tempfile

import numpy as np

from keras_vit.cli import quiet_tensorflow


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="trained model folder (model.keras + keras_vit.json)")
    parser.add_argument("--dataset", help="with --model: dataset whose test split measures agreement, e.g. digits")
    parser.add_argument(
        "--variants", nargs="+", default=["Ti/16"], help="without --model: variants to build (default: Ti/16)"
    )
    parser.add_argument("--image-size", type=int, default=224, help="without --model (default: 224)")
    parser.add_argument("--calibration-images", type=int, default=32, help="images for int8 (default: 32)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per measurement (default: 30)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if args.dataset and not args.model:
        parser.error("--dataset needs --model (agreement means something only for a trained model)")
    quiet_tensorflow()

    import keras_vit
    from keras_vit.run_folder import load_model

    if args.model:
        model, metadata, _ = load_model(args.model)
        test = calibration = None
        if args.dataset:
            from keras_vit.training import data

            splits = data.load(args.dataset, download=False)
            size = metadata["image_size"][0]
            *test, calibration = data.report_arrays(splits, size, calibration_limit=args.calibration_images)
        table(model, metadata, args.model, args, test, calibration)
        return
    for variant in args.variants:
        model = keras_vit.build_vit(variant, image_size=args.image_size, num_classes=1000)
        metadata = {"image_size": [args.image_size] * 2, "scaling": "vit"}
        table(model, metadata, f"ViT-{variant} at {args.image_size}, random weights", args)


def tensorflow_ms(pixels_model, image, repeats):
    """Milliseconds of the TensorFlow forward at batch 1 (the same pixels-in model LiteRT runs)."""
    import tensorflow as tf

    from keras_vit.deploy import litert

    forward = tf.function(lambda x: pixels_model(x, training=False)["logits"])
    return litert.latency_ms(lambda x: forward(x).numpy(), tf.constant(image), repeats)


def table(model, metadata, title, args, test=None, calibration=None):
    """Converts `model` to every quantization and prints one Markdown row each."""
    from keras_vit.deploy import litert

    pixels_model = litert.pixels_model(model, metadata)
    rng = np.random.default_rng(0)
    shape = (*metadata["image_size"], 3)
    if calibration is None:
        calibration = rng.uniform(0, 255, (args.calibration_images, *shape))
    calibration = litert.resized_pixels(calibration, metadata["image_size"])
    test_pixels = None if test is None else litert.resized_pixels(test[0], metadata["image_size"])
    image = rng.uniform(0, 255, (1, *shape)).astype(np.float32)
    most = max(args.threads)

    print(
        f"\nLiteRT latency, batch 1, median of {args.repeats} runs: {title}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    tf_ms = tensorflow_ms(pixels_model, image, args.repeats)
    print(f"TensorFlow forward (Keras model, tf.function), batch 1: {tf_ms:.1f} ms ({1000 / tf_ms:.1f} images/s)\n")
    columns = [f"ms, {n} thread{'s' * (n > 1)}" for n in args.threads]
    columns += [f"vs float32 ({most} threads)", f"vs TensorFlow ({most} threads)"]
    if test is not None:
        columns += [f"top-1 agreement with float32 ({len(test[1])} test images)", "accuracy"]
    print("| quantization | size (MB) | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    float32_ms = float32_top1 = None
    with tempfile.TemporaryDirectory() as folder:
        for quantization in litert.QUANTIZATIONS:
            path = litert.convert(
                pixels_model, os.path.join(folder, f"{quantization}.tflite"), quantization, calibration
            )
            times = [
                litert.latency_ms(litert.LiteRTModel(path, num_threads=n), image, args.repeats) for n in args.threads
            ]
            if quantization == "float32":  # the reference of the speed-up and agreement columns
                float32_ms = times[-1]
            cells = [f"{t:.1f}" for t in times] + [f"{float32_ms / times[-1]:.2f}x", f"{tf_ms / times[-1]:.2f}x"]
            if test is not None:
                top1 = litert.LiteRTModel(path, num_threads=most)(test_pixels).argmax(-1)
                float32_top1 = top1 if quantization == "float32" else float32_top1
                cells += [f"{np.mean(top1 == float32_top1):.2%}", f"{np.mean(top1 == test[1]):.2%}"]
            size = os.path.getsize(path) / 1e6
            print(f"| {quantization} | {size:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
