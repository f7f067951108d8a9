"""LiteRT latency per quantization at batch 1, with 1 and 2 interpreter threads.

    python benchmarks/tflite_latency.py                          # ViT-Ti/16 at 224, random weights
    python benchmarks/tflite_latency.py --variants Ti/16 S/16 B/16
    python benchmarks/tflite_latency.py --model runs/digits      # a trained model folder

Random weights are enough for latency (the same ops run whatever the values);
full int8 is calibrated on random pixels here, so its accuracy means nothing.
Sizes and latencies are printed as a Markdown table.
"""

import argparse
import os
import tempfile

import numpy as np

from keras_vit.cli import quiet_tensorflow


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="trained model folder (model.keras + keras_vit.json)")
    parser.add_argument("--variants", nargs="+", default=["Ti/16"], help="without --model: variants to build (default: Ti/16)")
    parser.add_argument("--image-size", type=int, default=224, help="without --model (default: 224)")
    parser.add_argument("--calibration-images", type=int, default=32, help="random images for int8 (default: 32)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per measurement (default: 30)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    quiet_tensorflow()

    import keras_vit
    from keras_vit.export import load_model

    if args.model:
        model, metadata, _ = load_model(args.model)
        table(model, metadata, args.model, args)
        return
    for variant in args.variants:
        model = keras_vit.build_vit(variant, image_size=args.image_size, num_classes=1000)
        metadata = {"image_size": [args.image_size] * 2, "scaling": "vit"}
        table(model, metadata, f"ViT-{variant} at {args.image_size}, random weights", args)


def table(model, metadata, title, args):
    """Converts `model` to every quantization and prints one Markdown row each."""
    from keras_vit import tflite

    pixels_model = tflite.pixels_model(model, metadata)
    rng = np.random.default_rng(0)
    shape = (*metadata["image_size"], 3)
    calibration = rng.uniform(0, 255, (args.calibration_images, *shape)).astype(np.float32)
    image = rng.uniform(0, 255, (1, *shape)).astype(np.float32)

    print(f"\nLiteRT latency, batch 1, median of {args.repeats} runs: {title}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| quantization | size (MB) | " + " | ".join(f"ms, {n} thread{'s' * (n > 1)}" for n in args.threads) + " |")
    print("|---|---|" + "---|" * len(args.threads))
    with tempfile.TemporaryDirectory() as folder:
        for quantization in tflite.QUANTIZATIONS:
            path = tflite.convert(pixels_model, os.path.join(folder, f"{quantization}.tflite"), quantization, calibration)
            times = [tflite.latency_ms(tflite.LiteRTModel(path, num_threads=n), image, args.repeats) for n in args.threads]
            size = os.path.getsize(path) / 1e6
            print(f"| {quantization} | {size:.1f} | " + " | ".join(f"{t:.1f}" for t in times) + " |", flush=True)


if __name__ == "__main__":
    main()
