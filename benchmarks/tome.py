"""Token merging on a trained model: throughput gain against accuracy change, for several r.

    keras-vit train --output runs/digits                       # or any trained model folder
    python benchmarks/tome.py runs/digits [--dataset digits] [--r 0 2 4 8 16] [--rounds 7]

For each `r` (pairs merged per block), `keras_vit.apply_token_merging` wraps
the same trained weights; top-1 is measured on the test split, images/s on
one batch of test images, round-robin over all `r` in the same rounds.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit import data  # noqa: E402
from keras_vit.benchmark import _timed  # noqa: E402
from keras_vit.export import load_model  # noqa: E402


def test_set(dataset, metadata, num_classes):
    splits = data.load(dataset)
    ds = data.pipeline(splits.test, image_size=metadata["image_size"], num_classes=num_classes,
                       batch_size=256, scaling=metadata["scaling"])
    images, labels = zip(*[(x.numpy(), y.numpy().argmax(-1)) for x, y in ds])
    return np.concatenate(images), np.concatenate(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a trained model folder (keras-vit train --output ...)")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--r", nargs="+", type=int, default=[0, 2, 4, 8, 16])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    model, metadata, _ = load_model(args.model)
    images, labels = test_set(args.dataset, metadata, model.output_shape[-1])
    batch = tf.constant(images[: args.batch])
    variants, steps = {}, {}
    for r in args.r:
        variants[r] = keras_vit.apply_token_merging(model, r)
        forward = tf.function(lambda x, m=variants[r]: m(x, training=False))
        steps[r] = lambda forward=forward: forward(batch).numpy()
        steps[r]()
    times = {r: [] for r in args.r}
    for _ in range(args.rounds):
        for r in args.r:
            times[r].append(_timed(steps[r]))
    blocks = [layer for layer in variants[args.r[0]].layers if isinstance(layer, keras_vit.TokenMerging)]
    print(f"{args.model}: {len(labels)} test images, batch {args.batch}, {len(blocks)} blocks, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| r | tokens after last block | images/s | speed-up | top-1 | change |")
    print("|---|---|---|---|---|---|")
    base_speed, base_top1 = None, None
    for r in args.r:
        top1 = float(np.mean(variants[r].predict(images, batch_size=256, verbose=0).argmax(-1) == labels))
        speed = args.batch / np.median(times[r])
        base_speed, base_top1 = base_speed or speed, base_top1 if base_top1 is not None else top1
        tokens = variants[r].get_layer(blocks[-1].name).output[0].shape[1]
        print(f"| {r} | {tokens} | {speed:.0f} | {speed / base_speed:.2f}x | {top1:.1%} | {100 * (top1 - base_top1):+.1f} pt |")


if __name__ == "__main__":
    main()
