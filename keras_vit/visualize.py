"""What a ViT looks at: every block's attention weights, attention rollout, heat maps as PNG.

    attend = attention_model(model)              # same layers, same weights
    outputs = attend(images)                     # {"logits": (B, C), "attention": [(B, h, T, T)] * L}
    heat = rollout_map(outputs["attention"], grid_shape(model), num_prefix_tokens(model))
    save_overlay("rollout.png", image, heat[0])

Legend: `B` batch, `h` heads, `T` tokens (`N` patches plus the class token if
any), `L` blocks, `(R, C)` the patch grid, `H, W` an image's height and width.
"""

import os

import keras
import matplotlib
import numpy as np
from matplotlib.figure import Figure  # no pyplot: no display needed, no global backend switched
from PIL import Image


def attention_model(model):
    """A functional model over `model`'s own layers that also returns every block's attention.

    The layers of a `build_vit` model are called again on a new input, the
    blocks with `return_attention_scores=True` (through `BlockWithAttention`):
    the same layer objects and weights, nothing rebuilt or copied. Works for
    class-token and `gap` models, any image size, with or without
    `pre_logits` and `head`; saved as `.keras`, it loads with `safe_mode=True`.

    Args:
        model: a model made by `keras_vit.build_vit` (or loaded from its `.keras` file).

    Returns:
        A `keras.Model` mapping `images` to `{"logits": (B, C), "attention":
        [(B, h, T, T)] * L}` (`"logits"` holds the pooled features for a model
        built with `include_top=False`).
    """
    images = keras.Input(shape=model.input_shape[1:], name="images")
    x = model.get_layer("patch_embedding")(images)  # (B, N, D)
    if _has_layer(model, "class_token"):
        x = model.get_layer("class_token")(x)  # (B, N + 1, D)
    x = model.get_layer("embedding_dropout")(model.get_layer("position_embedding")(x))
    attention = []
    for block in _blocks(model):
        x, scores = BlockWithAttention(block, name=f"{block.name}_attention")(x)  # (B, T, D), (B, h, T, T)
        attention.append(scores)
    x = model.get_layer("encoder_norm")(x)
    pooling = "token_pooling" if _has_layer(model, "token_pooling") else "gap_pooling"
    x = model.get_layer(pooling)(x)  # (B, D)
    for name in ("pre_logits", "head"):
        if _has_layer(model, name):
            x = model.get_layer(name)(x)
    return keras.Model(images, {"logits": x, "attention": attention}, name=f"{model.name}_attention")


@keras.saving.register_keras_serializable(package="keras_vit")
class BlockWithAttention(keras.layers.Layer):
    """Calls a model's `TransformerBlock` with `return_attention_scores=True`, as one graph node.

    Not the block itself in the new graph: Keras' functional graph takes a
    shared layer's number of outputs from its first call, which in the
    trained model returned the tokens alone, so a second call returning two
    outputs fails the connectivity check. This layer's one call returns both;
    the block inside is the model's own, weights and all.

    Args:
        block: the `TransformerBlock` to call.
    """

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def build(self, input_shape):
        if not self.block.built:  # a block deserialised from a saved attention model
            self.block.build(input_shape)

    def call(self, tokens, training=None):
        return self.block(tokens, training=training, return_attention_scores=True)

    def get_config(self):
        return {**super().get_config(), "block": keras.saving.serialize_keras_object(self.block)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "block": keras.saving.deserialize_keras_object(config["block"])})


def _has_layer(model, name):
    return any(layer.name == name for layer in model.layers)


def _blocks(model):
    blocks = [layer for layer in model.layers if layer.name.startswith("block_")]
    return sorted(blocks, key=lambda layer: int(layer.name.split("_")[1]))


def grid_shape(model):
    """`(R, C)`: the patch grid of a `build_vit` model, e.g. `(14, 14)` for B/16 at 224."""
    patch = model.get_layer("patch_embedding").patch_size
    height, width = model.input_shape[1:3]
    return height // patch[0], width // patch[1]


def num_prefix_tokens(model):
    """`1` with a class token, `0` for `gap` models."""
    return model.get_layer("position_embedding").num_prefix_tokens


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
        weights = np.asarray(weights, dtype=np.float64).mean(axis=1)  # (B, T, T)
        weights = weights + np.eye(weights.shape[-1])
        weights /= weights.sum(axis=-1, keepdims=True)
        rollout = weights if rollout is None else weights @ rollout
    return rollout


def rollout_map(attention, grid, num_prefix_tokens=1):
    """Rollout as a heat map over the patch grid, `(B, R, C)`, each map summing to 1.

    The class token's row of the rollout, restricted to the patches; for a
    `gap` model (no class token) the mean of the patch tokens' rows, which is
    what the average pooling hands to the head.
    """
    rollout = attention_rollout(attention)
    if num_prefix_tokens:
        rows = rollout[:, 0, num_prefix_tokens:]  # (B, N)
    else:
        rows = rollout.mean(axis=1)  # (B, N)
    rows = rows / rows.sum(axis=-1, keepdims=True)
    return rows.reshape(-1, *grid)


def last_block_maps(attention, grid, num_prefix_tokens=1):
    """The last block's attention per head over the patch grid, `(B, h, R, C)`.

    The class token's attention (its query row) to each patch; for a `gap`
    model the mean over the patch tokens' rows.
    """
    weights = np.asarray(attention[-1], dtype=np.float64)  # (B, h, T, T)
    if num_prefix_tokens:
        rows = weights[:, :, 0, num_prefix_tokens:]
    else:
        rows = weights.mean(axis=2)
    return rows.reshape(*rows.shape[:2], *grid)


# --- pictures -----------------------------------------------------------------


def upsample(heat, size):
    """A `(R, C)` map -> `(H, W)` float, bilinear, rescaled to [0, 1] (a flat map becomes zeros)."""
    heat = np.asarray(heat, dtype=np.float32)
    resized = np.asarray(Image.fromarray(heat).resize(size[::-1], Image.Resampling.BILINEAR))
    low, high = resized.min(), resized.max()
    return (resized - low) / (high - low) if high > low else np.zeros_like(resized)


def overlay(image, heat, alpha=0.5, cmap="jet"):
    """The image `(H, W, 3)` (uint8, or grey `(H, W)`) with `heat` coloured over it: uint8 `(H, W, 3)`."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    colours = matplotlib.colormaps[cmap](upsample(heat, image.shape[:2]))[..., :3] * 255
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def display_size(shape, min_side=224):
    """`(H, W)` scaled by a whole factor so that the shorter side is at least `min_side`."""
    factor = max(1, -(-min_side // min(shape[:2])))
    return shape[0] * factor, shape[1] * factor


def save_overlay(path, image, heat, size=None, alpha=0.5):
    """Writes `overlay(image, heat)` as a PNG of `size` `(H, W)` (defaults to the image's own)."""
    image = np.asarray(image)
    if size is not None and tuple(size) != image.shape[:2]:
        image = np.asarray(Image.fromarray(image).resize(tuple(size)[::-1], Image.Resampling.NEAREST))
    Image.fromarray(overlay(image, heat, alpha)).save(path)
    return path


def attention_figure(image, rollout, heads, title=None, panel_inches=2.5, dpi=100):
    """One row of panels: the image, its rollout, and the last block's map for every head.

    Returns:
        A `matplotlib.figure.Figure` (`display(figure)` in a notebook, `figure.savefig(path)`).
    """
    panels = [("image", None), ("rollout", rollout)] + [(f"last block, head {i}", h) for i, h in enumerate(heads)]
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


# --- explaining predictions -------------------------------------------------------


class Explainer:
    """Attention maps of a trained model folder (or `.keras` file) for raw images.

    Args:
        path: what `keras-vit train` wrote: a folder with `model.keras` and
            `keras_vit.json`, or the `.keras` file itself.
    """

    def __init__(self, path):
        from keras_vit.export import load_model
        from keras_vit.preprocessing import preprocessing_model

        path = str(path)
        if not (path.endswith(".keras") or os.path.isfile(os.path.join(path, "model.keras"))):
            raise ValueError(f"--explain needs the Keras model (a .keras file or its folder), not {path}: "
                             "SavedModel and LiteRT files do not expose attention weights.")
        model, self.metadata, _ = load_model(path)
        self.model = attention_model(model)
        self.grid, self.prefix = grid_shape(model), num_prefix_tokens(model)
        self.preprocess = preprocessing_model(self.metadata["image_size"], self.metadata["scaling"])

    def __call__(self, image):
        """`(label, rollout (R, C), last block's heads (h, R, C))` for one uint8 `(H, W, 3)` image."""
        outputs = self.model(self.preprocess(np.asarray(image)[None]), training=False)
        attention = [np.asarray(a) for a in outputs["attention"]]
        label = self.metadata["labels"][int(np.argmax(outputs["logits"][0]))]
        return label, rollout_map(attention, self.grid, self.prefix)[0], last_block_maps(attention, self.grid, self.prefix)[0]

    def write(self, image, name, folder):
        """Writes `<name>_rollout.png` (overlay) and `<name>_attention.png` (all panels); returns their paths."""
        os.makedirs(folder, exist_ok=True)
        label, rollout, heads = self(image)
        image = np.asarray(image)
        shown = np.asarray(Image.fromarray(image).resize(display_size(image.shape)[::-1], Image.Resampling.NEAREST))
        return [
            save_overlay(os.path.join(folder, f"{name}_rollout.png"), shown, rollout),
            save_attention_figure(os.path.join(folder, f"{name}_attention.png"), shown, rollout, heads,
                                  title=f"predicted: {label}"),
        ]
