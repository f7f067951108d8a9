"""torch's train step with OpenMP threads that spin while they wait (the default) and that sleep.

    python benchmarks/omp_wait.py [--variant tiny/4] [--image-size 32] [--batch-size 64] [--steps 5]

`keras-vit` sets `OMP_WAIT_POLICY=PASSIVE` (unless set) before torch loads: on a CPU that others
share (tf.data's threads in the same process, neighbours' jobs), a spinning OpenMP thread holds a
core that someone else needs. Each policy runs in its own process (the runtime reads the variable
once, at load) on the torch backend: the median `train_on_batch` time after two warm-up steps
(`benchmarks/lora.py`'s `full` way: AdamW on random images). Run
it on a busy and on a quiet machine; only the ratio of one run compares (quiet, spinning is a
little faster on this step alone: docs/training.md has both).
"""

import argparse
import json
import os
import subprocess
import sys


def one(variant, image_size, batch_size, steps):
    """One process's median step (ms): `benchmarks/lora.py`'s full fine-tuning step, on this backend."""
    from lora import run_one

    return run_one("full", variant, image_size, batch_size, rank=4, steps=steps)["step_ms"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tiny/4")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    settings = (args.variant, args.image_size, args.batch_size, args.steps)
    if args.one:
        print(json.dumps(one(*settings)))
        return
    rows = {}
    for policy in ("ACTIVE", "PASSIVE"):
        env = {**os.environ, "KERAS_BACKEND": "torch", "OMP_WAIT_POLICY": policy, "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [sys.executable, __file__, "--one", "--variant", args.variant, "--image-size",
                   str(args.image_size), "--batch-size", str(args.batch_size), "--steps", str(args.steps)]  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        rows[policy] = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"torch, {args.variant} at {args.image_size}, batch {args.batch_size}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    for policy, ms in rows.items():
        print(f"OMP_WAIT_POLICY={policy}: {ms:.0f} ms a step ({rows['ACTIVE'] / ms:.2f}x ACTIVE's speed)")


if __name__ == "__main__":
    main()
