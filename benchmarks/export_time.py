"""Where the time of `keras-vit export` goes, step by step, in wall and CPU seconds.

    python benchmarks/export_time.py                       # Ti/16 at 64 px, 1000 test and 300 calibration images
    python benchmarks/export_time.py --variant S/16 --image-size 224

A model with random weights (the same ops run whatever the values) is saved as a run folder and
exported as `keras-vit export --dataset` would (1000 test images, 300 calibration images). CPU
seconds (all threads of this process) do not grow when other processes share the machine; wall
seconds do. Besides the export's own lines, each step is timed alone: tracing and writing the
SavedModel that LiteRT converts from (Keras' LiteRT export does this for every file), one
conversion per quantization from it, and the ONNX conversion.
"""

import argparse
import contextlib
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit import run_folder  # noqa: E402
from keras_vit.deploy import export, litert, onnx  # noqa: E402


@contextlib.contextmanager
def timed(name, rows):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    rows.append((name, time.perf_counter() - wall, time.process_time() - cpu))
    print(f"{name}: {rows[-1][1]:.1f} s wall, {rows[-1][2]:.1f} s CPU", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="Ti/16")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--calibration-images", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    model = keras_vit.build_vit(args.variant, image_size=args.image_size, num_classes=10)
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.05, size=weight.shape).astype("float32"))
    size = (args.image_size, args.image_size)
    metadata = {"image_size": list(size), "scaling": "vit", "labels": [str(i) for i in range(10)]}
    calibration = rng.integers(0, 256, (args.calibration_images, *size, 3), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        model.save(os.path.join(root, "model.keras"))
        run_folder.write_metadata(root, image_size=size, scaling="vit", labels=metadata["labels"])
        with timed("whole export", rows):
            export.export_model(
                root,
                os.path.join(root, "out"),
                test_images=rng.integers(0, 256, (args.test_images, *size, 3), dtype=np.uint8),
                test_labels=rng.integers(0, 10, args.test_images),
                calibration_images=calibration,
            )
        print(f"\n{args.variant} at {args.image_size} px, each step alone, {os.cpu_count()} CPUs:")
        pixels = litert.resized_pixels(calibration, size)
        with contextlib.ExitStack() as stack:
            with timed("trace + write the SavedModel LiteRT converts from", rows):
                folder = stack.enter_context(litert.saved_for_conversion(litert.pixels_model(model, metadata)))
            for quantization in litert.QUANTIZATIONS:
                with timed(f"convert {quantization}", rows):
                    litert.convert(folder, os.path.join(root, f"{quantization}.tflite"), quantization, pixels)
        if not onnx.missing_packages():
            with timed("convert to ONNX (and check it in ONNX Runtime)", rows):
                onnx.convert(model, metadata, os.path.join(root, "vit.onnx"))


if __name__ == "__main__":
    main()
