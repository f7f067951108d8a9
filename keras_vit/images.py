"""Image files -> uint8 RGB arrays: the one reader that training and prediction share.

Image files are read with Pillow into uint8 RGB whatever they hold: grayscale
and palette images are expanded, alpha is dropped (as TensorFlow's
`decode_image(channels=3)` does in the SavedModel's bytes signature), 16-bit
images are scaled to 8 bits, and huge images are downscaled while decoding.
Training (`keras_vit.training.data`, image folders) and `keras-vit predict`
(`keras_vit.deploy.predict`) both call `read_image`, so an image means the
same pixels to both.
"""

import os
import sys
import warnings

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
# Longest side kept after decoding: far above any ViT input, far below a memory problem.
MAX_SIDE = 2048


def read_image(path, max_side=MAX_SIDE):
    """Reads an image file as uint8 RGB `(H, W, 3)`, its longest side at most `max_side`.

    Raises:
        ValueError: the file is empty, not an image, damaged, or too large to decode safely.
    """
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes); expected an image file ({', '.join(IMAGE_EXTENSIONS)}).")
    try:
        with warnings.catch_warnings(record=True) as caught, Image.open(path) as image:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            image.draft("RGB", (max_side, max_side))  # JPEG: decode straight at a reduced scale
            image = _to_rgb(image)
        if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
            _note_once(f"images of over {Image.MAX_IMAGE_PIXELS:,} pixels are downscaled to {max_side} px while read")
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path} is too large to decode safely ({error}); downscale it first.") from None
    except Image.UnidentifiedImageError:
        raise ValueError(
            f"{path} is not an image Pillow can read; expected one of {', '.join(IMAGE_EXTENSIONS)}."
        ) from None
    except OSError as error:  # truncated or corrupt data
        raise ValueError(f"{path} is a damaged image: {error}.") from None
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


_noted = set()


def _note_once(message):
    """Pillow warns for every large image; the downscaling is intended, so it is said once."""
    if message not in _noted:
        _noted.add(message)
        print(f"keras-vit: note: {message}", file=sys.stderr)


def _to_rgb(image):
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16-bit (or 32-bit) grayscale
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max() > 255:
            values = values / 257  # 65535 -> 255
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    return image.convert("RGB")
