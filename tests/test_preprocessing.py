"""The pixel scalings: each family's statistics map its mean pixel to 0 and one standard deviation to 1."""

import numpy as np
import pytest

from keras_vit.preprocessing import SCALINGS, preprocessing_model

pytestmark = pytest.mark.fast  # the edit loop's tier: `pytest -m fast`

# On 0..1, as the families publish them.
PUBLISHED = {
    "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # ViT, AugReg, SigLIP: [-1, 1]
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # timm, DeiT, DINOv2
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),  # OpenAI CLIP
}


@pytest.mark.parametrize("scaling", sorted(PUBLISHED))
def test_each_scaling_normalises_with_the_published_statistics(scaling):
    mean, std = (np.array(v) * 255 for v in PUBLISHED[scaling])
    np.testing.assert_allclose(SCALINGS[scaling], (mean, std), rtol=1e-6)
    images = np.stack([np.broadcast_to(mean, (4, 4, 3)), np.broadcast_to(mean + std, (4, 4, 3))]).astype("float32")
    out = np.asarray(preprocessing_model(4, scaling)(images))
    np.testing.assert_allclose(out[0], 0, atol=1e-5)
    np.testing.assert_allclose(out[1], 1, atol=1e-5)
