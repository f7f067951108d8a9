"""The well-known ViT checkpoints: the family table's rows (`families.py`), fetched once.

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
- The ViT's descendants, as their publishers' hub repositories serve them:
  DeiT (distilled) and DeiT III (Touvron et al. 2021, 2022), DINOv2 with and
  without registers (Oquab et al. 2023; Darcet et al. 2024), SigLIP and SigLIP 2
  image towers (Zhai et al. 2023; Tschannen et al. 2025), CLIP image towers
  (Radford et al. 2021), EVA-02 and its EVA-CLIP towers (Fang et al. 2024;
  Sun et al. 2023), Perception Encoder core and spatial towers (Bolya et al.
  2025), from timm's `timm/<architecture>.<tag>` repositories,
  the publishers' transformers repositories (`facebook/dinov2-*`,
  `google/siglip-*`, `openai/clip-vit-*`) and big_vision's SigLIP bucket. A
  row's `output` says what the model returns: `"logits"`, pooled `"features"`
  (no head: DINOv2, SigLIP's MAP output) or an `"embedding"` (the head is the
  image-text projection: CLIP, big_vision SigLIP); `options` are the
  `ViTConfig` fields the weights file alone does not tell (EVA-02's and PE's
  rotary settings among them).
- DINOv3 (Siméoni et al. 2025): timm's copies and Meta's `facebook/dinov3-*`
  repositories, every size (S, S+, B, L, H+, 7B). Under the DINOv3 License,
  not an open one: each row's `notes` says what it requires of users.

No SHA-256 is recorded yet: they were not downloaded on the machine that wrote
this table (it has no access to those hosts). `get_file` then skips the check;
fill the digests in from a verified download.
"""

import dataclasses
import hashlib
import os
import urllib.parse

import keras

from keras_vit.checkpoints.families import FAMILIES, NO_LABELS

CACHE_DIR = None  # None: `$KERAS_HOME` or `~/.keras`; files go to its `keras_vit/` folder
HUB = "https://huggingface.co/"


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
    family: str = "ViT"  # "DeiT", "DeiT III", "DINOv2", "SigLIP", "CLIP", "SigLIP 2 NaFlex"
    output: str = "logits"  # "logits", "features" (pooled, no head) or "embedding" (image-text space)
    options: tuple = ()  # (ViTConfig field, value) pairs the file does not tell, e.g. (("activation", "quick_gelu"),)
    notes: str = None  # what its licence requires of users, where that is more than an open licence (DINOv3's)

    @property
    def name(self):
        return f"{self.variant}:{self.tag}"

    @property
    def cache_name(self):
        return self.file_name or urllib.parse.unquote(self.url.rsplit("/", 1)[-1])


def _checkpoint(family, record):
    """A family record's keyword row -> a `Checkpoint`, its URL from where it is published."""
    record = dict(record)
    if "timm" in record:
        repository = record.pop("timm")
        record.setdefault("url", f"{HUB}timm/{repository}/resolve/main/model.safetensors")
        record.setdefault("file_name", f"timm_{repository}.safetensors")
    elif "transformers" in record:
        repository = record.pop("transformers")
        record.setdefault("url", f"{HUB}{repository}/resolve/main/model.safetensors")
        record.setdefault("file_name", f"{repository.replace('/', '_')}.safetensors")
    record.setdefault("labels", NO_LABELS)
    record.setdefault("scaling", family.scaling or "vit")
    record.setdefault("pooling", "map" if family.name in ("SigLIP", "SigLIP 2 NaFlex") else "token")
    return Checkpoint(family=family.name, **record)


CHECKPOINTS = {row.name: row for family in FAMILIES for row in (_checkpoint(family, r) for r in family.checkpoints)}


def find_checkpoint(name, variant=None):
    """The registry row for `"B/16:tag"`, or for `tag` given the variant; `None` if unknown."""
    if variant is not None and ":" not in str(name):
        name = f"{str(variant).strip()}:{name}"
    return CHECKPOINTS.get(str(name).strip())


def not_found(name, given_as=""):
    """The error for a name that is neither a file nor a registry row: it lists the variant's rows."""
    variant = str(name).split(":")[0].strip()
    names = [row for row in CHECKPOINTS if row.split(":")[0] == variant]
    known = f"{variant} has: {', '.join(names)}" if names else f"known names: {', '.join(sorted(CHECKPOINTS)[:8])}, ..."
    return FileNotFoundError(f"{given_as}{name} is neither a checkpoint file nor a known checkpoint name; {known}.")


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
