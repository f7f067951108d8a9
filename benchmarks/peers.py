"""keras_vit against keras-hub and timm, in one run, on this machine.

    python benchmarks/peers.py                        # B/16, Ti/16 forward; Ti/16, S/16 training
    python benchmarks/peers.py --variants B/16 --batch-sizes 16 --train-variants --rounds 7

Every case (variant, forward or training step, batch) is timed round-robin:
in each round the float32 matmul roofline, the case's matmuls alone (the
ceiling below), keras_vit, keras-hub's `ViTBackbone` (TensorFlow backend) and
timm (PyTorch, in a child process, `peers_torch.py` beside this file) each run one step
on the same shapes, so a machine shared with other work slows all of them
alike; medians are reported. FLOPs are 2 x multiply-adds of the forward pass
(3 x that for a training step), counted from the architecture. Peers that are
not installed (`pip install keras-vision-transformer[bench]`) are skipped with a note.

The roofline is one large square matmul; a ViT's matmuls are smaller and
thinner (Ti/16: 192 wide; attention: 197 x 64 per head), so TensorFlow's own
kernels run them below it. `matmuls_only` times exactly those matmuls, chained
at the model's shapes with nothing else (no LayerNorm, softmax, GELU, layout
transposes or optimizer): the most any TensorFlow implementation of the case
could reach, printed as each implementation's `of ceiling`.

The other scripts here import its helpers (`from peers import Case, keras_step, timed`): run as
`python benchmarks/X.py`, Python puts this folder first on `sys.path`.
"""

import argparse
import dataclasses
import os
import subprocess
import sys
import time

import numpy as np

from keras_vit import files
from keras_vit.config import parse_variant

ROOFLINE_N = 4096
CEILING = "matmuls_only"
# A pause before each timed step, so that the thread pools of the previous implementation (TensorFlow's
# or PyTorch's, which spin-wait after work) are parked and do not steal cycles from the next one.
SETTLE_SECONDS = 0.2


def flops_per_image(variant, image_size=224, num_classes=1000):
    """2 x multiply-adds of one image's forward pass (matmuls and the patch projection)."""
    arch, patch = parse_variant(variant)
    dim, mlp, patches = arch.hidden_dim, arch.mlp_dim, (image_size // patch) ** 2
    tokens = patches + 1
    block = tokens * dim * 4 * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * mlp
    return 2 * (patches * patch * patch * 3 * dim + arch.num_layers * block + dim * num_classes)


@dataclasses.dataclass
class Case:
    variant: str
    task: str  # "forward" or "train"
    batch: int
    image_size: int = 224

    @property
    def flops(self):
        return self.batch * flops_per_image(self.variant, self.image_size) * (3 if self.task == "train" else 1)


# --- the TensorFlow side ---------------------------------------------------------------


def keras_vit_model(case):
    import keras_vit

    return keras_vit.build_vit(case.variant, image_size=case.image_size, num_classes=1000)


def keras_hub_model(case):
    import keras
    import keras_hub

    from keras_vit.layers import ClassTokenPooling

    arch, patch = parse_variant(case.variant)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(case.image_size, case.image_size, 3),
        patch_size=patch,
        num_layers=arch.num_layers,
        num_heads=arch.num_heads,
        hidden_dim=arch.hidden_dim,
        mlp_dim=arch.mlp_dim,
    )
    logits = keras.layers.Dense(1000)(ClassTokenPooling()(backbone.output))
    return keras.Model(backbone.input, logits)


def keras_step(model, case):
    """One forward (`training=False`) or one optimizer step of a Keras model, as a callable."""
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (case.batch, case.image_size, case.image_size, 3)), tf.float32)
    if case.task == "forward":
        forward = tf.function(lambda x: model(x, training=False))
        return lambda: forward(images).numpy()
    labels = tf.constant(rng.integers(0, 1000, case.batch))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=loss, jit_compile=False)

    def train():
        model.train_on_batch(images, labels)

    return train


def matmuls_only(case):
    """The case's matmuls alone, chained at the model's shapes: the ceiling of any TF implementation.

    Per block: the fused query/key/value projection, both attention products per head, the output
    projection and the two MLP matmuls; plus the patch projection and the head. A training step
    differentiates the chain with respect to every weight, so its backward matmuls are the model's.
    """
    import tensorflow as tf

    arch, patch = parse_variant(case.variant)
    dim, heads, batch = arch.hidden_dim, arch.num_heads, case.batch
    tokens = (case.image_size // patch) ** 2 + 1
    init = tf.random_normal_initializer(stddev=0.02, seed=0)
    shapes = [(patch * patch * 3, dim), (dim, 1000)]
    shapes += [(dim, 3 * dim), (dim, dim), (dim, arch.mlp_dim), (arch.mlp_dim, dim)] * arch.num_layers
    weights = [tf.Variable(init(shape)) for shape in shapes]
    patches = tf.random.uniform((batch * tokens, patch * patch * 3), seed=0)

    def split(x, part):  # (B*T, 3D) -> (B*heads, T, d); same shapes as the model, without its transpose
        return tf.reshape(x[:, part * dim : (part + 1) * dim], (batch * heads, tokens, dim // heads))

    def forward():
        x = tf.matmul(patches, weights[0])
        for qkv, out, mlp_1, mlp_2 in zip(*[iter(weights[2:])] * 4):
            y = tf.matmul(x, qkv)
            logits = tf.matmul(split(y, 0), split(y, 1), transpose_b=True) * 1e-3  # keeps values finite
            x = tf.reshape(tf.matmul(logits, split(y, 2)), (batch * tokens, dim))
            x = tf.matmul(tf.matmul(tf.matmul(x, out), mlp_1), mlp_2)
        return tf.reduce_sum(tf.matmul(tf.reshape(x, (batch, tokens, dim))[:, 0], weights[1]))

    @tf.function
    def step():
        if case.task == "forward":
            return forward()
        with tf.GradientTape() as tape:
            loss = forward()
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, weights)])

    return step


def _numpy(function):
    return lambda: function().numpy()


def roofline_step():
    import tensorflow as tf

    a = tf.random.normal((ROOFLINE_N, ROOFLINE_N))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, a)))
    return lambda: matmul().numpy()


# --- timm, in a child process --------------------------------------------------------


class ChildSeconds(float):
    """Seconds measured inside the child process, reported instead of timed here."""


class TorchPeer:
    """timm in a child process (see `peers_torch.py`); `.note` says why if it is unavailable."""

    def __init__(self):
        # Its own process, by path: this one has TensorFlow, and torchvision (timm) crashes beside it.
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers_torch.py")
        self.process = subprocess.Popen(
            [sys.executable, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        status = self.process.stdout.readline().strip()
        self.note = None if status == "ready" else (status or "timm child process failed")

    def step(self, case):
        def run():
            self.process.stdin.write(f"{case.task} {case.variant} {case.batch} {case.image_size}\n")
            self.process.stdin.flush()
            return ChildSeconds(self.process.stdout.readline())

        run()  # builds and warms up
        return run

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=30)


# --- running -------------------------------------------------------------------------


def timed(step):
    """Seconds of one call; a step that times itself (the child process) returns its own."""
    start = time.perf_counter()
    inner = step()
    return inner if isinstance(inner, ChildSeconds) else time.perf_counter() - start


def measure(case, peers, torch_peer, rounds):
    """`{name: [seconds per round]}` for `roofline` and every implementation, round-robin."""
    steps = {"roofline": roofline_step(), CEILING: _numpy(matmuls_only(case))}
    for name, build in peers.items():
        model = build(case)
        steps[name] = keras_step(model, case)
    if torch_peer is not None and torch_peer.note is None:
        steps["timm"] = torch_peer.step(case)
    for step in steps.values():
        step()  # trace and warm up
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            time.sleep(SETTLE_SECONDS)
            times[name].append(timed(step))
    return times


def summarize(case, times):
    """One result row per implementation: images/s, fraction of the roofline, ratios vs peers."""
    roofline = 2 * ROOFLINE_N**3 / float(np.median(times["roofline"])) / 1e9
    rows = {}
    for name, seconds in times.items():
        if name == "roofline":
            continue
        median = float(np.median(seconds))
        rows[name] = {
            "images_per_second": case.batch / median,
            "gflops": case.flops / median / 1e9,
            "roofline_fraction": case.flops / median / 1e9 / roofline,
        }
    peers = [name for name in rows if name != CEILING]
    for name in peers:
        row = rows[name]
        row["ratio_vs"] = {
            peer: row["images_per_second"] / rows[peer]["images_per_second"] for peer in peers if peer != name
        }
        if CEILING in rows:
            row["ceiling_fraction"] = row["images_per_second"] / rows[CEILING]["images_per_second"]
    return {**dataclasses.asdict(case), "roofline_gflops": roofline, "results": rows}


def _peers(skip):
    """The Keras implementations that can run here, and notes for those that cannot."""
    peers, notes = {"keras_vit": keras_vit_model}, []
    if "keras_hub" not in skip:
        try:
            import keras_hub  # noqa: F401

            peers["keras_hub"] = keras_hub_model
        except ImportError as e:
            notes.append(f"keras-hub skipped: {e} (pip install keras-vision-transformer[bench])")
    return peers, notes


def _print_row(row):
    case = f"{row['variant']:>5} {row['task']:>7} batch {row['batch']:>2}"
    print(f"{case}  (roofline {row['roofline_gflops']:.0f} GFLOP/s)")
    for name, r in row["results"].items():
        ceiling = f"  {r['ceiling_fraction']:6.1%} of ceiling" if "ceiling_fraction" in r else " " * 20
        ratios = "  ".join(f"{r['ratio_vs'][p]:.2f}x {p}" for p in r.get("ratio_vs", {}))
        line = f"    {name:>12}: {r['images_per_second']:8.2f} img/s  {r['roofline_fraction']:6.1%} of roofline{ceiling}  {ratios}"
        print(line.rstrip())


def run(args):
    """Runs every case, prints a table, writes JSON and a bar chart."""
    cases = [Case(v, "forward", b, args.image_size) for v in args.variants for b in args.batch_sizes]
    cases += [Case(v, "train", args.train_batch_size, args.image_size) for v in args.train_variants]
    peers, notes = _peers(args.skip)
    torch_peer = None if "timm" in args.skip else TorchPeer()
    if torch_peer is not None and torch_peer.note:
        notes.append(f"timm skipped: {torch_peer.note} (pip install keras-vision-transformer[bench])")
    for note in notes:
        print(note)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; {args.rounds} rounds")
    rows = []
    try:
        for case in cases:
            rows.append(summarize(case, measure(case, peers, torch_peer, args.rounds)))
            _print_row(rows[-1])
    finally:
        if torch_peer is not None:
            torch_peer.close()
    report = {"cpus": os.cpu_count(), "load_average_end": os.getloadavg(), "notes": notes, "rows": rows}
    os.makedirs(args.output, exist_ok=True)
    files.write_json(os.path.join(args.output, "benchmark.json"), report)
    plot(rows, os.path.join(args.output, "benchmark.png"))
    print(f"Wrote {args.output}/benchmark.json and benchmark.png")


def plot(rows, path):
    """One group of bars per case: each implementation's fraction of the roofline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({name for row in rows for name in row["results"]})
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(rows), 4))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        values = [row["results"].get(name, {}).get("roofline_fraction", 0) for row in rows]
        ax.bar(np.arange(len(rows)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(rows)) + width * (len(names) - 1) / 2)
    ax.set_xticklabels([f"{r['variant']}\n{r['task']} b{r['batch']}" for r in rows])
    ax.set_ylabel("fraction of float32 matmul roofline")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="*", default=["B/16", "Ti/16"], help="forward pass (default: B/16 Ti/16)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16], help="forward (default: 1 16)")
    parser.add_argument(
        "--train-variants", nargs="*", default=["Ti/16", "S/16"], help="training step (default: Ti/16 S/16)"
    )
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per implementation (default: 5)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["keras_hub", "timm"])
    parser.add_argument("--output", default="runs/benchmark", help="folder for JSON and PNG (default: runs/benchmark)")
    return parser


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
