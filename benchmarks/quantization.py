"""Inference speed of float32, bfloat16 and Keras' quantized modes on this CPU, in the same run.

    python benchmarks/quantization.py [--variant S/16] [--image-size 224] [--batch-sizes 1 8] [--seconds 5]
    python benchmarks/quantization.py --quick          # tiny/4 at 32 (the digits model), a few seconds each

One model with random weights is measured as float32, as its `mixed_bfloat16` copy
(`keras_vit.deploy.precision`) and after `model.quantize(mode)` for int8, int4 and float8, each
compiled (`predict_on_batch`, as `keras-vit predict` and the parity report run it) and eagerly
(`model(x)`). The rounds are interleaved (float32, bfloat16, int8, ... then again) and the
median kept, so that another process's load hits every row alike; speeds are reported against
float32 of the same run. The CPU's bfloat16/int8 instructions are printed with them: bfloat16 and
int8 pay only where oneDNN has them (AVX-512 BF16, AMX, VNNI).

Not named `compression.py`: this folder is on `sys.path` when a benchmark runs, and JAX imports the
`compression` package (`from compression import zstd`), which a file of that name would shadow.
"""

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit.deploy.precision import bfloat16_copy, cpu_flags  # noqa: E402

MODES = ("float32", "bfloat16", "int8", "int4", "float8")


def models(variant, image_size):
    """`{mode: model}`, all holding the same random weights."""
    base = keras_vit.build_vit(variant, image_size=image_size, num_classes=1000)
    rng = np.random.default_rng(0)
    for weight in base.weights:
        weight.assign(rng.normal(scale=0.02, size=weight.shape).astype("float32"))
    built = {"float32": base, "bfloat16": bfloat16_copy(base)}
    for mode in MODES[2:]:
        copy = keras_vit.build_vit(variant, image_size=image_size, num_classes=1000)
        copy.set_weights(base.get_weights())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a `quantize` method")
            copy.quantize(mode)
        built[mode] = copy
    return built


def measure(built, batch, seconds, rounds=3):
    """`{(mode, "compiled" | "eager"): median seconds per batch}` over interleaved rounds."""
    x = np.random.default_rng(1).uniform(-1, 1, (batch, *built["float32"].input_shape[1:])).astype("float32")
    calls = {}
    for mode, model in built.items():
        calls[(mode, "compiled")] = lambda m=model: m.predict_on_batch(x)
        calls[(mode, "eager")] = lambda m=model: np.asarray(m(x, training=False))
    for call in calls.values():  # trace and warm up
        call()
        call()
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            runs, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / rounds or runs < 2:
                call()
                runs += 1
            times[key].append((time.perf_counter() - start) / runs)
    return {key: float(np.median(values)) for key, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="S/16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--seconds", type=float, default=5, help="per row and batch size, over 3 rounds")
    parser.add_argument("--quick", action="store_true", help="tiny/4 at 32x32, 1 s per row")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if args.quick:
        args.variant, args.image_size, args.seconds = "tiny/4", 32, 1.0
    cpu, flags = cpu_flags()
    print(f"{args.variant} at {args.image_size}, {os.cpu_count()} cores, {cpu}; flags: {' '.join(flags) or 'none'}")
    built = models(args.variant, args.image_size)
    rows = []
    for batch in args.batch_sizes:
        timings = measure(built, batch, args.seconds)
        for way in ("compiled", "eager"):
            reference = timings[("float32", way)]
            for mode in MODES:
                seconds = timings[(mode, way)]
                rows.append(
                    {"batch": batch, "call": way, "mode": mode, "ms_per_batch": 1000 * seconds,
                     "images_per_s": batch / seconds, "speed_vs_float32": reference / seconds}
                )  # fmt: skip
    print("| batch | call | mode | ms/batch | images/s | speed vs float32 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['call']} | {r['mode']} | {r['ms_per_batch']:.1f} | {r['images_per_s']:.1f} "
            f"| {r['speed_vs_float32']:.2f}x |"
        )
    if args.json:
        report = {"variant": args.variant, "image_size": args.image_size, "cpu": cpu, "flags": flags, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
