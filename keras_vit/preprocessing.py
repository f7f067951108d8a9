"""The one definition of preprocessing, shared by training, evaluation, export and prediction.

A trained model travels with `keras_vit.json` (`keras_vit.run_folder`), which
names its image size and scaling. Everything that feeds the model calls
`preprocessing_model` with them, so a server, a phone and `model.fit` all see
the same pixels.
"""

import keras

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
