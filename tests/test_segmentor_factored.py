"""The segmentor's factored upsampled logits equal the dense ones (alignclip.ops.jbu.FactoredFeatures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignclip.ops.jbu import FactoredFeatures
from alignclip.pipeline.segmentor import build_segmentor


@pytest.mark.parametrize("preset", ["segearth-ov", "alignclip-d"])
@pytest.mark.parametrize("sga_source", ["patch", "upsampled"])
def test_factored_logits_equal_dense_logits(preset, sga_source, monkeypatch):
    # 64-pixel windows: 4x4 = 16 patches < 32 channels of the tiny CLIP, so the operator path is taken
    seg = build_segmentor(
        preset,
        classes=["road", "building,roof", "tree"],
        smoke=True,
        crop=64,
        stride=32,
        long_side=None,
        sga_source=sga_source,
    )
    image = np.random.default_rng(0).integers(0, 256, size=(96, 130, 3), dtype=np.uint8)
    crops = torch.randn(2, 3, 64, 64)
    x, patch, _, _ = seg._encode(crops)
    with torch.inference_mode():
        assert isinstance(seg._upsample(patch, x, factored=True), FactoredFeatures)
    factored = seg.predict(image)
    dense_upsample = seg._upsample
    monkeypatch.setattr(seg, "_upsample", lambda patch, x, factored=False: dense_upsample(patch, x))
    dense = seg.predict(image)
    torch.testing.assert_close(factored.logits, dense.logits, atol=1e-5, rtol=1e-5)
    assert (factored.labels == dense.labels).mean() > 0.999
