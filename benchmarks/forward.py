"""Forward images/second of keras_vit models on this machine, with the matmul roofline.

    python benchmarks/forward.py [--variants B/16 Ti/16] [--batch-sizes 1 16] [--seconds 10]

Prints one row per (variant, batch size): images/second, milliseconds per batch, and the
fraction of the measured float32 matmul throughput reached (FLOPs = 2 x multiply-adds).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_vit  # noqa: E402


def timed(fn, seconds):
    fn()  # trace and warm up
    fn()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 3:
        fn()
        runs += 1
    return (time.perf_counter() - start) / runs


def matmul_gflops(n=4096, seconds=5):
    a = tf.random.normal((n, n))
    step = tf.function(lambda: tf.reduce_sum(tf.matmul(a, a)))
    return 2 * n**3 / timed(lambda: step().numpy(), seconds) / 1e9


def forward_flops(model):
    """2 x multiply-adds of one image's forward pass, from TensorFlow's own profiler."""
    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((1, *model.input_shape[1:]))).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["B/16", "Ti/16"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    roofline = matmul_gflops()
    print(f"float32 matmul 4096^3: {roofline:.0f} GFLOP/s on {os.cpu_count()} cores, TF {tf.__version__}")
    rows = []
    for variant in args.variants:
        model = keras_vit.build_vit(variant, image_size=args.image_size)
        flops = forward_flops(model)
        step = tf.function(lambda x, model=model: model(x, training=False))
        for batch in args.batch_sizes:
            x = tf.constant(
                np.random.default_rng(0).uniform(-1, 1, (batch, args.image_size, args.image_size, 3)), tf.float32
            )
            seconds = timed(lambda step=step, x=x: step(x).numpy(), args.seconds)
            row = {
                "variant": variant,
                "batch": batch,
                "images_per_second": round(batch / seconds, 2),
                "ms_per_batch": round(1000 * seconds, 1),
                "gflop_per_image": round(flops / 1e9, 2),
                "roofline_fraction": round(flops * batch / seconds / 1e9 / roofline, 3),
            }
            rows.append(row)
            print(
                f"{variant:>6} batch {batch:>3}: {row['images_per_second']:8.2f} img/s  "
                f"{row['ms_per_batch']:8.1f} ms/batch  {row['roofline_fraction']:.0%} of the matmul roofline"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"roofline_gflops": roofline, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
