"""ProxyCLIP (alignclip.methods.proxyclip, alignclip.ops.proxyclip): the proxy attention on hand-checkable cases, the
preset end to end on the tiny models, bad inputs, and parity with the authors' code (mc-lan/ProxyCLIP, commit
e7b767f) run on the shared tiny random weights (tests/data/parity/proxyclip/README.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from parity import assert_parity, check_weights, load_golden, processed_image, settings

from alignclip.errors import ConfigError
from alignclip.models.clip import dense_features
from alignclip.ops.proxyclip import proxy_attend, proxy_attention_weights, resize_values
from alignclip.pipeline.config import build_config
from alignclip.pipeline.segmentor import Segmentor

# ---------------------------------------------------------------- ops on hand-checkable cases


def test_proxy_attention_masks_below_beta_mean_and_scales_by_gamma():
    # cosine similarities S = [[1, .6, 0], [.6, 1, .8], [0, .8, 1]] (the second feature has norm 5: normalised away)
    feats = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [0.0, 1.0]]], dtype=torch.float64)
    gamma = 5 * math.log(2)  # γ·(1 − 0.8) = ln 2: the two kept entries of rows 2 and 3 weigh 2:1
    w = proxy_attention_weights(feats, beta=1.0, gamma=gamma)  # threshold mean(S) = 5.8 / 9 ≈ 0.644
    expected = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2 / 3, 1 / 3], [0.0, 1 / 3, 2 / 3]]], dtype=torch.float64)
    torch.testing.assert_close(w, expected)


def test_proxy_attention_mean_is_per_window_and_negative_entries_are_masked():
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # S = [[1, -1], [-1, 1]], mean 0: the -1 entries are masked
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # S = I, mean 1/2; β = 0: only S < 0 is masked, ties at 0 kept
    w = proxy_attention_weights(torch.stack([a, b]), beta=0.0, gamma=1.0)
    torch.testing.assert_close(w[0], torch.eye(2))
    e = math.e
    torch.testing.assert_close(w[1], torch.tensor([[e, 1.0], [1.0, e]]) / (1 + e))
    torch.testing.assert_close(w[1], proxy_attention_weights(b[None], 0.0, 1.0)[0])  # as alone in its batch


def test_proxy_attention_all_masked_row_is_nan_as_the_authors_code():
    feats = torch.ones(1, 3, 4)  # S = 1 everywhere: 1 − 1.2 · 1 < 0 masks every entry
    assert torch.isnan(proxy_attention_weights(feats, beta=1.2, gamma=3.0)).all()


def test_resize_values_bilinear_half_pixel_and_identity():
    values = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1)  # a 1x2 grid, one head, d = 1
    out = resize_values(values, (1, 2), (1, 4))  # samples at x = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert resize_values(values, (1, 2), (1, 2)) is values


def test_proxy_attend_shares_the_weights_across_heads():
    weights = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    values = torch.tensor([[[[2.0], [4.0]], [[0.0], [10.0]]]])  # [B=1, heads=2, N=2, d=1]
    expected = torch.tensor([[[[2.0], [3.0]], [[0.0], [5.0]]]])
    torch.testing.assert_close(proxy_attend(weights, values), expected)


# ---------------------------------------------------------------- the encoder and the preset


def _segmentor(preset: str = "proxyclip", **overrides) -> Segmentor:
    return Segmentor(build_config(preset, smoke=True, **overrides), ["road", "tree,forest", "water"])


def test_identity_proxy_attention_gives_clip_values_and_cls_is_clips_own():
    # β = 0 and a huge γ make A the identity (distinct VFM features); with a VFM grid equal to CLIP's the patch
    # features are then MaskCLIP's (v only, no residual) and the CLS output is CLIP's standard last block
    seg = _segmentor(encoder_vfm="tiny_dino_b16", proxyclip_beta=0.0, proxyclip_gamma=1e4)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    patch, cls = seg.encoder.encode(seg.encoder_context, x)
    visual = seg.clip.model.visual
    torch.testing.assert_close(patch, dense_features(visual, x, "maskclip", True)[0])
    torch.testing.assert_close(cls, dense_features(visual, x, "vanilla", False)[1])


def test_patch_features_are_on_the_vfm_grid():
    seg = _segmentor()  # tiny_dino_b8 stands in for DINO ViT-B/8: 8x8 patches of a 64 window vs CLIP's 4x4
    patch, cls = seg.encoder.encode(seg.encoder_context, torch.randn(3, 3, 64, 64))
    assert patch.shape == (3, seg.clip.embed_dim, 8, 8) and cls.shape == (3, seg.clip.embed_dim)


def test_preset_end_to_end_and_with_sga():
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    seg = _segmentor(long_side=None, crop=64, stride=32)
    assert seg.config.encoder == "proxyclip" and seg.encoder_vfm is not None
    pred = seg.predict(image)
    assert pred.labels.shape == (96, 128) and pred.logits.shape == (4, 96, 128)  # 4 queries: "tree,forest" is two
    assert torch.isfinite(pred.logits).all()
    config = build_config("proxyclip+sga", smoke=True, long_side=None, crop=64, stride=32)
    assert config.sga and config.alpha == 0.1
    with_sga = Segmentor(config, ["road", "tree,forest", "water"]).predict(image)
    assert with_sga.logits.shape == pred.logits.shape and not torch.equal(with_sga.logits, pred.logits)


def test_preset_is_the_table2_protocol_with_dino_b8():
    config = build_config("proxyclip")
    assert (config.encoder, config.encoder_vfm, config.crop, config.stride) == ("proxyclip", "dino_vitb8", 224, 112)
    assert (config.proxyclip_beta, config.proxyclip_gamma, config.templates) == (1.2, 3.0, "openai")
    assert not config.sga and not config.cce and config.upsampler == "none" and config.cls_token_lambda == 0.0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(proxyclip_beta=-0.1), "proxyclip_beta=-0.1 must be"),
        (dict(proxyclip_beta=float("nan")), "proxyclip_beta=nan must be"),
        (dict(proxyclip_gamma=0.0), "proxyclip_gamma=0.0 must be"),
        (dict(encoder_vfm="dino_vitb99"), "unknown VFM 'dino_vitb99'"),
        (dict(encoder_vfm="tiny_dino_b16", crop=200), "patch 16, which does not tile crop=200"),
        (dict(encoder_vfm="dinov2_vitb14_reg", crop=216), "patch 14, which does not tile crop=216"),
        (dict(encoder_vfm="none"), "needs a VFM"),
    ],
)
def test_bad_fields_give_one_line_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        build_config("proxyclip", **overrides)
    assert "\n" not in str(err.value)


def test_window_not_tiled_by_the_vfm_patch_fails_before_the_vfm_runs():
    seg = _segmentor(encoder_vfm="tiny_dino_b16")
    with pytest.raises(ConfigError, match="cannot be aligned with CLIP's") as err:
        seg.encoder.encode(seg.encoder_context, torch.randn(1, 3, 64, 72))  # 72 = 4.5 VFM patches
    assert "\n" not in str(err.value)


def test_other_presets_ignore_the_proxyclip_fields():
    assert build_config("segearth-ov", proxyclip_gamma=-1.0).proxyclip_gamma == -1.0  # checked only for ProxyCLIP


# ---------------------------------------------------------------- parity with the authors' code


@pytest.mark.parametrize("key", ["potsdam", "vaihingen", "openearthmap"])
def test_parity_with_the_authors_code(key):
    """Golden outputs of their proxyclip_segmentor.py (unmodified; mmseg stubbed, fp32 on CPU, DINO's own ViT for
    torch.hub) on the tiny weights, 224 windows at stride 112 on 448² images; β = 1.0 there (see the README)."""
    check_weights("proxyclip")
    golden = load_golden("proxyclip")
    image = processed_image(golden, key, 448)
    classes = [str(c) for c in golden[f"{key}/classes"]]
    config = build_config(
        "proxyclip", backbone="tiny-b16", pretrained="none", device="cpu", precision="fp32", long_side=None,
        **settings(golden),
    )  # fmt: skip
    assert_parity(Segmentor(config, classes), golden, key, image)


def test_window_logits_make_no_host_reads(monkeypatch):
    """As tests/test_no_host_reads.py for the other presets: no tensor is read back to the host per window."""
    seg = _segmentor(window_batch=4)
    image = np.random.default_rng(0).integers(0, 256, size=(120, 170, 3), dtype=np.uint8)
    expected = seg.predict(image).labels
    run = seg.window_logits

    def guarded(*args, **kwargs):
        with monkeypatch.context() as m:
            for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__"):
                m.setattr(torch.Tensor, name, lambda *a, _n=name, **k: pytest.fail(f"host read {_n} in a window"))
            return run(*args, **kwargs)

    monkeypatch.setattr(seg, "window_logits", guarded)
    assert np.array_equal(seg.predict(image).labels, expected)
