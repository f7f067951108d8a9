"""What each elementwise part of a block costs a training step, on top of the matmuls.

    python benchmarks/ladder.py Ti/16 --batch 32
    python benchmarks/ladder.py S/16 --batch 32 --task forward

Builds the ViT's blocks from raw TensorFlow ops at the model's shapes (no
Keras, no patch embedding or head): first the matmuls with their biases,
residual adds, head transposes and softmax (the `base`), then the base plus
one more part, each written two ways where it matters: as TensorFlow ops left
to autodiff, and with the hand-written gradients of `keras_vit.layers`. Every
variant runs round-robin in one process; the table prints each one's time
per step and what it adds to the base.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_vit.config import parse_variant  # noqa: E402
from keras_vit.layers import gelu_for_training, layer_norm  # noqa: E402


def autodiff_layer_norm(x, gamma, beta, epsilon=1e-6):
    mean, variance = tf.nn.moments(x, [-1], keepdims=True)
    inv = tf.math.rsqrt(variance + epsilon) * gamma
    return x * inv + (beta - mean * inv)  # Keras' own formulation


NORMS = {"autodiff": autodiff_layer_norm, "hand-written": lambda x, g, b: layer_norm(x, g, b, 1e-6)}
GELUS = {
    "autodiff (erfc, tf.nn.gelu)": lambda x: tf.nn.gelu(x, approximate=False),
    "autodiff (erf)": lambda x: 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476)),
    "hand-written": gelu_for_training,
}


def make_step(variant, batch, task, norm=None, gelu=None, adam=False, tokens=197):
    """One step of `variant`'s blocks with the given LayerNorm / GELU (None: left out)."""
    arch, _ = parse_variant(variant)
    dim, mlp, heads = arch.hidden_dim, arch.mlp_dim, arch.num_heads
    init = tf.random_normal_initializer(stddev=0.05, seed=0)
    shapes = [(dim, 3 * dim), (3 * dim,), (dim, dim), (dim,), (dim, mlp), (mlp,), (mlp, dim), (dim,)] * arch.num_layers
    weights = [tf.Variable(init(s) if len(s) == 2 else tf.zeros(s)) for s in shapes]
    norms = [tf.Variable(tf.ones(dim) if i % 2 == 0 else tf.zeros(dim)) for i in range(4 * arch.num_layers)]
    x0 = tf.random.normal((batch * tokens, dim), seed=0)

    def forward(x):
        for i in range(arch.num_layers):
            w_qkv, b_qkv, w_out, b_out, w_1, b_1, w_2, b_2 = weights[8 * i : 8 * i + 8]
            g_1, be_1, g_2, be_2 = norms[4 * i : 4 * i + 4]
            h = norm(x, g_1, be_1) if norm else x
            qkv = tf.transpose(tf.reshape(tf.matmul(h, w_qkv) + b_qkv, (batch, tokens, 3, heads, -1)), (2, 0, 3, 1, 4))
            q, k, v = tf.unstack(qkv, 3, axis=0)
            weights_ = tf.nn.softmax(tf.matmul(q * 0.125, k, transpose_b=True))
            y = tf.reshape(tf.transpose(tf.matmul(weights_, v), (0, 2, 1, 3)), (batch * tokens, dim))
            x = x + tf.matmul(y, w_out) + b_out
            h = tf.matmul(norm(x, g_2, be_2) if norm else x, w_1) + b_1
            x = x + tf.matmul(gelu(h) if gelu else h, w_2) + b_2
        return tf.reduce_mean(tf.square(x))

    variables = weights + (norms if norm else [])
    optimizer = keras.optimizers.AdamW(1e-4)
    optimizer.build(variables)

    @tf.function
    def step():
        if task == "forward":
            return forward(x0)
        with tf.GradientTape() as tape:
            loss = forward(x0)
        gradients = tape.gradient(loss, variables)
        if adam:
            optimizer.apply(gradients, variables)
            return loss
        return tf.add_n([tf.reduce_sum(g) for g in gradients])

    return lambda: step().numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", nargs="?", default="Ti/16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--task", choices=["forward", "train"], default="train")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    run = dict(variant=args.variant, batch=args.batch, task=args.task)
    steps = {"base (matmuls, biases, residuals, transposes, softmax)": make_step(**run)}
    steps.update({f"+ LayerNorm, {name}": make_step(**run, norm=fn) for name, fn in NORMS.items()})
    steps.update({f"+ GELU, {name}": make_step(**run, gelu=fn) for name, fn in GELUS.items()})
    if args.task == "train":
        steps["+ AdamW"] = make_step(**run, adam=True)
    for step in steps.values():
        step(), step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            time.sleep(0.1)
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    base = np.median(next(iter(times.values())))
    print(
        f"{args.variant} {args.task}, batch {args.batch}, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| variant | ms per step | added to the base |")
    print("|---|---|---|")
    for name, seconds in times.items():
        median = np.median(seconds)
        print(f"| {name} | {1e3 * median:.0f} | {1e3 * (median - base):+.0f} ms |")


if __name__ == "__main__":
    main()
