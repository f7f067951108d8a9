"""What each design choice of the block is worth, measured round-robin in one process.

    python benchmarks/ablation.py [--variant B/16] [--batch 16] [--rounds 7]
    python benchmarks/ablation.py --task train --variant Ti/16 --batch 32 --kinds autodiff fused fused_xla

Candidates (same weights layout where it matters, same inputs):
- `keras_mha`: the first block, Keras' `MultiHeadAttention` (which calls
  `ops.dot_product_attention`) on 3-D tokens, MLP Dense on 3-D tokens;
- `autodiff`: today's block with Keras' `LayerNormalization` and GELU, whose
  gradients TensorFlow derives op by op (the block before the hand-written
  gradients of `keras_vit.layers.layer_norm` and `gelu_for_training`);
- `fused`: today's `TransformerBlock` (fused QKV, 2-D projections and MLP,
  hand-written LayerNorm and GELU gradients);
- `fused_xla`: the same compiled by XLA (`jit_compile=True`).
`--task forward` times the forward pass, `--task train` one `train_on_batch`
with AdamW. Prints images/s and the fraction of the float32 matmul roofline,
timed in the same rounds.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_vit  # noqa: E402
import keras_vit.model as vit_model  # noqa: E402

from peers import ROOFLINE_N, Case, keras_step, roofline_step, timed  # noqa: E402  (beside this file)


class AutodiffBlock(keras_vit.TransformerBlock):
    """Today's block with Keras' LayerNormalization and GELU: gradients derived op by op."""

    def build(self, input_shape):
        super().build(input_shape)
        for name in ("norm_1", "norm_2"):
            norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name=name)
            norm.build((None, input_shape[-1]))
            setattr(self, name, norm)

    def mlp(self, tokens, training=None):
        dim = tokens.shape[-1]
        y = keras.activations.gelu(self.mlp_dense_1(self.norm_2(keras.ops.reshape(tokens, (-1, dim)))))
        y = self.mlp_dense_2(self.dropout(y, training=training))
        return keras.ops.reshape(y, keras.ops.shape(tokens))


class KerasMHABlock(AutodiffBlock):
    """The first block: Keras `MultiHeadAttention`, 3-D Dense layers, Keras LayerNorm and GELU."""

    def build(self, input_shape):
        super().build(input_shape)
        dim = input_shape[-1]
        self.attention = keras.layers.MultiHeadAttention(self.num_heads, dim // self.num_heads, name="attention")
        self.attention.build(input_shape, input_shape)

    def call(self, tokens, training=None):
        y = self.norm_1(tokens)
        x = tokens + self.attention(y, y, training=training)
        return x + self.mlp_dense_2(keras.activations.gelu(self.mlp_dense_1(self.norm_2(x))))


BLOCKS = {"keras_mha": KerasMHABlock, "autodiff": AutodiffBlock}


def build(kind, case, images):
    """One step of the candidate: a forward pass or a `train_on_batch`."""
    block = BLOCKS.get(kind, keras_vit.TransformerBlock)
    vit_model.TransformerBlock, original = block, vit_model.TransformerBlock
    try:
        model = keras_vit.build_vit(case.variant)
    finally:
        vit_model.TransformerBlock = original
    xla = kind.endswith("xla")
    if case.task == "train":
        step = keras_step(model, case)
        if xla:
            model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=True)
        return step
    forward = tf.function(lambda x: model(x, training=False), jit_compile=xla)
    return lambda: forward(images).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="B/16")
    parser.add_argument("--task", choices=["forward", "train"], default="forward")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kinds", nargs="+", default=["keras_mha", "fused", "fused_xla"])
    args = parser.parse_args()
    case = Case(args.variant, args.task, args.batch)
    images = tf.random.normal((args.batch, 224, 224, 3))
    steps = {"roofline": roofline_step()}
    for kind in args.kinds:
        steps[kind] = build(kind, case, images)
    for step in steps.values():
        step(), step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(timed(step))
    roofline = 2 * ROOFLINE_N**3 / np.median(times["roofline"]) / 1e9
    flops = case.flops
    print(
        f"{args.variant} {args.task} batch {args.batch}, {args.rounds} rounds, roofline {roofline:.0f} GFLOP/s, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    for kind in args.kinds:
        median = np.median(times[kind])
        print(f"  {kind:>10}: {args.batch / median:7.2f} img/s  {flops / median / 1e9 / roofline:6.1%} of roofline")


if __name__ == "__main__":
    main()
