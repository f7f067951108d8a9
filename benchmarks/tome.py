"""Token merging on a trained model: throughput gain against accuracy change, for several r.

    keras-vit train --output runs/digits                       # or any trained model folder
    python benchmarks/tome.py runs/digits [--dataset digits] [--r 0 2 4 8 16] [--rounds 7]
    python benchmarks/tome.py B/16 --r 0 4 8 16 --batch 16     # speed only, random weights at 224

For each `r` (pairs merged per block), `keras_vit.apply_token_merging` wraps
the same trained weights; top-1 is measured on the test split, images/s on
one batch of test images, round-robin over all `r` in the same rounds. Given
a variant name instead of a folder, only the speed is measured.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit.run_folder import load_model  # noqa: E402
from keras_vit.training import data  # noqa: E402

from peers import timed  # noqa: E402  (beside this file)


def test_set(dataset, metadata, num_classes):
    splits = data.load(dataset)
    ds = data.pipeline(
        splits.test,
        image_size=metadata["image_size"],
        num_classes=num_classes,
        batch_size=256,
        scaling=metadata["scaling"],
    )
    images, labels = zip(*[(x.numpy(), y.numpy().argmax(-1)) for x, y in ds])
    return np.concatenate(images), np.concatenate(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a trained model folder (keras-vit train --output ...) or a variant")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--r", nargs="+", type=int, default=[0, 2, 4, 8, 16])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if os.path.isdir(args.model):
        model, metadata, _ = load_model(args.model)
        images, labels = test_set(args.dataset, metadata, model.output_shape[-1])
    else:
        model, labels = keras_vit.build_vit(args.model), None
        images = np.random.default_rng(0).uniform(-1, 1, (args.batch, 224, 224, 3)).astype("float32")
    variants = {r: keras_vit.apply_token_merging(model, r) for r in args.r}
    speeds = images_per_second(variants, images[: args.batch], args.rounds)
    blocks = [layer.name for layer in variants[args.r[0]].layers if isinstance(layer, keras_vit.TokenMerging)]
    print(f"{args.model}: batch {args.batch}, {len(blocks)} blocks, load average {os.getloadavg()[0]:.2f}\n")
    print("| r | tokens after last block | images/s | speed-up | top-1 | change |")
    print("|---|---|---|---|---|---|")
    base = None
    for r, fast in variants.items():
        top1 = (
            None
            if labels is None
            else float(np.mean(fast.predict(images, batch_size=256, verbose=0).argmax(-1) == labels))
        )
        base = base or (speeds[r], top1)
        accuracy = "n/a | n/a" if top1 is None else f"{top1:.1%} | {100 * (top1 - base[1]):+.1f} pt"
        tokens = fast.get_layer(blocks[-1]).output[0].shape[1]
        print(f"| {r} | {tokens} | {speeds[r]:.1f} | {speeds[r] / base[0]:.2f}x | {accuracy} |")


def images_per_second(variants, batch, rounds):
    """`{r: images/s}` of each model's forward on `batch`, timed round-robin."""
    batch, steps = tf.constant(batch), {}
    for r, model in variants.items():
        forward = tf.function(lambda x, m=model: m(x, training=False))
        steps[r] = lambda forward=forward: forward(batch).numpy()
        steps[r]()
    times = {r: [] for r in variants}
    for _ in range(rounds):
        for r, step in steps.items():
            times[r].append(timed(step))
    return {r: len(batch) / float(np.median(t)) for r, t in times.items()}


if __name__ == "__main__":
    main()
