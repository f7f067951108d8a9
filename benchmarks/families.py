"""Forward speed of each ViT family, keras_vit against timm, in one run, on this machine.

    python benchmarks/families.py                     # S size (timm's base configs narrowed to S), batch 8
    python benchmarks/families.py --size B --batch 16 --rounds 5
    python benchmarks/families.py --quick             # tiny models at 32 px: checks the script, times nothing useful

Each family is built from random weights on both sides with the same architecture (timm's
model name, with `embed_dim`/`depth`/`num_heads` narrowed to the size asked; keras_vit's
`build_vit` with the family's options) and timed round-robin: in each round keras_vit (a
`tf.function` forward, TensorFlow backend) and timm (`torch.inference_mode`, in a child
process: torchvision, which timm imports, crashes beside TensorFlow) each run one forward
pass on a batch of the same shape; medians are reported. A machine shared with other work
slows both alike, but the absolute numbers are only as steady as the machine.

Both sides' parameter counts are reported: equal counts say the two build the same architecture.

This file is also the child: `--torch-child` reads `<family> <size> <batch>` lines and answers
`<seconds> <parameters>` of one timed forward; it imports neither TensorFlow nor keras_vit.
"""

import argparse
import os
import subprocess
import sys
import time

# family: (timm name, keras_vit options, patch size). timm's base names: SigLIP and CLIP have no
# smaller ones; the size's width, depth and heads are passed to both sides.
FAMILIES = {
    "deit3": ("deit3_base_patch16_224", dict(layer_scale_init=1e-6, embed_prefix_tokens=False), 16),
    "deit_distilled": ("deit_base_distilled_patch16_224", dict(distillation=True), 16),
    "dinov2_registers": (
        "vit_base_patch14_reg4_dinov2",
        dict(num_register_tokens=4, layer_scale_init=1e-5, embed_prefix_tokens=False, dynamic_image_size=True),
        14,
    ),
    "siglip": ("vit_base_patch16_siglip_224", dict(pooling="map", activation="gelu_tanh"), 16),
    "clip": (
        "vit_base_patch16_clip_quickgelu_224",
        dict(pre_norm=True, patch_bias=False, activation="quick_gelu", layer_norm_epsilon=1e-5),
        16,
    ),
    "gap_fc_norm": ("vit_base_patch16_224", dict(pooling="gap", class_token=True, pooled_norm=True), 16),
    # Issue 20's families, as their records build them (timm's default pooling: the patch mean); `rotary` holds
    # a `keras_vit.config.Rotary`'s fields (this file's timm child imports no keras_vit).
    "dinov3": (
        "vit_base_patch16_dinov3",
        dict(
            rotary={},
            position_embedding=False,
            num_register_tokens=4,
            layer_scale_init=1e-5,
            qkv_bias=False,
            layer_norm_epsilon=1e-5,
            pooling="gap",
            class_token=True,
        ),
        16,
    ),  # fmt: skip
    "eva02": (
        "eva02_base_patch14_224",
        dict(
            rotary=dict(coordinates="index", temperature=10000.0, reference_grid=(16, 16), rotate_half=False),
            mlp="swiglu",
            mlp_norm=True,
            key_bias=False,
            pooling="gap",
            class_token=True,
            pooled_norm=True,
        ),
        14,
    ),  # fmt: skip
    "pe_core": (
        "vit_pe_core_base_patch16_224",
        dict(
            rotary=dict(
                coordinates="index",
                temperature=10000.0,
                reference_grid=(14, 14),
                grid_offset=1.0,
                grid_indexing="xy",
                rotate_half=False,
            ),
            pooling="map",
            class_token=True,
            pre_norm=True,
            patch_bias=False,
            map_num_heads=8,
            layer_norm_epsilon=1e-5,
        ),
        16,
    ),  # fmt: skip
    "aimv2": (
        "aimv2_large_patch14_224",
        dict(
            norm="rmsnorm",
            mlp="swiglu",
            qkv_bias=False,
            proj_bias=False,
            mlp_bias=False,
            patch_norm=True,
            pooling="gap",
            layer_norm_epsilon=1e-5,
        ),
        14,
    ),  # fmt: skip
}
TIMM_OPTIONS = {"gap_fc_norm": dict(global_pool="avg")}  # timm's fc_norm follows from avg pooling
# The MLP's width over the model's, where it is not timm's 4 (SwiGLU: each half; timm's factories' ratios).
MLP_RATIO = {"eva02": 4 * 2 / 3, "aimv2": 2816 / 1024}
# size: (hidden_dim, num_layers, num_heads, image size in patches per side); MLP 4x wide, as timm.
SIZES = {"quick": (64, 2, 2, 2), "S": (384, 12, 6, None), "B": (768, 12, 12, None)}
NUM_CLASSES = 1000


def image_size(family, size):
    patch = FAMILIES[family][2]
    side = SIZES[size][3]
    return patch * side if side else 224


# --- the timm side (child process) ----------------------------------------------------------


def timm_forward(family, size, batch):
    import timm
    import torch

    name, _, _ = FAMILIES[family]
    dim, depth, heads, _ = SIZES[size]
    model = timm.create_model(
        name,
        pretrained=False,
        num_classes=NUM_CLASSES,
        img_size=image_size(family, size),
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        **({"mlp_ratio": MLP_RATIO[family]} if family in MLP_RATIO else {}),
        **TIMM_OPTIONS.get(family, {}),
    )
    model.train(False)  # inference mode (what torch calls eval)
    images = torch.randn(batch, 3, image_size(family, size), image_size(family, size))

    def step():
        with torch.inference_mode():
            model(images)

    step.params = sum(p.numel() for p in model.parameters())
    return step


def torch_child():
    try:
        import timm  # noqa: F401
        import torch
    except ImportError as e:
        print(f"unavailable: {e}", flush=True)
        return
    torch.manual_seed(0)
    print("ready", flush=True)
    steps = {}
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        family, size, batch = line.split()
        key = (family, size, int(batch))
        if key not in steps:
            steps[key] = timm_forward(*key)
            steps[key]()  # warm-up
        start = time.perf_counter()
        steps[key]()
        print(time.perf_counter() - start, steps[key].params, flush=True)


class TimmChild:
    """This file as a child process running timm; `.note` says why when it cannot."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--torch-child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        status = self.process.stdout.readline().strip()
        self.note = None if status == "ready" else (status or "timm child process failed")

    def step(self, family, size, batch):
        """`(run, parameters)`: `run()` times one forward in the child."""
        from peers import ChildSeconds

        def run():
            self.process.stdin.write(f"{family} {size} {batch}\n")
            self.process.stdin.flush()
            seconds, params = self.process.stdout.readline().split()
            run.params = int(params)
            return ChildSeconds(seconds)

        run()  # builds and warms up
        return run

    def close(self):
        from peers import TorchPeer

        TorchPeer.close(self)  # the same protocol's `quit`


# --- the keras_vit side ---------------------------------------------------------------------


def keras_vit_forward(family, size, batch):
    import keras_vit

    from peers import Case, keras_step

    _, options, patch = FAMILIES[family]
    if "rotary" in options:
        options = {**options, "rotary": keras_vit.config.Rotary(**options["rotary"])}
    dim, depth, heads, _ = SIZES[size]
    model = keras_vit.build_vit(
        keras_vit.ViTConfig(
            hidden_dim=dim,
            num_layers=depth,
            num_heads=heads,
            mlp_dim=int(dim * MLP_RATIO.get(family, 4)),
            patch_size=patch,
            image_size=image_size(family, size),
            num_classes=NUM_CLASSES,
            **options,
        )
    )
    return keras_step(model, Case(f"{family}", "forward", batch, image_size(family, size))), model.count_params()


def run(args):
    """Times every family, prints a table, writes JSON."""
    import numpy as np

    from keras_vit import files

    from peers import SETTLE_SECONDS, timed

    size, batch = ("quick", 2) if args.quick else (args.size, args.batch)
    rounds = 1 if args.quick else args.rounds
    child = None if args.skip_timm else TimmChild()
    notes = (
        [f"timm skipped: {child.note} (pip install keras-vision-transformer[bench])"] if child and child.note else []
    )
    print(*notes, sep="\n") if notes else None
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; size {size}, batch {batch}")
    print("| family | image | params (keras_vit / timm) | keras_vit img/s | timm img/s | keras_vit / timm |")
    print("|---|---|---|---|---|---|")
    rows = []
    try:
        for family in args.families:
            steps = {}
            steps["keras_vit"], params = keras_vit_forward(family, size, batch)
            if child is not None and child.note is None:
                steps["timm"] = child.step(family, size, batch)
            steps["keras_vit"]()  # trace and warm up
            times = {name: [] for name in steps}
            for _ in range(rounds):
                for name, step in steps.items():
                    time.sleep(SETTLE_SECONDS)
                    times[name].append(timed(step))
            speed = {name: batch / float(np.median(seconds)) for name, seconds in times.items()}
            ratio = speed["keras_vit"] / speed["timm"] if "timm" in speed else None
            timm_params = steps["timm"].params if "timm" in steps else None
            rows.append(dict(family=family, image_size=image_size(family, size), params=params,
                             timm_params=timm_params, images_per_second=speed, keras_vit_vs_timm=ratio,
                             seconds=times))  # fmt: skip
            timm_text = f"{speed['timm']:.1f}" if "timm" in speed else "-"
            ratio_text = f"{ratio:.2f}" if ratio else "-"
            params_text = f"{params:,} / {timm_params:,}" if timm_params else f"{params:,}"
            print(f"| {family} | {image_size(family, size)} | {params_text} | {speed['keras_vit']:.1f} | {timm_text} "
                  f"| {ratio_text} |", flush=True)  # fmt: skip
    finally:
        if child is not None:
            child.close()
    report = dict(size=size, batch=batch, rounds=rounds, cpus=os.cpu_count(), load_average_end=os.getloadavg(),
                  notes=notes, rows=rows)  # fmt: skip
    os.makedirs(args.output, exist_ok=True)
    files.write_json(os.path.join(args.output, "families.json"), report)
    print(f"Wrote {args.output}/families.json")
    return report


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--size", default="S", choices=["S", "B"], help="model size (default: S)")
    parser.add_argument("--batch", type=int, default=8, help="images per forward (default: 8)")
    parser.add_argument("--rounds", type=int, default=3, help="timed forwards per implementation (default: 3)")
    parser.add_argument("--quick", action="store_true", help="tiny models at 32 px, one round (checks the script)")
    parser.add_argument("--skip-timm", action="store_true", help="keras_vit alone")
    parser.add_argument("--output", default="runs/families", help="folder for families.json (default: runs/families)")
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.torch_child:
        return torch_child()
    return run(args)


if __name__ == "__main__":
    main()
