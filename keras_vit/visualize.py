"""What a ViT looks at: every block's attention weights, attention rollout, heat maps as PNG.

    attend = attention_model(model)              # same layers, same weights
    outputs = attend(images)                     # {"logits": (B, C), "attention": [(B, h, T, T)] * L}
    heat = rollout_map(outputs["attention"], grid_shape(model), num_prefix_tokens(model))
    save_overlay("rollout.png", image, heat[0])

Legend: `B` batch, `h` heads, `T` tokens (`N` patches plus the prefix tokens:
class, distillation, registers), `L` blocks, `(R, C)` the patch grid, `H, W` an
image's height and width.
"""

import keras
import numpy as np
from PIL import Image

from keras_vit.model import ViTLayers  # noqa: F401  (0.1.0 reached it here)
from keras_vit.views.attention import BlockWithAttention, attention_model  # noqa: F401  (keras_vit.visualize.attention_model, as before)


def grid_shape(model, image_size=None):
    """`(R, C)`: the patch grid of a `build_vit` model, e.g. `(14, 14)` for B/16 at 224.

    `image_size` `(H, W)` of the images, for a model that takes any size (`dynamic_image_size=True`).
    """
    patch = model.get_layer("patch_embedding").patch_size
    height, width = image_size or model.input_shape[1:3]
    if height is None or width is None:
        raise ValueError(
            f"{model.name!r} takes images of any size: pass image_size=(height, width) of the images attended over."
        )
    return height // patch[0], width // patch[1]


def num_prefix_tokens(model):
    """Tokens before the patches: `1` with a class token, `0` for `gap` models, more with a
    distillation token or registers (the class token, if any, is always the first)."""
    return ViTLayers.of(model).num_prefix_tokens


def has_class_token(model):
    """Whether token 0 is a class token, whose attention row the maps read."""
    return ViTLayers.of(model).class_token is not None


def attention_rollout(attention):
    """Attention rollout (Abnar and Zuidema 2020): how much each token draws on each input token.

    Per block: average the heads, add the identity for the residual
    connection, renormalise the rows; then multiply through the blocks,
    `rollout = A_L ... A_2 A_1`.

    Args:
        attention: the `[(B, h, T, T)] * L` weights of `attention_model`.

    Returns:
        `(B, T, T)`, each row summing to 1: row `i` is token `i`'s share of
        every input token after the last block.
    """
    rollout = None
    for weights in attention:
        weights = np.asarray(keras.ops.convert_to_numpy(weights), dtype=np.float64).mean(axis=1)  # (B, T, T)
        weights = weights + np.eye(weights.shape[-1])
        weights /= weights.sum(axis=-1, keepdims=True)
        rollout = weights if rollout is None else weights @ rollout
    return rollout


def rollout_map(attention, grid, num_prefix_tokens=1, class_token=True):
    """Rollout as a heat map over the patch grid, `(B, R, C)`, each map summing to 1.

    The class token's row of the rollout, restricted to the patches; for a
    model without a class token (`gap`, `map`; `class_token=False` when it has
    other prefix tokens such as registers) the mean of the patch tokens' rows,
    which is what the average pooling hands to the head.
    """
    rollout = attention_rollout(attention)
    if num_prefix_tokens and class_token:
        rows = rollout[:, 0, num_prefix_tokens:]  # (B, N)
    else:
        rows = rollout[:, num_prefix_tokens:, num_prefix_tokens:].mean(axis=1)  # (B, N)
    rows = rows / rows.sum(axis=-1, keepdims=True)
    return rows.reshape(-1, *grid)


def last_block_maps(attention, grid, num_prefix_tokens=1, class_token=True):
    """The last block's attention per head over the patch grid, `(B, h, R, C)`.

    The class token's attention (its query row) to each patch; without a class
    token (see `rollout_map`) the mean over the patch tokens' rows.
    """
    weights = np.asarray(keras.ops.convert_to_numpy(attention[-1]), dtype=np.float64)  # (B, h, T, T)
    if num_prefix_tokens and class_token:
        rows = weights[:, :, 0, num_prefix_tokens:]
    else:
        rows = weights[:, :, num_prefix_tokens:, num_prefix_tokens:].mean(axis=2)
    return rows.reshape(*rows.shape[:2], *grid)


# --- pictures -----------------------------------------------------------------


def upsample(heat, size, limits=None):
    """A `(R, C)` map -> `(H, W)` float, bilinear, rescaled to [0, 1] (a flat map becomes zeros).

    `limits`: `(low, high)` mapped to 0 and 1 instead of the map's own range.
    """
    heat = np.asarray(heat, dtype=np.float32)
    resized = np.asarray(Image.fromarray(heat).resize(size[::-1], Image.Resampling.BILINEAR))
    low, high = limits if limits is not None else (resized.min(), resized.max())
    return (resized - low) / (high - low) if high > low else np.zeros_like(resized)


def overlay(image, heat, alpha=0.5, cmap="jet", limits=None):
    """The image `(H, W, 3)` (uint8, or grey `(H, W)`) with `heat` coloured over it: uint8 `(H, W, 3)`."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    import matplotlib  # here, not at the top: `import keras_vit` (and the CLI's start) stays without it

    colours = matplotlib.colormaps[cmap](np.clip(upsample(heat, image.shape[:2], limits), 0, 1))[..., :3] * 255
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def display_size(shape, min_side=224):
    """`(H, W)` scaled by a whole factor so that the shorter side is at least `min_side`."""
    factor = max(1, -(-min_side // min(shape[:2])))
    return shape[0] * factor, shape[1] * factor


def save_overlay(path, image, heat, size=None, alpha=0.5, limits=None):
    """Writes `overlay(image, heat)` as a PNG of `size` `(H, W)` (defaults to the image's own)."""
    image = np.asarray(image)
    if size is not None and tuple(size) != image.shape[:2]:
        image = np.asarray(Image.fromarray(image).resize(tuple(size)[::-1], Image.Resampling.NEAREST))
    Image.fromarray(overlay(image, heat, alpha, limits=limits)).save(path)
    return path


def attention_figure(image, rollout, heads, title=None, panel_inches=2.5, dpi=100):
    """One row of panels: the image, its rollout, and the last block's map for every head.

    Returns:
        A `matplotlib.figure.Figure` (`display(figure)` in a notebook, `figure.savefig(path)`).
    """
    panels = [("image", None), ("rollout", rollout)] + [(f"last block, head {i}", h) for i, h in enumerate(heads)]
    from matplotlib.figure import Figure  # no pyplot: no display needed, no global backend switched

    figure = Figure(figsize=(panel_inches * len(panels), panel_inches + 0.4), dpi=dpi)
    for axis, (name, heat) in zip(np.atleast_1d(figure.subplots(1, len(panels))), panels):
        axis.imshow(image if heat is None else overlay(image, heat), cmap="gray")
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def save_attention_figure(path, image, rollout, heads, title=None, **kwargs):
    """Writes `attention_figure(...)` as PNG: `(panel_inches + 0.4) * dpi` pixels high, one panel per map."""
    attention_figure(image, rollout, heads, title, **kwargs).savefig(path)
    return path
