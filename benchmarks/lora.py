"""LoRA against full fine-tuning from the same checkpoint: trainable parameters, peak memory, step time.

    python benchmarks/lora.py [--variant S/16] [--image-size 224] [--batch-size 16] [--rank 4] [--steps 10]
    python benchmarks/lora.py --quick       # tiny/4 at 32, a few steps

Each way runs in its own process (peak memory is the process's high-water mark, `ru_maxrss`,
which TensorFlow's CPU allocator does not report otherwise): the model is built with random
weights (the checkpoint), then `full` trains every weight with AdamW, `lora` trains rank-`r`
adapters on qkv + proj and the head (`keras_vit.enable_lora`, as `keras-vit train --lora`),
`lora_mlp` adds the MLP to the targets, `probe` trains the head alone (`--freeze-backbone`), and
`full_bfloat16` is `full` under Keras' `mixed_bfloat16` policy (`keras-vit train --precision
mixed_bfloat16`: bfloat16 compute, float32 weights; fast where the CPU has AVX-512 BF16 or AMX,
whose flags the report's first line gives).
Step time is the median `train_on_batch` after two warm-up steps; the ways run `--repeats` times
round-robin (each in a new process) and each way's fastest process counts, so that a change of load
elsewhere does not favour the way that happened to run in a quiet minute. Accuracy is not measured here:
`docs/fine_tuning.md` gives the runs' test top-1 with their commands.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

WAYS = ("full", "lora", "lora_mlp", "probe", "full_bfloat16")


def run_one(way, variant, image_size, batch_size, rank, steps):
    """Trains `steps` steps one way in this process; returns its row."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    import keras_vit
    from keras_vit.training.train import freeze_backbone

    if way == "full_bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    model = keras_vit.build_vit(variant, image_size=image_size, num_classes=10)
    if way == "lora":
        keras_vit.enable_lora(model, rank)
    elif way == "lora_mlp":
        keras_vit.enable_lora(model, rank, targets=("qkv", "proj", "mlp"))
    elif way == "probe":
        freeze_backbone(model)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, 10, batch_size)
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return {
        "way": way,
        "trainable_parameters": trainable,
        "total_parameters": model.count_params(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "step_ms": 1000 * float(np.median(times)),
    }


def _bfloat16_flags():
    """The CPU's bfloat16 instructions, as /proc/cpuinfo names them ("none" without)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    return " ".join(sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile"))) or "none"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="S/16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny/4 at 32x32, batch 64, 5 steps")
    parser.add_argument("--repeats", type=int, default=2, help="processes per way, round-robin; the fastest counts")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--one", choices=WAYS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.quick:
        args.variant, args.image_size, args.batch_size, args.steps, args.repeats = "tiny/4", 32, 64, 5, 1
    settings = (args.variant, args.image_size, args.batch_size, args.rank, args.steps)
    if args.one:
        print(json.dumps(run_one(args.one, *settings)))
        return
    runs = {way: [] for way in WAYS}
    for _ in range(args.repeats):  # round-robin: a load change elsewhere hits every way alike
        for way in WAYS:
            command = [sys.executable, __file__, "--one", way, "--variant", args.variant, "--image-size",
                       str(args.image_size), "--batch-size", str(args.batch_size), "--rank", str(args.rank),
                       "--steps", str(args.steps)]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[way].append(json.loads(result.stdout.strip().splitlines()[-1]))
    # Each way's fastest process (the least disturbed by others); its peak memory is the same in each.
    rows = [min(found, key=lambda row: row["step_ms"]) for found in runs.values()]
    full = rows[0]
    print(
        f"{args.variant} at {args.image_size}, batch {args.batch_size}, LoRA rank {args.rank}, {os.cpu_count()} cores, "
        f"CPU flags: {_bfloat16_flags()}"
    )
    print("| way | trainable parameters | share | peak RSS (MB) | step (ms) | step vs full |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['way']} | {r['trainable_parameters']:,} | {r['trainable_parameters'] / r['total_parameters']:.2%} "
            f"| {r['peak_rss_mb']:.0f} | {r['step_ms']:.0f} | {r['step_ms'] / full['step_ms']:.2f}x |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
