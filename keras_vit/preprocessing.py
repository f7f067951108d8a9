"""The one definition of preprocessing, shared by training, evaluation, export and prediction.

A trained model travels with `keras_vit.json` (`keras_vit.run_folder`), which
names its image size and scaling. Everything that feeds the model calls
`preprocessing_model` with them, so a server, a phone and `model.fit` all see
the same pixels.
"""

import math

import keras
import numpy as np

# Per-channel mean and standard deviation on the 0..255 scale.
SCALINGS = {
    # The original ViT and AugReg checkpoints: [0, 255] -> [-1, 1].
    "vit": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    # timm / torchvision checkpoints.
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # OpenAI CLIP's statistics (its image towers in timm and transformers).
    "clip": ((122.7709383, 116.7460125, 104.09373615), (68.5005327, 66.6321579, 70.32316305)),
    # DINOv3's satellite-image weights (SAT-493M): timm's cfg, mean (0.430, 0.411, 0.296), std (0.213, 0.156, 0.143).
    "dinov3_sat": ((109.65, 104.805, 75.48), (54.315, 39.78, 36.465)),
}


def check_scaling(scaling):
    if scaling not in SCALINGS:
        raise ValueError(f"Unknown scaling={scaling!r}; expected one of {sorted(SCALINGS)}.")
    return scaling


def preprocessing_model(image_size, scaling="vit", num_channels=3):
    """Resize and normalise: `(B, H, W, C)` pixels in 0..255 -> the model's input.

    Keras' own preprocessing layers, so the same object runs inside tf.data,
    inside an exported SavedModel signature and in eager code.

    Args:
        image_size: `(height, width)` of the model's input (or an int).
        scaling: `"vit"` (to `[-1, 1]`, the original ViT, SigLIP), `"clip"`
            (OpenAI CLIP's mean and std) or `"imagenet"`
            (ImageNet mean and standard deviation). Defaults to `"vit"`.
        num_channels: channels of the model's input. Defaults to `3`.

    Returns:
        A `keras.Sequential` mapping uint8 or float images of any size to
        float32 `(B, height, width, num_channels)`.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    mean, std = SCALINGS[check_scaling(scaling)]
    if num_channels != 3:  # grayscale models: the channel mean of the same statistics
        mean, std = (sum(mean) / 3,) * num_channels, (sum(std) / 3,) * num_channels
    model = keras.Sequential(
        [
            keras.layers.Resizing(height, width, interpolation="bilinear", antialias=True, dtype="float32"),
            keras.layers.Normalization(mean=mean, variance=[s * s for s in std], dtype="float32"),
        ],
        name="preprocessing",
    )
    # Built here, not at the first call: inside tf.data on the JAX or torch backend Keras runs the
    # layers with TensorFlow ops and does not build them, so an unbuilt Normalization fails there.
    model.build((None, None, None, num_channels))
    return model


# --- SigLIP 2's NaFlex input: each image at its own aspect ratio -------------------------------


def naflex_size(height, width, patch_size, max_num_patches, eps=1e-5):
    """`(height, width)` to resize an image to: its aspect ratio, multiples of the patch, at most `max_num_patches`.

    The largest scale whose patch grid (each side rounded up to whole patches, at least one)
    fits the budget, found by bisection as transformers' `Siglip2ImageProcessor` does
    (`get_image_size_for_max_num_patches`), so the same image gets the same grid.
    """

    def scaled(scale, size):
        return max(patch_size, math.ceil(size * scale / patch_size) * patch_size)

    low, high = eps / 10, 100.0
    while high - low >= eps:
        scale = (low + high) / 2
        if (scaled(scale, height) / patch_size) * (scaled(scale, width) / patch_size) <= max_num_patches:
            low = scale
        else:
            high = scale
    return scaled(low, height), scaled(low, width)


def _bilinear_matrix(in_size, out_size):
    """The `(out, in)` matrix of `F.interpolate(mode="bilinear", antialias=True)` along one axis.

    The triangle filter, widened by the scale when shrinking, renormalised: the same weights as
    `checkpoints.resample.interpolation_matrix(..., "bilinear", antialias=True)` and
    `layers.naflex_resize_weights`, here in NumPy for pixels (the core imports no checkpoint code).
    """
    scale = in_size / out_size
    center = (np.arange(out_size) + 0.5) * scale - 0.5
    taps = np.maximum(0.0, 1.0 - np.abs(np.arange(in_size)[None, :] - center[:, None]) / max(scale, 1.0))
    return taps / taps.sum(1, keepdims=True)


def naflex_inputs(images, patch_size, max_num_patches, scaling="vit"):
    """Images of any sizes -> the three inputs of a NaFlex model (`ViTConfig.naflex`), as NumPy arrays.

    Each image is resized to keep its aspect ratio within `max_num_patches`
    patches (`naflex_size`; bilinear, antialiased, torch's arithmetic, and
    rounded back to uint8 for uint8 images, as torchvision does), scaled,
    cut into patches in `(row, column, channel)` order and padded with zeros
    to `max_num_patches`: what transformers' `Siglip2ImageProcessor` gives.

    Args:
        images: a list of `(H, W, C)` images, uint8 or float in 0..255
            (or one such array of shape `(B, H, W, C)`).
        patch_size: the model's (an int, or a square pair).
        max_num_patches: `N`, the patch budget and padded length. SigLIP
            2's processors use 256 by default.
        scaling: a `SCALINGS` name. Defaults to `"vit"` (SigLIP's `[-1, 1]`).

    Returns:
        `{"patches": (B, N, p*p*C) float32, "spatial_shapes": (B, 2) int32,
        "patch_mask": (B, N) int32}`.
    """
    patch = patch_size[0] if isinstance(patch_size, (tuple, list)) else patch_size
    if isinstance(patch_size, (tuple, list)) and len(set(patch_size)) != 1:
        raise ValueError(f"patch_size={patch_size!r}: NaFlex input is cut into square patches.")
    mean, std = (np.asarray(v, "float64") for v in SCALINGS[check_scaling(scaling)])
    out = {"patches": [], "spatial_shapes": [], "patch_mask": []}
    for image in images:
        image = np.asarray(image)
        height, width = naflex_size(image.shape[0], image.shape[1], patch, max_num_patches)
        rows, cols = _bilinear_matrix(image.shape[0], height), _bilinear_matrix(image.shape[1], width)
        # Two matmuls (rows, then columns): a photo of 2048 px resizes in milliseconds, not as one einsum loop.
        pixels = image.reshape(image.shape[0], -1).astype("float32")
        resized = (rows.astype("float32") @ pixels).reshape(height, image.shape[1], -1)
        resized = np.tensordot(resized, cols.astype("float32"), axes=([1], [1])).transpose(0, 2, 1)  # (h, w, C)
        if image.dtype == np.uint8:
            resized = np.clip(np.rint(resized), 0, 255)
        pixels = (resized - mean[: image.shape[-1]]) / std[: image.shape[-1]]
        grid = (height // patch, width // patch)
        patches = pixels.reshape(grid[0], patch, grid[1], patch, -1).transpose(0, 2, 1, 3, 4)
        patches = patches.reshape(grid[0] * grid[1], -1)
        padding = max_num_patches - len(patches)
        out["patches"].append(np.pad(patches, ((0, padding), (0, 0))))
        out["spatial_shapes"].append(grid)
        out["patch_mask"].append(np.arange(max_num_patches) < len(patches))
    return {
        "patches": np.asarray(out["patches"], "float32"),
        "spatial_shapes": np.asarray(out["spatial_shapes"], "int32"),
        "patch_mask": np.asarray(out["patch_mask"], "int32"),
    }
