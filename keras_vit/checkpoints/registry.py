"""The well-known ViT checkpoints, as data.

A checkpoint is named `"<variant>:<tag>"`, e.g. `"B/16:augreg_in21k_ft_in1k"`;
`build_vit("B/16", weights="augreg_in21k_ft_in1k")` looks up the same row.
Files are fetched once with `keras.utils.get_file` into `~/.keras/keras_vit/`
(or `$KERAS_HOME`), renamed into place only when complete, and checked against
their SHA-256 when the row has one.

Sources:
- The original checkpoints (Dosovitskiy et al. 2020) and AugReg (Steiner et
  al. 2021, "How to train your ViT?"), published by
  google-research/vision_transformer in the `vit_models` Cloud Storage bucket.
  The original (2020) ImageNet-21k files carry a `pre_logits` layer and a
  21,843-way head zeroed before release (timm's notes say the same): fine-tune
  a new one. AugReg's ImageNet-21k files have a trained 21k head and no
  `pre_logits`.
- Hugging Face's port of the original B/16 (`google/vit-base-patch16-224`).

No SHA-256 is recorded yet: they were not downloaded on the machine that wrote
this table (it has no access to those hosts). `get_file` then skips the check;
fill the digests in from a verified download.
"""

import dataclasses
import hashlib
import os
import urllib.parse

import keras

BUCKET = "https://storage.googleapis.com/vit_models/"
CACHE_DIR = None  # None: `$KERAS_HOME` or `~/.keras`; files go to its `keras_vit/` folder
LABELS_IN21K, LABELS_IN1K = "imagenet21k", "imagenet1k"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One published checkpoint and what its model expects."""

    variant: str  # e.g. "B/16"
    tag: str  # e.g. "augreg_in21k_ft_in1k"
    url: str
    image_size: int
    num_classes: int
    labels: str  # the label set: "imagenet21k" or "imagenet1k"
    pooling: str = "token"
    representation_size: int = None
    scaling: str = "vit"  # keras_vit.preprocessing.SCALINGS: [0, 255] -> [-1, 1]
    sha256: str = None
    file_name: str = None  # the cached file's name; the URL's last part when None

    @property
    def name(self):
        return f"{self.variant}:{self.tag}"

    @property
    def cache_name(self):
        return self.file_name or urllib.parse.unquote(self.url.rsplit("/", 1)[-1])


# AugReg's recommended run per variant (the paper's Table 3 picks; same names as timm's
# `augreg_in21k` weights): the pre-training file and its ImageNet-1k fine-tune.
_AUGREG = {
    "Ti/16": ("Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0", "steps_20k-lr_0.03"),
    "S/16": ("S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0", "steps_20k-lr_0.03"),
    "B/16": ("B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0", "steps_20k-lr_0.01"),
    "B/32": ("B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0", "steps_20k-lr_0.03"),
    "L/16": ("L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1", "steps_20k-lr_0.01"),
}
# The original paper's files: ImageNet-21k pre-training (with pre_logits) and 384 fine-tunes.
_ORIGINAL = ("B/16", "B/32", "L/16", "L/32")


def _rows():
    for variant, (run, fine_tune) in _AUGREG.items():
        yield Checkpoint(variant, "augreg_in21k", f"{BUCKET}augreg/{run}.npz", 224, 21843, LABELS_IN21K)
        yield Checkpoint(
            variant,
            "augreg_in21k_ft_in1k",
            f"{BUCKET}augreg/{run}--imagenet2012-{fine_tune}-res_224.npz",
            224,
            1000,
            LABELS_IN1K,
        )
    # Both folders hold a `ViT-B_16.npz`: the cached copies are named after folder and file, or the
    # second one asked for would be served the first one's weights.
    for variant in _ORIGINAL + ("H/14",):
        file = f"ViT-{variant.replace('/', '_')}.npz"
        hidden = {"B": 768, "L": 1024, "H": 1280}[variant[0]]
        yield Checkpoint(
            variant,
            "in21k",
            f"{BUCKET}imagenet21k/{file}",
            224,
            21843,
            LABELS_IN21K,
            representation_size=hidden,
            file_name=f"imagenet21k_{file}",
        )
    for variant in _ORIGINAL:
        file = f"ViT-{variant.replace('/', '_')}.npz"
        yield Checkpoint(
            variant,
            "in21k_ft_in1k_384",
            f"{BUCKET}imagenet21k%2Bimagenet2012/{file}",
            384,
            1000,
            LABELS_IN1K,
            file_name=f"imagenet21k+imagenet2012_{file}",
        )
    yield Checkpoint(
        "B/16",
        "hf_in21k_ft_in1k",
        "https://huggingface.co/google/vit-base-patch16-224/resolve/main/model.safetensors",
        224,
        1000,
        LABELS_IN1K,
        file_name="google_vit-base-patch16-224.safetensors",
    )


CHECKPOINTS = {row.name: row for row in _rows()}


def find_checkpoint(name, variant=None):
    """The registry row for `"B/16:tag"`, or for `tag` given the variant; `None` if unknown."""
    if variant is not None and ":" not in str(name):
        name = f"{str(variant).strip()}:{name}"
    return CHECKPOINTS.get(str(name).strip())


def fetch_checkpoint(checkpoint, cache_dir=None):
    """Downloads (once) and returns the local path of a registry row's file.

    `keras.utils.get_file` writes straight to its cache path, so a download
    killed half-way would be served, truncated, from then on: the file is
    fetched under a temporary name and renamed into place only once complete
    (and hash-checked, when the row has a digest).
    """
    base = os.path.expanduser(cache_dir or CACHE_DIR or os.environ.get("KERAS_HOME") or "~/.keras")
    folder = os.path.join(base, "keras_vit")
    target = os.path.join(folder, checkpoint.cache_name)
    if os.path.exists(target) and (checkpoint.sha256 is None or _sha256(target) == checkpoint.sha256):
        return target
    os.makedirs(folder, exist_ok=True)  # get_file falls back to /tmp/.keras for a folder that does not exist
    partial = os.path.join(folder, f"{checkpoint.cache_name}.{os.getpid()}.part")
    try:
        _download(checkpoint, partial, base, target)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def _download(checkpoint, partial, cache_dir, target):
    """`get_file` into `partial`; a failed fetch becomes a `ConnectionError` saying what to do instead."""
    try:
        keras.utils.get_file(
            fname=os.path.basename(partial),
            origin=checkpoint.url,
            file_hash=checkpoint.sha256,
            hash_algorithm="sha256",
            cache_dir=cache_dir,
            cache_subdir="keras_vit",
            force_download=True,
        )
    except ValueError:
        raise  # a hash mismatch: get_file's own message says the file is corrupted
    except Exception as e:  # get_file raises a bare `Exception("URL fetch failure on ...")`
        raise ConnectionError(
            f"Could not download the checkpoint {checkpoint.name} from {checkpoint.url} ({e}). "
            f"Download it by other means and put it at {target}, or pass the downloaded file "
            "itself, e.g. `--weights path/to/file.npz`."
        ) from e


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
