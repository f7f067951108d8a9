"""The timm (PyTorch, CPU) side of `python benchmarks/peers.py`, in its own process.

TensorFlow and torchvision (which timm imports) crash when loaded into one
process, so the benchmark starts this file as a child (by path: importing
the `keras_vit` package would load TensorFlow) and talks to it one
line at a time: `<task> <variant> <batch> <image_size>` in, the seconds of
one timed step (after a warm-up on first use) out; `quit` ends it. The first
line out is `ready` or `unavailable: <reason>`.
"""

import sys
import time

TIMM_NAMES = {"Ti": "vit_tiny", "S": "vit_small", "B": "vit_base", "L": "vit_large"}


def _model(variant, image_size):
    import timm

    size, patch = variant.split("/")
    return timm.create_model(f"{TIMM_NAMES[size]}_patch{patch}_224", pretrained=False, img_size=image_size)


def _step(cache, task, variant, batch, image_size):
    import torch

    key = (task, variant, batch, image_size)
    if key not in cache:
        model = _model(variant, image_size)
        images = torch.randn(batch, 3, image_size, image_size)
        labels = torch.randint(0, 1000, (batch,))
        if task == "forward":
            model.train(False)  # inference mode (what torch calls eval)

            def step():
                with torch.inference_mode():
                    model(images)
        else:
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def step():
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(images), labels).backward()
                optimizer.step()

        step()  # warm-up
        cache[key] = step
    return cache[key]


def main():
    try:
        import timm  # noqa: F401
        import torch
    except ImportError as e:
        print(f"unavailable: {e}", flush=True)
        return
    torch.manual_seed(0)
    print("ready", flush=True)
    cache = {}
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        task, variant, batch, image_size = line.split()
        step = _step(cache, task, variant, int(batch), int(image_size))
        start = time.perf_counter()
        step()
        print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    main()
