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
- The ViT's descendants, as their publishers' hub repositories serve them:
  DeiT (distilled) and DeiT III (Touvron et al. 2021, 2022), DINOv2 with and
  without registers (Oquab et al. 2023; Darcet et al. 2024), SigLIP and SigLIP 2
  image towers (Zhai et al. 2023; Tschannen et al. 2025), CLIP image towers
  (Radford et al. 2021), from timm's `timm/<architecture>.<tag>` repositories,
  the publishers' transformers repositories (`facebook/dinov2-*`,
  `google/siglip-*`, `openai/clip-vit-*`) and big_vision's SigLIP bucket. A
  row's `output` says what the model returns: `"logits"`, pooled `"features"`
  (no head: DINOv2, SigLIP's MAP output) or an `"embedding"` (the head is the
  image-text projection: CLIP, big_vision SigLIP); `options` are the
  `ViTConfig` fields the weights file alone does not tell.

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
NO_LABELS = "none"  # feature extractors and image-text embeddings
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
    family: str = "ViT"  # "DeiT", "DeiT III", "DINOv2", "SigLIP", "CLIP"
    output: str = "logits"  # "logits", "features" (pooled, no head) or "embedding" (image-text space)
    options: tuple = ()  # (ViTConfig field, value) pairs the file does not tell, e.g. (("activation", "quick_gelu"),)

    @property
    def name(self):
        return f"{self.variant}:{self.tag}"

    @property
    def cache_name(self):
        return self.file_name or urllib.parse.unquote(self.url.rsplit("/", 1)[-1])


# One AugReg run per variant: the pre-training file and its ImageNet-1k fine-tune, the runs timm
# ships as its `augreg_in21k` weights. For Ti/16, S/16 and B/16 they are the paper's recommended
# (Table 3) runs; for B/32 and L/16 they are timm's picks (the vision_transformer README's Table 3
# names other runs for those).
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


# The descendants. timm files: (variant, tag, timm repository, image size, classes, labels, family,
# output, scaling, options); their `config.json` is not fetched, so `options` carry what it would say.
_QUICK_GELU = (("activation", "quick_gelu"),)  # OpenAI's CLIP weights, as trained (timm names them *_clip_224)
_GELU_TANH = (("activation", "gelu_tanh"),)  # SigLIP as trained in big_vision (timm runs exact GELU)
_CLIP_GELU = (("activation", "gelu"),)  # OpenCLIP's LAION weights
_TIMM_FAMILIES = [
    ("S/16", "deit3_in1k", "deit3_small_patch16_224.fb_in1k", 224, 1000, LABELS_IN1K, "DeiT III", "logits", "imagenet", ()),
    ("B/16", "deit3_in1k", "deit3_base_patch16_224.fb_in1k", 224, 1000, LABELS_IN1K, "DeiT III", "logits", "imagenet", ()),
    ("B/16", "deit3_in21k_ft_in1k", "deit3_base_patch16_224.fb_in22k_ft_in1k", 224, 1000, LABELS_IN1K, "DeiT III", "logits", "imagenet", ()),
    ("L/16", "deit3_in21k_ft_in1k", "deit3_large_patch16_224.fb_in22k_ft_in1k", 224, 1000, LABELS_IN1K, "DeiT III", "logits", "imagenet", ()),
    ("Ti/16", "deit_distilled_in1k", "deit_tiny_distilled_patch16_224.fb_in1k", 224, 1000, LABELS_IN1K, "DeiT", "logits", "imagenet", ()),
    ("S/16", "deit_distilled_in1k", "deit_small_distilled_patch16_224.fb_in1k", 224, 1000, LABELS_IN1K, "DeiT", "logits", "imagenet", ()),
    ("B/16", "deit_distilled_in1k", "deit_base_distilled_patch16_224.fb_in1k", 224, 1000, LABELS_IN1K, "DeiT", "logits", "imagenet", ()),
    ("S/14", "dinov2_lvd142m", "vit_small_patch14_dinov2.lvd142m", 518, 0, NO_LABELS, "DINOv2", "features", "imagenet", ()),
    ("B/14", "dinov2_lvd142m", "vit_base_patch14_dinov2.lvd142m", 518, 0, NO_LABELS, "DINOv2", "features", "imagenet", ()),
    ("L/14", "dinov2_lvd142m", "vit_large_patch14_dinov2.lvd142m", 518, 0, NO_LABELS, "DINOv2", "features", "imagenet", ()),
    ("S/14", "dinov2_reg4_lvd142m", "vit_small_patch14_reg4_dinov2.lvd142m", 518, 0, NO_LABELS, "DINOv2", "features", "imagenet", ()),
    ("B/14", "dinov2_reg4_lvd142m", "vit_base_patch14_reg4_dinov2.lvd142m", 518, 0, NO_LABELS, "DINOv2", "features", "imagenet", ()),
    ("L/14", "dinov2_reg4_lvd142m", "vit_large_patch14_reg4_dinov2.lvd142m", 518, 0, NO_LABELS, "DINOv2", "features", "imagenet", ()),
    ("B/16", "siglip_webli", "vit_base_patch16_siglip_224.webli", 224, 0, NO_LABELS, "SigLIP", "features", "vit", _GELU_TANH),
    ("B/16", "siglip2_webli", "vit_base_patch16_siglip_224.v2_webli", 224, 0, NO_LABELS, "SigLIP", "features", "vit", _GELU_TANH),
    ("B/16", "clip_openai", "vit_base_patch16_clip_224.openai", 224, 512, NO_LABELS, "CLIP", "embedding", "clip", _QUICK_GELU),
    ("B/32", "clip_openai", "vit_base_patch32_clip_224.openai", 224, 512, NO_LABELS, "CLIP", "embedding", "clip", _QUICK_GELU),
    ("L/14", "clip_openai", "vit_large_patch14_clip_224.openai", 224, 768, NO_LABELS, "CLIP", "embedding", "clip", _QUICK_GELU),
    ("B/16", "clip_laion2b", "vit_base_patch16_clip_224.laion2b", 224, 512, NO_LABELS, "CLIP", "embedding", "clip", _CLIP_GELU),
]  # fmt: skip
# The publishers' transformers repositories (whole two-tower files: the image tower is read).
_HF_FAMILIES = [
    ("S/14", "hf_dinov2", "facebook/dinov2-small", 518, 0, "DINOv2", "features", "imagenet", ()),
    ("B/14", "hf_dinov2", "facebook/dinov2-base", 518, 0, "DINOv2", "features", "imagenet", ()),
    ("B/14", "hf_dinov2_reg4", "facebook/dinov2-with-registers-base", 518, 0, "DINOv2", "features", "imagenet", ()),
    ("B/16", "hf_siglip", "google/siglip-base-patch16-224", 224, 0, "SigLIP", "features", "vit", ()),
    ("B/16", "hf_clip_openai", "openai/clip-vit-base-patch16", 224, 512, "CLIP", "embedding", "clip", _QUICK_GELU),
]  # fmt: skip


def _family_rows():
    for variant, tag, repository, size, classes, labels, family, output, scaling, options in _TIMM_FAMILIES:
        yield Checkpoint(
            variant, tag, f"{HUB}timm/{repository}/resolve/main/model.safetensors", size, classes, labels,
            pooling="map" if family == "SigLIP" else "token", scaling=scaling, file_name=f"timm_{repository}.safetensors",
            family=family, output=output, options=options,
        )  # fmt: skip
    for variant, tag, repository, size, classes, family, output, scaling, options in _HF_FAMILIES:
        yield Checkpoint(
            variant, tag, f"{HUB}{repository}/resolve/main/model.safetensors", size, classes, NO_LABELS,
            pooling="map" if family == "SigLIP" else "token", scaling=scaling,
            file_name=f"{repository.replace('/', '_')}.safetensors", family=family, output=output, options=options,
        )  # fmt: skip
    # big_vision's SigLIP B/16 (the file its SigLIP colab loads): both towers; the image tower's head
    # projects to the 768-wide image-text space.
    yield Checkpoint(
        "B/16", "siglip_webli_big_vision", "https://storage.googleapis.com/big_vision/siglip/webli_en_b16_224_63724782.npz",
        224, 768, NO_LABELS, pooling="map", family="SigLIP", output="embedding", options=_GELU_TANH,
    )  # fmt: skip


CHECKPOINTS = {row.name: row for row in (*_rows(), *_family_rows())}


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
