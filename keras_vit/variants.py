"""The ViT architectures as data: one frozen dataclass and one table.

Rows follow the ViT paper (Dosovitskiy et al. 2020, Table 1) for B, L and H,
and the AugReg paper (Steiner et al. 2021) for Ti and S. Dropout defaults are
those of the original code's configs (google-research/vision_transformer,
`configs/models.py`). Parameter counts are at 224x224 with patch 16 (H: 14),
1000 classes, class-token pooling and no representation layer.
"""

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Variant:
    """One ViT architecture (everything but patch and image size)."""

    hidden_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0


VARIANTS = {
    # A toy for tests, notebooks and the built-in digits; not from a paper.
    "tiny": Variant(hidden_dim=64, num_layers=2, num_heads=2, mlp_dim=128),
    "Ti": Variant(hidden_dim=192, num_layers=12, num_heads=3, mlp_dim=768),  # 5,717,416
    "S": Variant(hidden_dim=384, num_layers=12, num_heads=6, mlp_dim=1536),  # 22,050,664
    "B": Variant(hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072),  # 86,567,656
    "L": Variant(
        hidden_dim=1024, num_layers=24, num_heads=16, mlp_dim=4096, dropout_rate=0.1
    ),  # 304,326,632
    "H": Variant(
        hidden_dim=1280, num_layers=32, num_heads=16, mlp_dim=5120, dropout_rate=0.1
    ),  # 632,045,800 (H/14)
}

_NAME = re.compile(r"^(?P<variant>[A-Za-z]+)(?:/(?P<patch>\d+))?$")


def parse_variant(name):
    """Splits a name like `"B/16"` into its `Variant` and patch size.

    Args:
        name: `"<variant>/<patch_size>"` such as `"S/16"`, `"B/32"`, `"H/14"`,
            or a bare variant name (`"tiny"`), whose patch size is then `None`.

    Returns:
        `(Variant, patch_size)`, `patch_size` an int or `None`.

    Example:

    >>> parse_variant("B/16")
    (Variant(hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072, dropout_rate=0.0, attention_dropout_rate=0.0), 16)
    """
    match = _NAME.match(str(name).strip()) if isinstance(name, str) else None
    if match is None or match["variant"] not in VARIANTS:
        raise ValueError(
            f"Unknown variant={name!r}. Expected one of {sorted(VARIANTS)} with an "
            "optional patch size, such as 'B/16', 'S/32' or 'H/14'."
        )
    patch = match["patch"]
    if patch is not None and int(patch) <= 0:
        raise ValueError(f"variant={name!r} has a non-positive patch size.")
    return VARIANTS[match["variant"]], int(patch) if patch is not None else None
