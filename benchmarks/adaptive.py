"""Adaptive tokens (A-ViT) on the digits: accuracy and images/s with and without halting.

    python benchmarks/adaptive.py [--num-layers 8] [--epochs 15] [--fine-tune-epochs 10] [--rounds 7]
    python benchmarks/adaptive.py --speed-only S/16 --gate-centers 30 5 2 0   # random weights at 224
    python benchmarks/adaptive.py --speed-only S/16 --keep-class-token        # only patch tokens halt

Trains a plain ViT (tiny width, `--num-layers` blocks, 32x32, patch 4: 65
tokens) on the built-in digits, then fine-tunes the same weights with
`adaptive_tokens=True`, as the paper fine-tunes DeiT. On the test split it
reports, for

- the plain model (trained without halting),
- the A-ViT model with halting disabled (`keras_vit.adaptive.plain_model`: same weights, every token every block),
- the A-ViT model's masked graph (what `model.fit` trains; batched; computes every token),
- the A-ViT batch-1 gathered path (`gathered_forward`: halted tokens removed),

top-1, mean blocks per token, and images/s at batch 1 (each a `tf.function`,
timed round-robin over `--rounds` rounds of 64 test images) and at batch 64.

`--speed-only VARIANT` skips training: random weights at 224, random images,
and for each gate centre the mean depth it gives and the images/s at batch 1
of the plain forward and the gathered path (the same weights). With random
weights the class token halts within a few blocks, and the gathered path stops
there (nothing else reaches the head): most of its speed-up comes from that.
`--keep-class-token` adds, per centre, the gathered path with the class token
run through every block (`ClassTokenKept`), so that only patch tokens halt.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit.model import ViTLayers, forward, model_config  # noqa: E402
from keras_vit.training import data  # noqa: E402
from keras_vit.views.adaptive import (  # noqa: E402
    GatheredHook,
    gathered_forward,
    halting_model,
    halting_statistics,
    plain_model,
)


class ClassTokenKept(GatheredHook):
    """The gathered path with the class token run through every block whatever its gate: only patches halt.

    For speed alone: its logits are not the model's (the class token's halting
    weights run on past its halt). Every other token halts as in `GatheredHook`.
    """

    def keep(self, going, positions):
        return ops.logical_or(going, positions < self.readout_tokens)


def class_token_kept_forward(model, images, center):
    """`(logits (1, C), depth (1, T))` of one image through `ClassTokenKept`: the blocks each token ran."""
    config = model_config(model)
    hook = ClassTokenKept(config.replace(adaptive_tokens=config.adaptive_tokens or True, halting_gate_center=center))
    return forward(ViTLayers.of(model), images, hook), hook.depth


def arrays(split, num_classes=10):
    ds = data.pipeline(split, image_size=32, num_classes=num_classes, batch_size=256, scaling="vit")
    images, labels = zip(*[(x.numpy(), y.numpy().argmax(-1)) for x, y in ds])
    return np.concatenate(images), np.concatenate(labels)


def fit(model, images, labels, epochs, learning_rate):
    steps = epochs * (len(images) // 64)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=learning_rate, warmup_steps=steps // 10)
    model.compile(
        keras.optimizers.AdamW(schedule, weight_decay=0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(images, labels, batch_size=64, epochs=epochs, verbose=0, shuffle=True)


def compiled(function, spec):
    """A `tf.function` of `function` for input `spec`; autograph off (no tensor-dependent Python here)."""
    return tf.function(function, input_signature=[spec], autograph=False)


def images_per_second(functions, images, rounds):
    """`{name: images/s}`: each function over every image of `images` (batch 1) or once (a batch), round-robin."""
    times = {name: [] for name in functions}
    for function, batched in functions.values():  # trace once, outside the timing
        function(images[:1] if not batched else images)
    for _ in range(rounds):
        for name, (function, batched) in functions.items():
            start = time.perf_counter()
            if batched:
                function(images).numpy()
            else:
                for i in range(len(images)):
                    function(images[i : i + 1]).numpy()
            times[name].append(time.perf_counter() - start)
    return {name: len(images) / float(np.median(t)) for name, t in times.items()}


def speed_only(variant, centers, rounds, keep_class_token=False, count=8):
    """Random weights: how fast the gathered path is at the depths some gate centres give.

    Besides the speed, each row gives the work the path really did: the blocks
    a token ran on it, averaged over tokens ("blocks run"), from the path's own
    depth count (eager, image by image). On the gathered path that stops at the
    class token's halt; the "mean depth" column is each token's own halt.
    """
    keras.utils.set_random_seed(0)
    model = keras_vit.build_vit(variant, adaptive_tokens=True)
    num_layers = model_config(model).num_layers
    images = np.random.default_rng(0).uniform(-1, 1, (count, 224, 224, 3)).astype("float32")
    disabled = plain_model(model)
    one = tf.TensorSpec((1, 224, 224, 3), tf.float32)
    functions = {"halting disabled": (compiled(lambda x: disabled(x, training=False), one), False)}
    rows = []  # (path, centre, mean depth, class token depth, blocks run)

    def gathered(x, center):
        return gathered_forward(model, x, halting_gate_center=center)

    def kept(x, center):
        return class_token_kept_forward(model, x, center)

    paths = [("gathered", gathered)] + ([("class token kept", kept)] if keep_class_token else [])
    for center in centers:
        depth = halting_model(model, halting_gate_center=center).predict(images, verbose=0)["depth"]
        for path, function in paths:
            ran = np.concatenate([function(x[None], center)[1] for x in images])
            mean_depth = depth[:, 1:].mean() if path == "gathered" else ran[:, 1:].mean()  # patches' own halts
            rows.append((path, center, mean_depth, float(ran[:, 0].mean()), float(ran.mean())))
            functions[f"{path}, centre {center}"] = (
                compiled(lambda x, function=function, center=center: function(x, center)[0], one),
                False,
            )
    speeds = images_per_second(functions, images, rounds)
    print(f"{variant} at 224, random weights, batch 1, {count} images; load average {os.getloadavg()[0]:.2f}\n")
    print("| path | gate centre | patch tokens' mean depth | class token depth | blocks run | images/s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    base = speeds["halting disabled"]
    print(f"| halting disabled | | {num_layers} | {num_layers} | {num_layers} | {base:.2f} | 1.00x |")
    for path, center, mean_depth, class_depth, ran in rows:
        speed = speeds[f"{path}, centre {center}"]
        print(
            f"| {path} | {center:g} | {mean_depth:.2f} | {class_depth:.2f} | {ran:.2f} | {speed:.2f} | "
            f"{speed / base:.2f}x |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=15, help="plain training")
    parser.add_argument("--fine-tune-epochs", type=int, default=10, help="A-ViT fine-tuning of the same weights")
    parser.add_argument("--gate-center", type=float, default=None, help="default: ViTConfig's (the paper's 30)")
    parser.add_argument("--ponder-loss-weight", type=float, default=None, help="default: ViTConfig's (5e-4)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--speed-only", metavar="VARIANT", help="random weights at 224, e.g. S/16: speed only")
    parser.add_argument("--gate-centers", type=float, nargs="+", default=[30.0, 5.0, 2.0, 0.0])
    parser.add_argument(
        "--keep-class-token", action="store_true", help="--speed-only: also with the class token never halting"
    )
    args = parser.parse_args()
    if args.speed_only:
        return speed_only(args.speed_only, args.gate_centers, args.rounds, args.keep_class_token)
    keras.utils.set_random_seed(0)
    splits = data.load("digits")
    (train_x, train_y), (test_x, test_y) = arrays(splits.train), arrays(splits.test)
    options = dict(image_size=32, num_classes=10, num_layers=args.num_layers)
    plain = keras_vit.build_vit("tiny/4", **options)
    fit(plain, train_x, train_y, args.epochs, 2e-3)
    adaptive = keras_vit.build_vit(
        "tiny/4",
        adaptive_tokens=True,
        halting_gate_center=args.gate_center,
        ponder_loss_weight=args.ponder_loss_weight,
        **options,
    )
    adaptive.set_weights(plain.get_weights())
    fit(adaptive, train_x, train_y, args.fine_tune_epochs, 5e-4)

    view, disabled = halting_model(adaptive), plain_model(adaptive)
    outputs = view.predict(test_x, batch_size=256, verbose=0)
    stats = halting_statistics(outputs["depth"], args.num_layers)
    top1 = {
        "plain model": np.mean(plain.predict(test_x, verbose=0).argmax(-1) == test_y),
        "A-ViT weights, halting disabled": np.mean(disabled.predict(test_x, verbose=0).argmax(-1) == test_y),
        "A-ViT masked (batched)": np.mean(outputs["logits"].argmax(-1) == test_y),
    }
    gathered = [gathered_forward(adaptive, tf.constant(x[None]))[0].numpy() for x in test_x[:64]]
    agree = np.mean(np.concatenate(gathered).argmax(-1) == outputs["logits"][:64].argmax(-1))

    signature = tf.TensorSpec((None, 32, 32, 3), tf.float32)
    one = tf.TensorSpec((1, 32, 32, 3), tf.float32)
    functions = {
        "plain model": (compiled(lambda x: plain(x, training=False), signature), False),
        "A-ViT weights, halting disabled": (
            compiled(lambda x: disabled(x, training=False), signature),
            False,
        ),
        "A-ViT masked (batched)": (
            compiled(lambda x: adaptive(x, training=False), signature),
            False,
        ),
        "A-ViT gathered (batch 1)": (
            compiled(lambda x: gathered_forward(adaptive, x)[0], one),
            False,
        ),
    }
    batch1 = images_per_second(functions, test_x[:64], args.rounds)
    batched = {name: (function, True) for name, (function, _) in functions.items() if "gathered" not in name}
    batch64 = images_per_second(batched, test_x[:64], args.rounds)

    print(
        f"digits, tiny width, {args.num_layers} blocks, 65 tokens; {args.epochs} epochs plain + "
        f"{args.fine_tune_epochs} A-ViT; load average {os.getloadavg()[0]:.2f}\n"
    )
    print(f"A-ViT mean depth {stats['mean_depth']:.2f} of {args.num_layers} blocks; active fraction per block:")
    print("  " + " ".join(f"{f:.2f}" for f in stats["active_fraction"]))
    print(f"gathered path agrees with the masked graph on {agree:.0%} of 64 test images\n")
    print("| model | top-1 | images/s, batch 1 | images/s, batch 64 |")
    print("|---|---|---|---|")
    for name in functions:
        accuracy = f"{top1[name]:.1%}" if name in top1 else "(as masked)"
        print(f"| {name} | {accuracy} | {batch1[name]:.0f} | {batch64.get(name, float('nan')):.0f} |")


if __name__ == "__main__":
    main()
