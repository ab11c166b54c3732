"""Trident (alignclip.methods.trident, alignclip.ops.trident): splicing, SAM's refined affinity and the aggregation on
hand-checkable cases, the preset end to end on the tiny models (ViT-B/16-like and ViT-L/14-like), bad inputs, bounded
memory on large tiles, and parity with the authors' code (YuHengsss/Trident, commit a93b346) run on the shared tiny
random weights (tests/data/parity/trident/README.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from parity import assert_parity, check_weights, load_golden, processed_image, settings
from PIL import Image

from alignclip.errors import ConfigError
from alignclip.methods import trident
from alignclip.methods.base import IMAGE_CONTEXT_SIDE
from alignclip.models.vfm import create_vfm
from alignclip.ops.proxyclip import proxy_attention_weights
from alignclip.ops.trident import (
    aggregate,
    clip_image_size,
    pil_resize,
    proxy_weights,
    refined_attention,
    sam_affinity,
    sam_input_size,
    sam_threshold,
    similarity_mean,
    splice_ratio,
    splice_windows,
    window_layout,
)
from alignclip.ops.windows import window_boxes
from alignclip.pipeline.config import build_config
from alignclip.pipeline.segmentor import Segmentor

CLASSES = ["road", "tree,forest", "water"]

# ---------------------------------------------------------------- ops on hand-checkable cases


def test_clip_image_size_as_their_preprocess_image():
    assert clip_image_size(448, 448, 16, 224) == (448, 448)  # multiples of the patch: unchanged
    # long side 150 -> 160, short side int(100 * 160 / 150) = 106 -> 112, each at least one 224 window
    assert clip_image_size(100, 150, 16, 224) == (224, 224)
    assert clip_image_size(500, 300, 16, 224) == (512, 320)  # int(300 * 512 / 500) = 307 -> 320
    assert clip_image_size(450, 450, 14, 336) == (462, 462)


def test_window_layout_is_the_baselines():
    for h, w, crop, stride in [(448, 448, 224, 112), (500, 320, 224, 112), (224, 100, 224, 112), (462, 462, 336, 224)]:
        assert window_layout(h, w, crop, stride) == [tuple(b) for b in window_boxes(h, w, crop, stride).tolist()]


def test_similarity_mean_is_over_all_windows_and_entries():
    a = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # S = I: mean 1/2
    b = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])  # S = 1: mean 1
    torch.testing.assert_close(similarity_mean(torch.cat([a, b])), torch.tensor(0.75))


def test_proxy_weights_with_the_window_mean_are_proxyclips():
    feats = torch.randn(1, 9, 5, generator=torch.Generator().manual_seed(0))
    mean = similarity_mean(feats)
    torch.testing.assert_close(proxy_weights(feats, mean, 1.0, 3.0), proxy_attention_weights(feats, 1.0, 3.0))
    # a mean shared by two windows: the second window's threshold is the pair's mean, not its own
    other = torch.ones(1, 9, 5)  # S = 1 everywhere: mean 1
    shared = proxy_weights(torch.cat([feats, other]), similarity_mean(torch.cat([feats, other])), 0.0, 1.0)
    torch.testing.assert_close(shared[1], torch.full((9, 9), 1 / 9))


def test_splice_ratio_as_their_guidance_attn():
    assert splice_ratio((28, 28), (14, 14)) == 2  # DINO B/8 on CLIP B/16: a 2x finer map
    assert splice_ratio((14, 14), (14, 14)) == 1
    assert splice_ratio((21, 21), (24, 24)) == 1  # DINO B/16 on CLIP L/14 at 336: resized to CLIP's grid
    assert splice_ratio((7, 7), (8, 8)) == 1


def test_splice_windows_averages_overlaps():
    # a 1x3 map from two 1x2 windows at columns 0-1 (value 1) and 1-2 (value 3): the middle cell averages them
    feats = torch.tensor([[[[1.0, 1.0]]], [[[3.0, 3.0]]]])  # [2, C=1, 1, 2]
    out = splice_windows(feats, [(0, 1, 0, 2), (0, 1, 1, 3)], (1, 3))
    torch.testing.assert_close(out, torch.tensor([[[[1.0, 2.0, 3.0]]]]))
    # two channels, a 2x2 map from four 1x1 windows: each cell is its window's
    feats = torch.arange(8.0).view(4, 2, 1, 1)
    out = splice_windows(feats, [(0, 1, 0, 1), (0, 1, 1, 2), (1, 2, 0, 1), (1, 2, 1, 2)], (2, 2))
    torch.testing.assert_close(out[0, 1], torch.tensor([[1.0, 3.0], [5.0, 7.0]]))


def test_sam_input_size_as_resize_longest_side():
    assert sam_input_size(448, 448, 1024) == (1024, 1024)
    assert sam_input_size(120, 176, 1024) == (698, 1024)  # int(120 * 1024 / 176 + 0.5) = int(698.68)
    assert sam_input_size(128, 176, 224) == (163, 224)


@pytest.mark.parametrize(
    ("h", "w", "nh", "nw"), [(448, 448, 1024, 1024), (120, 170, 723, 1024), (37, 50, 20, 50), (50, 37, 50, 20)]
)
def test_pil_resize_is_pillows_bilinear(h, w, nh, nw):
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = np.array(Image.fromarray(img).resize((nw, nh), Image.BILINEAR)).astype(np.float32)
    ours = pil_resize(torch.from_numpy(img).permute(2, 0, 1).float(), (nh, nw)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours, ref)


def test_sam_threshold_is_cos_fac_times_the_mean_similarity_clamped():
    v = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]])  # one head: S rows [1,0,1], [0,1,0], [1,0,1]
    torch.testing.assert_close(sam_threshold(v, 1.2), torch.tensor([[0.8], [0.4], [0.8]]))
    torch.testing.assert_close(sam_threshold(v, 2.0), torch.tensor([[0.9], [2 / 3], [0.9]]))  # at most 0.9
    neg = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])  # S rows [1, -1]: mean 0; with cos_fac -1 the threshold is 0
    torch.testing.assert_close(sam_threshold(neg, 1.0), torch.zeros(2, 1))
    anti = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]]])  # row 0 mean -1/3: threshold -0.4
    torch.testing.assert_close(sam_threshold(anti, 1.2)[0], torch.tensor([-0.4]))
    torch.testing.assert_close(sam_threshold(anti, 1.2, refine_neg_cos=False)[0], torch.tensor([0.6]))
    two = torch.cat([v, v * torch.tensor([1.0, -1.0])])  # a second head with the same similarities
    torch.testing.assert_close(sam_threshold(two, 1.2), sam_threshold(v, 1.2))


def test_refined_attention_and_affinity():
    v = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]])  # thresholds 0.8, 0.4, 0.8 (above)
    attn = torch.tensor([[[0.5, 0.2, 0.3], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]])
    kept = refined_attention(attn[0], v[0], sam_threshold(v, 1.2))
    torch.testing.assert_close(kept, torch.tensor([[0.5, 0.0, 0.3], [0.0, 0.6, 0.0], [0.2, 0.0, 0.6]]))
    w = sam_affinity(attn, v, 1.2)
    torch.testing.assert_close(w, torch.tensor([[0.625, 0.0, 0.375], [0.0, 1.0, 0.0], [0.25, 0.0, 0.75]]))
    two = torch.cat([attn, torch.full_like(attn, 1 / 3)])  # heads averaged before the row normalisation
    vv = torch.cat([v, v])
    expected = (kept + refined_attention(two[1], v[0], sam_threshold(v, 1.2))) / 2
    torch.testing.assert_close(sam_affinity(two, vv, 1.2), expected / expected.sum(-1, keepdim=True))
    torch.testing.assert_close(sam_affinity(lambda h: two[h], vv, 1.2), sam_affinity(two, vv, 1.2))


def test_aggregate_resizes_to_sams_grid_then_mixes():
    spliced = torch.arange(4.0).view(1, 1, 2, 2)
    out = aggregate(torch.eye(4), spliced, (2, 2))
    torch.testing.assert_close(out, torch.arange(4.0).view(4, 1))
    mean_all = aggregate(torch.full((4, 4), 0.25), spliced, (2, 2))
    torch.testing.assert_close(mean_all, torch.full((4, 1), 1.5))
    up = aggregate(torch.eye(16), spliced, (4, 4))  # bilinear, half-pixel centres: 0, .25, .75, 1 on the first row
    torch.testing.assert_close(up[:4, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


# ---------------------------------------------------------------- the encoder and the preset


def _segmentor(preset: str = "trident", classes=CLASSES, **overrides) -> Segmentor:
    return Segmentor(build_config(preset, smoke=True, **overrides), classes)


def _image(h: int = 120, w: int = 170, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_preset_is_the_table2_protocol_with_dino_b16_and_sam_b():
    config = build_config("trident")
    assert (config.encoder, config.encoder_vfm, config.trident_sam) == ("trident", "dino_vitb16", "sam_vitb")
    assert (config.backbone, config.crop, config.stride, config.templates) == ("ViT-B-16", 224, 112, "openai")
    assert (config.trident_beta, config.trident_gamma, config.trident_cos_fac) == (1.2, 3.0, 1.2)
    assert config.trident_refine_neg_cos and not config.sga and not config.cce and config.upsampler == "none"
    assert config.cls_token_lambda == 0.0
    smoke = build_config("trident", smoke=True)  # both VFMs have tiny stand-ins: no weights needed
    assert (smoke.encoder_vfm, smoke.trident_sam, smoke.trident_sam_pretrained) == ("tiny_dino_b16", "tiny_sam", "none")
    # their own CLIP and windows are a switch away (their base config: ViT-B/16, 336 crops at stride 224)
    assert build_config("trident", backbone="ViT-L-14", crop=336, stride=224).crop == 336


def test_the_sam_is_built_once_and_named_in_the_weights_identity():
    seg = _segmentor()
    sam = seg.encoder_context.vfms[trident.SAM_KEY]
    assert sam.family == "sam" and sam.name == "tiny_sam"
    assert seg.weights_identity()["trident_sam"] == "random"
    assert _segmentor().encoder_context.vfms[trident.SAM_KEY] is sam  # cached across segmentors


def test_preset_end_to_end_and_with_sga():
    image = _image()
    seg = _segmentor(long_side=None)
    pred = seg.predict(image)
    assert pred.labels.shape == (120, 170) and pred.logits.shape == (4, 120, 170)  # "tree,forest" is two queries
    assert torch.isfinite(pred.logits).all()
    config = build_config("trident+sga", smoke=True, long_side=None)
    assert config.sga and config.alpha == 0.1
    with_sga = Segmentor(config, CLASSES).predict(image)
    assert with_sga.logits.shape == pred.logits.shape and not torch.equal(with_sga.logits, pred.logits)
    assert np.array_equal(seg.segment(image), pred.labels)  # the bounded band path gives the same labels


def test_features_are_on_sams_grid_of_the_image():
    seg = _segmentor(long_side=None)
    ctx = seg.encoder_context
    ctx.image = lambda: seg.preprocess(_image())[None]
    # 120x170 -> 128x176 (multiples of 16) -> SAM input 163x224 (long side 224, tiny_sam's native size) -> 10x14
    feats = trident.encode_image(ctx)
    assert feats.shape == (1, seg.clip.embed_dim, 10, 14)
    weights, grid = trident.sam_weights(ctx, ctx.image())
    assert grid == (10, 14) and weights.shape == (140, 140)
    torch.testing.assert_close(weights.sum(-1), torch.ones(140))


def test_one_window_splices_to_proxyclips_features():
    # one window covering the image: the spliced map is ProxyCLIP's (its mean is the window's own) before ln_post
    seg = _segmentor(long_side=None, crop=96, stride=96, trident_beta=1.0)
    ctx = seg.encoder_context
    x = seg.preprocess(_image(96, 96))[None]
    spliced = trident.spliced_features(ctx, x)
    visual = seg.clip.model.visual
    ours = (visual.ln_post(spliced.flatten(2).transpose(1, 2)) @ visual.proj).transpose(1, 2)
    proxy = Segmentor(
        build_config("proxyclip", smoke=True, encoder_vfm="tiny_dino_b16", proxyclip_beta=1.0), CLASSES, clip=seg.clip
    )
    theirs, _ = proxy.encoder.encode(proxy.encoder_context, x)
    torch.testing.assert_close(ours, theirs.flatten(2))


def test_dino_b8_stand_in_splices_a_finer_map():
    seg = _segmentor(long_side=None, encoder_vfm="tiny_dino_b8")
    x = seg.preprocess(_image(224, 336))[None]
    assert trident.spliced_features(seg.encoder_context, x).shape[-2:] == (28, 42)  # 2x CLIP's 14x21 grid


def test_vit_l14_like_backbone_end_to_end():
    """Their ViT-L/14 switch on a tiny L/14-like CLIP (patch 14): windows must be multiples of 14 (and of DINO's 16)."""
    seg = _segmentor(backbone="tiny-l14", long_side=None, crop=112, stride=56)
    assert seg.clip.patch_size == 14
    pred = seg.predict(_image(150, 200))
    assert pred.logits.shape == (4, 150, 200) and torch.isfinite(pred.logits).all()
    with pytest.raises(ConfigError, match="multiples of its patch 14") as err:
        _segmentor(backbone="tiny-l14", long_side=None, crop=112, stride=50).predict(_image(150, 200))
    assert "\n" not in str(err.value)


def test_large_tiles_use_the_bounded_image_context(monkeypatch):
    seg = _segmentor(long_side=None)
    seen = []
    run = trident.spliced_features

    def spy(ctx, image):
        seen.append(tuple(image.shape[-2:]))
        return run(ctx, image)

    monkeypatch.setattr(trident, "spliced_features", spy)
    labels = seg.segment(_image(1000, 1400))
    assert labels.shape == (1000, 1400)
    assert max(seen[0]) <= IMAGE_CONTEXT_SIDE  # 1400 -> 896 long side: 49 windows at most


def test_tiny_sam_1024_matches_sams_layout():
    sam = create_vfm("tiny_sam_1024", "none")
    assert (sam.native_size, sam.num_heads, sam.patch_size) == (1024, 12, 16)
    assert sam.model.blocks[-1].window_size == 0 and math.isclose(sam.model.blocks[0].norm1.eps, 1e-6)
    assert sam.model.blocks[-1].attn.rel_pos_h.abs().sum() > 0  # drawn, so the bias is exercised


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("preset", "overrides", "match"),
    [
        ("trident", dict(trident_beta=-0.1), "trident_beta=-0.1 must be"),
        ("trident", dict(trident_gamma=0.0), "trident_gamma=0.0 must be"),
        ("trident", dict(trident_cos_fac=float("nan")), "trident_cos_fac=nan must be"),
        ("trident+cce", {}, "set cce=False"),
        ("trident", dict(upsampler="jbu_one"), "set upsampler=none"),
        ("trident", dict(cls_token_lambda=-0.3), "set cls_token_lambda=0"),
        ("trident+sga", dict(sga_source="upsampled"), "set sga_source=patch"),
        ("trident", dict(trident_sam="dino_vitb16"), "not a SAM image encoder"),
        ("trident", dict(trident_sam="sam_vitb99"), "unknown VFM 'sam_vitb99'"),
        ("trident", dict(encoder_vfm="sam_vitb"), "needs DINO"),
        ("trident", dict(encoder_vfm="none"), "needs a VFM"),
    ],
)
def test_bad_fields_give_one_line_config_errors(preset, overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        build_config(preset, **overrides)
    assert "\n" not in str(err.value)


def test_windows_not_tiled_by_the_patches_fail_with_one_line():
    with pytest.raises(ConfigError, match="multiples of its patch 16") as err:
        _segmentor(long_side=None, crop=200, stride=100).predict(_image())
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="patch 16 of encoder_vfm 'tiny_dino_b16'") as err:  # 140 = 10 x 14, not x 16
        _segmentor(backbone="tiny-l14", long_side=None, crop=140, stride=70).predict(_image(150, 200))
    assert "\n" not in str(err.value)


def test_no_windows_through_encode():
    seg = _segmentor()
    with pytest.raises(ConfigError, match="whole images"):
        seg.encoder.encode(seg.encoder_context, torch.zeros(1, 3, 64, 64))


def test_other_presets_ignore_the_trident_fields():
    assert build_config("segearth-ov", trident_gamma=-1.0).trident_gamma == -1.0  # checked only for Trident


def test_encode_image_makes_no_host_reads(monkeypatch):
    """As tests/test_no_host_reads.py for the windowed presets: the whole-image features read nothing back."""
    seg = _segmentor(window_batch=4, long_side=None)
    image = _image()
    expected = seg.predict(image).labels
    run = seg._encode_image

    def guarded(*args, **kwargs):
        with monkeypatch.context() as m:
            for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__"):
                m.setattr(torch.Tensor, name, lambda *a, _n=name, **k: pytest.fail(f"host read {_n} in encode_image"))
            return run(*args, **kwargs)

    monkeypatch.setattr(seg, "_encode_image", guarded)
    assert np.array_equal(seg.predict(image).labels, expected)


# ---------------------------------------------------------------- parity with the authors' code


@pytest.mark.parametrize("key", ["potsdam", "vaihingen", "openearthmap"])
def test_parity_with_the_authors_code(key):
    """Golden outputs of their trident.py (unmodified; mmseg stubbed, fp32 on CPU, DINO's own ViT for torch.hub, their
    own _build_sam at the tiny size) on the tiny weights, 224 windows at stride 112 on 448² images; β = 1.0 there."""
    check_weights("trident")
    golden = load_golden("trident")
    image = processed_image(golden, key, 448)
    classes = [str(c) for c in golden[f"{key}/classes"]]
    config = build_config(
        "trident", backbone="tiny-b16", pretrained="none", device="cpu", precision="fp32", long_side=None,
        **settings(golden),
    )  # fmt: skip
    assert_parity(Segmentor(config, classes), golden, key, image)
