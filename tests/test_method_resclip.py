"""ResCLIP (alignclip.methods.resclip): each step on a hand-checkable case, the preset end to end on the tiny models,
bad field values, and parity with the authors' code (github:yvhangyang/ResCLIP @ 0e085f7, golden outputs of their
code run unmodified on the shared tiny weights; tests/data/parity/resclip/README.md)."""

import math

import numpy as np
import pytest
import torch
from parity import assert_parity, check_weights, classes, image_keys, load_golden, processed_image, settings

from alignclip.errors import ConfigError
from alignclip.methods import resclip
from alignclip.ops.resclip import (
    cross_correlation,
    pamr,
    patch_labels,
    resclip_attention,
    sfr_attention,
    straight_path_valid,
)
from alignclip.pipeline.config import build_config
from alignclip.pipeline.segmentor import Segmentor

CLASSES = ["background", "building,roof", "road", "water"]
E = math.e


def _image(h=96, w=128, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _seg(preset="resclip", **over):
    over.setdefault("long_side", None)
    return Segmentor(build_config(preset, smoke=True, **over), CLASSES)


# ------------------------------------------------------------------------------------------ (a) the steps
def test_cross_correlation_is_the_mean_of_the_maps():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    b = torch.tensor([[0.0, 1.0], [0.5, 0.5]]).view(1, 1, 2, 2)
    torch.testing.assert_close(cross_correlation([a, b]), torch.tensor([[0.5, 0.5], [0.25, 0.75]]).view(1, 1, 2, 2))


def test_last_block_attention_on_two_tokens():
    k = torch.tensor([1.0, 0.0]).view(1, 1, 2, 1)  # k kᵀ / sqrt(1) = [[1, 0], [0, 0]]
    zero = torch.zeros(2, 2)
    plain = torch.tensor([[E / (E + 1), 1 / (E + 1)], [0.5, 0.5]]).view(1, 1, 2, 2)
    torch.testing.assert_close(resclip_attention(k, zero), plain)
    # G is added before the softmax: G = [[0, 0], [0, 1]] makes row 1 (1, e) / (1 + e)
    g = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(resclip_attention(k, g)[0, 0, 1], torch.tensor([1 / (1 + E), E / (1 + E)]))
    # RCS after the softmax: 2 (0.5 A + 0.5 I) = A + I (rows sum to τ_rcs = 2)
    eye = torch.eye(2).view(1, 1, 2, 2)
    torch.testing.assert_close(resclip_attention(k, zero, rcs=eye, rcs_weights=(2.0, 0.5)), plain + eye)
    # SFR before the softmax, divided by its max: 2 (0.5 S + 0.5 I) = [[2, 0], [0, 1]]
    out = resclip_attention(k, zero, sfr=3 * torch.eye(2).unsqueeze(0), sfr_weights=(2.0, 0.5))
    expected = torch.tensor([[E**2 / (E**2 + 1), 1 / (E**2 + 1)], [1 / (1 + E), E / (1 + E)]])
    torch.testing.assert_close(out, expected.view(1, 1, 2, 2))
    # the authors round A_sfr / max to float16: 1/3 -> 0.333251953125 (λ = 1, τ = 1 leaves A_sfr alone)
    sfr = torch.tensor([[[1.0, 1 / 3], [0.0, 1.0]]])
    s16 = resclip_attention(k, zero, sfr=sfr, sfr_weights=(1.0, 1.0)).log()
    s32 = resclip_attention(k, zero, sfr=sfr, sfr_weights=(1.0, 1.0), sfr_fp16=False).log()
    assert abs((s16[0, 0, 0, 0] - s16[0, 0, 0, 1]).item() - (1 - 0.333251953125)) < 1e-6
    assert abs((s32[0, 0, 0, 0] - s32[0, 0, 0, 1]).item() - (1 - 1 / 3)) < 1e-6


def test_pamr_on_a_constant_image_averages_the_eight_neighbours():
    # constant image: σ = 0, all affinities equal (1/8); replicate padding at the borders
    image = torch.ones(1, 3, 1, 3)
    mask = torch.tensor([0.0, 3.0, 6.0]).view(1, 1, 1, 3)
    # pixel 0: 0,0,3 / 0,3 / 0,0,3 -> 9/8; pixel 1: 0,3,6 / 0,6 / 0,3,6 -> 3; pixel 2: 39/8
    out = pamr(image, mask, iters=1, dilations=(1,))
    torch.testing.assert_close(out, torch.tensor([9 / 8, 3.0, 39 / 8]).view(1, 1, 1, 3))
    torch.testing.assert_close(pamr(image, mask, iters=0), mask)


def test_pamr_does_not_cross_a_strong_edge():
    image = torch.tensor([0.0, 0.0, 0.0, 9.0, 9.0, 9.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6).contiguous()
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 6)
    out = pamr(image, mask, iters=1, dilations=(1,))[0, 0, 0]
    assert out[0] > 0.999 and out[5] < 0.001  # far from the edge: kept
    assert out[2] > 0.9 and out[3] < 0.1  # at the edge: the neighbours across it get ~no affinity


def test_patch_labels_threshold_and_mode():
    # 2 queries on a 2 x 4 image, patches 2 x 2: left patch mostly query 1, right patch query 1 but unsure
    p1 = torch.tensor([[0.9, 0.8, 0.55, 0.55], [0.2, 0.9, 0.55, 0.9]])
    probs = torch.stack([1 - p1, p1]).unsqueeze(0)  # [1, 2, 2, 4]
    # pixel labels: [[1, 1, 1, 1], [0, 1, 1, 1]] -> modes 1, 1
    assert patch_labels(probs, 0.0, 2).tolist() == [[[1, 1]]]
    # threshold 0.6: the 0.55 pixels become 0 -> right patch (0, 0, 0, 1) -> 0
    assert patch_labels(probs, 0.6, 2).tolist() == [[[1, 0]]]


def test_straight_path_on_a_row_of_three():
    # labels 1 1 2, M = 2, t = 0, 1/2, 1; round half to even: 0.5 -> 0, 1.5 -> 2
    # (1 -> 2): t = 0, 1/2 -> cols 1, 2 -> labels 1, 2: invalid; (2 -> 1): cols 2, 2: valid; (0 -> 2): 1, 1, 2: invalid
    valid = straight_path_valid(torch.tensor([[[1, 1, 2]]]))
    assert valid.tolist() == [[[True, True, False], [True, True, False], [False, True, True]]]


def test_sfr_matrix_decay_smoothing_and_cls():
    # labels 1 2 1: the pair (0, 2) shares a label but its path crosses 2 -> decayed by exp(-2 / 2)
    labels = torch.tensor([[[1, 2, 1]]])
    d = math.exp(-1.0)
    out = sfr_attention(labels, std=0.1)  # 0.1 -> a single tap: no smoothing
    rows = torch.tensor([[1.0, 0.0, d], [0.0, 1.0, 0.0], [d, 0.0, 1.0]])
    expected = torch.zeros(4, 4)
    expected[1:, 1:] = rows / (rows.sum(1, keepdim=True) + 1e-8)
    torch.testing.assert_close(out, expected.unsqueeze(0))
    kept = sfr_attention(labels, std=0.1, delete_same_entity=False)[0, 1:, 1:]
    torch.testing.assert_close(kept[0], torch.tensor([0.5, 0.0, 0.5]), atol=1e-7, rtol=0)
    # std 1: 3 taps (e^-1/2, 1, e^-1/2) / sum along the row, zero padding; row 1 of labels 1 2 3 is (0, 1, 0)
    smooth = sfr_attention(torch.tensor([[[1, 2, 3]]]), std=1.0)[0, 1:, 1:]
    r = math.exp(-0.5)
    torch.testing.assert_close(smooth[1], torch.tensor([r, 1.0, r]) / (1 + 2 * r))
    torch.testing.assert_close(smooth[0], torch.tensor([1.0, r, 0.0]) / (1 + r))


# ------------------------------------------------------------------------------------------ (b) end to end
def test_preset_end_to_end_on_the_tiny_models():
    seg = _seg()
    assert seg.config.encoder == "resclip" and not seg.config.sga and seg.config.templates == "openai"
    pred = seg.predict(_image())
    assert pred.labels.shape == (96, 128) and torch.isfinite(pred.logits).all()
    sga = _seg("resclip+sga")
    assert sga.config.sga and sga.config.alpha == 0.1
    assert not torch.allclose(sga.predict(_image()).logits, pred.logits)
    # each module and switch changes the result
    for over in (
        dict(resclip_rcs=False),
        dict(resclip_sfr=False),
        dict(resclip_pamr_steps=0),
        dict(drop_residual=False),
    ):
        assert not torch.allclose(_seg(**over).predict(_image()).logits, pred.logits), over


def test_plugins_run_on_the_returned_features():
    base = _seg().predict(_image()).logits
    for preset, over in (
        ("resclip+cce", {}),
        ("resclip", dict(cls_token_lambda=-0.3)),
        ("resclip", dict(upsampler="jbu_one", upsampler_ckpt="none")),
    ):
        logits = _seg(preset, **over).predict(_image()).logits
        assert torch.isfinite(logits).all() and not torch.allclose(logits, base), (preset, over)


def test_sga_source_switch():
    base = _seg("resclip+sga").predict(_image()).logits
    assert not torch.allclose(_seg("resclip+sga", resclip_sga_source="first").predict(_image()).logits, base)
    # without SGA the source does not matter
    torch.testing.assert_close(
        _seg(resclip_sga_source="first").predict(_image()).logits, _seg().predict(_image()).logits
    )


def test_batched_windows_equal_one_at_a_time_and_twelve_layers():
    seg = Segmentor(build_config("resclip", smoke=True, backbone="tiny-b16", resclip_sga_source="first"), CLASSES)
    g = torch.Generator().manual_seed(0)
    windows = torch.randn(2, 3, 96, 128, generator=g)  # a non-square 6 x 8 grid
    with torch.no_grad():
        patch, cls, src = resclip.encode(seg.encoder_context, windows)
        one = [resclip.encode(seg.encoder_context, windows[i : i + 1]) for i in range(2)]
    assert patch.shape == (2, 64, 6, 8) and cls.shape == (2, 64) and src.shape == patch.shape
    torch.testing.assert_close(patch, torch.cat([o[0] for o in one]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(src, torch.cat([o[2] for o in one]), rtol=1e-5, atol=1e-5)


def test_encode_makes_no_host_reads(monkeypatch):
    """As tests/test_no_host_reads.py, for this encoder (the first pass's labels and SFR stay on the device)."""
    seg = _seg("resclip+sga", window_batch=4)
    image = _image()
    expected = seg.predict(image).labels
    encode = seg._encode
    inside = {"on": False}

    def guarded(*args, **kwargs):
        inside["on"] = True
        try:
            return encode(*args, **kwargs)
        finally:
            inside["on"] = False

    def forbid(name):
        original = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            assert not inside["on"], f"Tensor.{name} read a tensor to the host inside the encoder"
            return original(self, *args, **kwargs)

        return method

    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, forbid(name))
    monkeypatch.setattr(seg, "_encode", guarded)
    assert np.array_equal(seg.predict(image).labels, expected)


# ------------------------------------------------------------------------------------------ (c) bad input
@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("resclip_sga_source", "cls", "choose one of final, first"),
        ("resclip_rcs_start", -1, "0 <= start < end"),
        ("resclip_rcs_end", 5, "0 <= start < end"),
        ("resclip_rcs_lambda", 1.5, "in [0, 1]"),
        ("resclip_sfr_tau", 0.0, "must be > 0"),
        ("resclip_std", -1.0, "must be > 0"),
        ("resclip_temp_thd", 2.0, "in [0, 1]"),
        ("resclip_pamr_steps", -1, "must be >= 0"),
        ("resclip_sfr", "maybe", "takes"),
    ],
)
def test_bad_fields_name_the_fix(field, value, words):
    with pytest.raises(ConfigError) as err:
        build_config("resclip", smoke=True, **{field: value})
    message = str(err.value)
    assert words in message and field in message and "\n" not in message


# ------------------------------------------------------------------------------------------ (d) parity
def test_parity_with_the_authors_code():
    """Golden outputs of the authors' ResCLIPSegmentation (their code unmodified; mmseg/mmengine stubbed, .cuda()
    and the first pass's PAMR kept on the CPU, their fp16 weight cast skipped), on three real fixtures."""
    check_weights("resclip")
    golden = load_golden("resclip")
    config = build_config(
        "resclip",
        backbone="tiny-b16",
        pretrained="none",
        device="cpu",
        precision="fp32",
        long_side=None,
        **settings(golden),
    )
    seg = Segmentor(config, classes(golden))
    for key in image_keys(golden):
        image = processed_image(golden, key, 448)  # the pixels fed to their code
        assert_parity(seg, golden, key, image)
