"""The segmentor end to end on the tiny random models (pipeline checks, CPU)."""

import numpy as np
import pytest
import torch

from alignclip.config import build_config
from alignclip.errors import ConfigError, InputError
from alignclip.segmentor import Segmentor

CLASSES = ["background", "building,roof", "road", "water"]


def _image(h=150, w=260, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _seg(preset="alignclip-d", **over):
    over.setdefault("long_side", 224)
    return Segmentor(build_config(preset, smoke=True, **over), CLASSES)


@pytest.fixture(scope="module")
def seg_d():
    return _seg()


def test_output_is_input_sized_labels(seg_d):
    img = _image()
    labels = seg_d.segment(img)
    assert labels.shape == img.shape[:2] and labels.dtype == np.uint8
    assert labels.max() < len(CLASSES)
    assert seg_d.is_random


def test_deterministic_same_bits(seg_d):
    img = _image(seed=3)
    a = seg_d.predict(img)
    b = seg_d.predict(img)
    assert np.array_equal(a.labels, b.labels)
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("preset", ["clip", "maskclip", "sclip", "clearclip", "naclip", "segearth-ov",
                                    "segearth-ov+sga", "segearth-ov+cce"])
def test_every_preset_runs(preset):
    labels = _seg(preset).segment(_image(64, 100))
    assert labels.shape == (64, 100)


def test_alignclip_s_with_tiny_sam():
    labels = _seg("alignclip-s", vfm="tiny_sam").segment(_image(64, 100))
    assert labels.shape == (64, 100)


def test_switch_variants_run():
    img = _image(100, 120)
    for over in [dict(sga_source="upsampled"), dict(sga_scope="image"), dict(affinity="cosine"),
                 dict(grid_align="clip"), dict(top_n=3), dict(sga_cls_term=False), dict(upsampler="none")]:
        assert _seg(**over).segment(img).shape == (100, 120)


def test_window_batching_does_not_change_results():
    img = _image(200, 330, seed=5)
    a = _seg(window_batch=32, long_side=None).predict(img).logits
    b = _seg(window_batch=2, long_side=None).predict(img).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sga_off_equals_alpha_zero():
    img = _image(96, 96, seed=2)
    a = _seg("segearth-ov").predict(img).logits
    b = _seg("segearth-ov+sga", alpha=0.0).predict(img).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_cce_beta_zero_equals_no_cce():
    img = _image(96, 96, seed=4)
    a = _seg("segearth-ov").predict(img).logits
    b = _seg("segearth-ov+cce", beta=0.0).predict(img).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_threshold_sends_pixels_to_background():
    seg = _seg(prob_thd=1.0, bg_idx=2)
    assert (seg.segment(_image(64, 64)) == 2).all()


def test_bad_inputs():
    with pytest.raises(InputError, match="RGB uint8"):
        _seg().segment(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(InputError, match="RGB uint8"):
        _seg().segment(np.zeros((10, 10, 3), dtype=np.uint16))
    with pytest.raises(ConfigError, match="bg_idx"):
        _seg(bg_idx=7)
    with pytest.raises(ConfigError, match="K_c"):
        _seg(n_clusters=500).segment(_image(64, 64))
    with pytest.raises(ConfigError, match="upsampler-ckpt"):
        Segmentor(build_config("segearth-ov", smoke=True, upsampler_ckpt=None), CLASSES)


def test_image_scope_sga_uses_global_top_patch():
    """With one window, per-image and per-window SGA must coincide."""
    img = _image(96, 96, seed=7)
    a = _seg("segearth-ov+sga", sga_scope="image").predict(img).logits
    b = _seg("segearth-ov+sga", sga_scope="window").predict(img).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
