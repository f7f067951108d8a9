"""Images/second of the input pipeline alone (`keras_vit.training.data.pipeline`), no model.

    python benchmarks/pipeline.py [--image-size 224] [--batch-size 32] [--jpegs 600]

Two sources: the built-in digits (TFDS, tiny images upsampled), and a
generated folder of 640x480 JPEGs (decoded, Inception-cropped, flipped,
resized). Training pipelines (augmentation on) and evaluation pipelines are
timed over whole passes after one warm-up pass. Compare with the model's
training images/s (`python benchmarks/peers.py`): the pipeline must be faster, or
the model waits on it.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from keras_vit.training import data  # noqa: E402


def write_jpegs(root, count, classes=10, size=(640, 480), seed=0):
    """`count` smooth random JPEGs in `root/<class>/`, like photos in size and entropy."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = os.path.join(root, f"class_{i % classes}")
        os.makedirs(folder, exist_ok=True)
        small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.BILINEAR).save(os.path.join(folder, f"{i}.jpg"), quality=90)


def images_per_second(ds, passes=2):
    for _ in ds:  # warm-up pass: traces, fills caches and thread pools
        pass
    count, start = 0, time.perf_counter()
    for _ in range(passes):
        for images, _ in ds:
            count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def measure(splits, image_size, batch_size):
    rows = {}
    for training in (True, False):
        ds = data.pipeline(
            splits.train,
            image_size=image_size,
            num_classes=splits.num_classes,
            batch_size=batch_size,
            training=training,
        )
        rows["train (crop+flip)" if training else "eval"] = images_per_second(ds)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--jpegs", type=int, default=600)
    args = parser.parse_args()
    print(
        f"input pipeline at {args.image_size}, batch {args.batch_size}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(root, args.jpegs)
        sources = {"digits (TFDS)": data.load("digits"), f"{args.jpegs} JPEGs 640x480": data.load(root)}
        for name, splits in sources.items():
            for mode, rate in measure(splits, args.image_size, args.batch_size).items():
                print(f"  {name:>22} {mode:>17}: {rate:8.0f} images/s")


if __name__ == "__main__":
    main()
