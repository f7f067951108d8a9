"""Where the time goes: TensorFlow's profiler over a few steps, summed by op type.

    python benchmarks/op_profile.py B/16 --task forward --batch 16
    python benchmarks/op_profile.py Ti/16 --task train --batch 32 --top 25
    python benchmarks/op_profile.py Ti/16 --task train --model keras_hub

Traces `--steps` steps after a warm-up with `tf.profiler.experimental`, reads
the executor threads of the trace (an `XSpace` protobuf, parsed with the protobuf
module TensorFlow ships, so no profiler plugin is needed) and prints each op
type's share of the summed op time.
"""

import argparse
import collections
import glob
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from peers import Case, keras_hub_model, keras_step, keras_vit_model  # noqa: E402  (beside this file)


def op_times(logdir):
    """`{op type: microseconds}` summed over the TensorFlow op events of the host plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):  # the executor's threads run the ops
                    continue
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name  # "scope/name:OpType"
                    if ":" in name and "::" not in name:
                        totals[name.rsplit(":", 1)[-1]] += event.duration_ps / 1e6
    return totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant")
    parser.add_argument("--task", choices=["forward", "train"], default="forward")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--model", choices=["keras_vit", "keras_hub"], default="keras_vit")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    import tensorflow as tf

    case = Case(args.variant, args.task, args.batch, args.image_size)
    build = keras_vit_model if args.model == "keras_vit" else keras_hub_model
    step = keras_step(build(case), case)
    step()
    step()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(args.steps):
            step()
        tf.profiler.experimental.stop()
        totals = op_times(logdir)
    busy = sum(totals.values())
    print(
        f"{args.model} {args.variant} {args.task} batch {args.batch}: "
        f"{busy / 1e3 / args.steps:.1f} ms of op time per step"
    )
    for op, micros in totals.most_common(args.top):
        print(f"  {op:>32}  {micros / 1e3 / args.steps:8.2f} ms  {micros / busy:6.1%}")


if __name__ == "__main__":
    main()
