"""What each forward-pass choice is worth, measured round-robin in one process.

    python benchmarks/ablation.py [--variant B/16] [--batch 16] [--rounds 7]

Candidates (same weights layout where it matters, same inputs):
- `keras_mha`: the previous block, Keras' `MultiHeadAttention` (which calls
  `ops.dot_product_attention`) on 3-D tokens, MLP Dense on 3-D tokens;
- `fused`: today's `TransformerBlock` (fused QKV, 2-D projections and MLP);
- `fused_xla`: the same under `tf.function(jit_compile=True)`.
Prints images/s and the fraction of the float32 matmul roofline, timed in
the same rounds.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_vit  # noqa: E402
import keras_vit.model as vit_model  # noqa: E402
from keras_vit.benchmark import ROOFLINE_N, _timed, flops_per_image, roofline_step  # noqa: E402


class KerasMHABlock(keras_vit.TransformerBlock):
    """The block as it was: Keras `MultiHeadAttention`, 3-D Dense layers."""

    def build(self, input_shape):
        super().build(input_shape)
        dim = input_shape[-1]
        self.attention = keras.layers.MultiHeadAttention(self.num_heads, dim // self.num_heads, name="attention")
        self.attention.build(input_shape, input_shape)

    def call(self, tokens, training=None):
        y = self.norm_1(tokens)
        x = tokens + self.attention(y, y, training=training)
        return x + self.mlp_dense_2(self.mlp_dense_1(self.norm_2(x)))


def build(kind, variant):
    block = KerasMHABlock if kind == "keras_mha" else keras_vit.TransformerBlock
    vit_model.TransformerBlock, original = block, vit_model.TransformerBlock
    try:
        model = keras_vit.build_vit(variant)
    finally:
        vit_model.TransformerBlock = original
    return tf.function(lambda x: model(x, training=False), jit_compile=kind.endswith("xla"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="B/16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kinds", nargs="+", default=["keras_mha", "fused", "fused_xla"])
    args = parser.parse_args()
    images = tf.random.normal((args.batch, 224, 224, 3))
    steps = {"roofline": roofline_step()}
    for kind in args.kinds:
        forward = build(kind, args.variant)
        steps[kind] = lambda forward=forward: forward(images).numpy()
    for step in steps.values():
        step(), step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(_timed(step))
    roofline = 2 * ROOFLINE_N**3 / np.median(times["roofline"]) / 1e9
    flops = flops_per_image(args.variant) * args.batch
    print(f"{args.variant} batch {args.batch}, {args.rounds} rounds, roofline {roofline:.0f} GFLOP/s, "
          f"load average {os.getloadavg()[0]:.2f}")
    for kind in args.kinds:
        median = np.median(times[kind])
        print(f"  {kind:>10}: {args.batch / median:7.2f} img/s  {flops / median / 1e9 / roofline:6.1%} of roofline")


if __name__ == "__main__":
    main()
