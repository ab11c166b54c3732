"""SC-CLIP (alignclip.methods.sc_clip): each step on a hand-checkable case, the preset end to end on the tiny models,
bad field values, and parity with the authors' code (github:SuleBai/SC-CLIP @ 0417ba9, golden outputs of their code
run unmodified on the shared tiny weights; tests/data/parity/sc-clip/README.md)."""

import math

import numpy as np
import pytest
import torch
from parity import assert_parity, check_weights, classes, image_keys, load_golden, processed_image, settings

from alignclip.errors import ConfigError
from alignclip.methods import sc_clip
from alignclip.ops.sc_clip import (
    aggregate,
    anomaly_mask,
    feature_similarity,
    interpolate_anomalies,
    lof_scores,
    sc_attention,
)
from alignclip.pipeline.config import build_config
from alignclip.pipeline.segmentor import Segmentor

CLASSES = ["background", "building,roof", "road", "water"]


def _image(h=96, w=128, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _seg(preset="sc-clip", **over):
    over.setdefault("long_side", None)
    return Segmentor(build_config(preset, smoke=True, **over), CLASSES)


# ------------------------------------------------------------------------------------------ (a) the steps
def test_lof_on_four_points():
    # 1-D points 0, 1, 3, 10; squared distances; k = 1: nearest 1, 0, 1, 3 at 1, 1, 4, 49 = the k-distances
    # lrd = 1 / d_k = 1, 1, 1/4, 1/49; LOF = lrd(neighbour) / lrd = 1, 1, 4, 49/4
    x = torch.tensor([[[0.0], [1.0], [3.0], [10.0]]])
    torch.testing.assert_close(lof_scores(x, n_neighbors=1), torch.tensor([[1.0, 1.0, 4.0, 12.25]]))
    # k = 2: the authors' reach(i, j) = max(d(i, j), d_k(i)) = d_k(i) = 9, 4, 9, 81; lrd = 2 / d_k
    # LOF(0) = mean(lrd(1), lrd(3)) / lrd(0) = (1/2 + 2/9) / 2 / (2/9) = 1.625
    torch.testing.assert_close(lof_scores(x, n_neighbors=2)[0, 0], torch.tensor(1.625))
    # k larger than N - 1 is clipped
    torch.testing.assert_close(lof_scores(x, n_neighbors=30), lof_scores(x, n_neighbors=3))


def test_anomalies_above_the_quantile():
    # 0.75 quantile of 1, 1, 4, 12.25: 4 + 0.25 * 8.25 = 6.0625 -> only the last
    scores = torch.tensor([[1.0, 12.25, 4.0, 1.0], [4.0, 1.0, 1.0, 12.25]])
    assert anomaly_mask(scores, 0.25).tolist() == [[False, True, False, False], [False, False, False, True]]


def test_anomalies_become_their_valid_neighbours_mean():
    fmap = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 6.0], [7.0, 8.0, 9.0]]).view(1, 1, 3, 3)
    bad = torch.zeros(1, 3, 3, dtype=torch.bool)
    bad[0, 1, 1] = bad[0, 0, 0] = True
    out = interpolate_anomalies(fmap.expand(1, 2, 3, 3), bad)
    expected = fmap.clone()
    expected[0, 0, 1, 1] = (2 + 3 + 4 + 6 + 7 + 8 + 9) / 7  # the other anomaly (corner) is not a valid neighbour
    expected[0, 0, 0, 0] = (2 + 4) / 2  # its neighbours inside the grid, the centre excluded
    torch.testing.assert_close(out, expected.expand(1, 2, 3, 3))
    # an anomaly without a valid neighbour is kept
    one = torch.tensor([[[[5.0]]]])
    torch.testing.assert_close(interpolate_anomalies(one, torch.ones(1, 1, 1, dtype=torch.bool)), one)


def test_similarity_and_thresholded_aggregation():
    tokens = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]])
    r = 1 / math.sqrt(2)
    s = feature_similarity(tokens)
    torch.testing.assert_close(s, torch.tensor([[[1.0, r, 0.0], [r, 1.0, r], [0.0, r, 1.0]]]))
    x = torch.tensor([[[1.0], [2.0], [3.0]]])
    # threshold 0.75 keeps the diagonal only: each token itself (/ (1 + 1e-6))
    torch.testing.assert_close(aggregate(x, s, 0.75), x / (1 + 1e-6))
    # threshold 0.5 keeps 1/sqrt(2): row 0 = (1 + 2r) / (1 + r), row 1 = (r + 2 + 3r) / (1 + 2r)
    out = aggregate(x, s, 0.5)
    torch.testing.assert_close(out[0, :2, 0], torch.tensor([(1 + 2 * r) / (1 + r), (2 + 4 * r) / (1 + 2 * r)]))


def test_last_block_attention_on_two_tokens():
    k = torch.tensor([1.0, 0.0]).view(1, 1, 2, 1)
    v = torch.tensor([1.0, 3.0]).view(1, 1, 2, 1)
    s = torch.eye(2).unsqueeze(0)  # mean 0.5: 3 (S - 0.5) = ±1.5, the negative entries -inf -> softmax = I
    e = math.e
    # k kᵀ / sqrt(1) = [[1, 0], [0, 0]]: row 0 softmax (e, 1) / (e + 1), row 1 (1/2, 1/2)
    row0 = (1 + (e * 1 + 3) / (e + 1)) / 2
    row1 = (3 + 2) / 2
    torch.testing.assert_close(sc_attention(k, v, s, 3.0), torch.tensor([row0, row1]).view(1, 1, 2, 1))
    # two heads share S; a batch of two windows centres each S on its own mean
    s2 = torch.stack([s[0], torch.tensor([[1.0, 0.8], [0.8, 1.0]])])
    k2, v2 = k.expand(2, 2, 2, 1), v.expand(2, 2, 2, 1)
    out = sc_attention(k2, v2, s2, 3.0)
    torch.testing.assert_close(out[0, 1], out[0, 0])
    # window 2: S - 0.9 = ±0.1 -> softmax over (0.3, -inf) = I again
    torch.testing.assert_close(out[1], out[0])


# ------------------------------------------------------------------------------------------ (b) end to end
def test_preset_end_to_end_on_the_tiny_models():
    seg = _seg()
    assert seg.config.encoder == "sc_clip" and not seg.config.sga and seg.config.templates == "openai"
    pred = seg.predict(_image())
    assert pred.labels.shape == (96, 128) and torch.isfinite(pred.logits).all()
    sga = _seg("sc-clip+sga")
    assert sga.config.sga and sga.config.alpha == 0.1
    pred_sga = sga.predict(_image())
    assert not torch.allclose(pred_sga.logits, pred.logits)


def test_sga_source_switch():
    base = _seg("sc-clip+sga").predict(_image()).logits
    for source in ("last", "multi"):
        other = _seg("sc-clip+sga", sc_clip_sga_source=source).predict(_image()).logits
        assert not torch.allclose(other, base)
    # without SGA the source does not matter
    torch.testing.assert_close(
        _seg(sc_clip_sga_source="multi").predict(_image()).logits, _seg().predict(_image()).logits
    )


def test_batched_windows_equal_one_at_a_time_and_twelve_layers():
    seg = Segmentor(build_config("sc-clip", smoke=True, backbone="tiny-b16", sc_clip_sga_source="last"), CLASSES)
    g = torch.Generator().manual_seed(0)
    windows = torch.randn(2, 3, 96, 128, generator=g)  # a non-square 6 x 8 grid (48 patches > k + 1)
    with torch.no_grad():
        patch, cls, src = sc_clip.encode(seg.encoder_context, windows)
        one = [sc_clip.encode(seg.encoder_context, windows[i : i + 1]) for i in range(2)]
    assert patch.shape == (2, 64, 6, 8) and cls.shape == (2, 64) and src.shape == patch.shape
    torch.testing.assert_close(patch, torch.cat([o[0] for o in one]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(src, torch.cat([o[2] for o in one]), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ (c) bad input
@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("sc_clip_sga_source", "cls", "choose one of fused, last, multi"),
        ("sc_clip_lof_neighbors", 0, "must be >= 1"),
        ("sc_clip_lof_contamination", 1.5, "outside (0, 1)"),
        ("sc_clip_pre_adjust_idx", -1, "block index >= 0"),
        ("sc_clip_multi_end_idx", 3, "must exceed sc_clip_multi_start_idx"),
        ("sc_clip_attn_temp", 0.0, "must be > 0"),
        ("sc_clip_beta", 2.0, "in [-1, 1]"),
        ("sc_clip_res_cls", "high", "takes a number"),
    ],
)
def test_bad_fields_name_the_fix(field, value, words):
    with pytest.raises(ConfigError) as err:
        build_config("sc-clip", smoke=True, **{field: value})
    message = str(err.value)
    assert words in message and field in message and "\n" not in message


# ------------------------------------------------------------------------------------------ (d) parity
def test_parity_with_the_authors_code():
    """Golden outputs of the authors' SCCLIPForSegmentation (their code unmodified; mmseg/mmengine stubbed, their
    fp16 weight cast skipped so the fp32 tiny weights are used as given), on three real fixtures."""
    check_weights("sc-clip")
    golden = load_golden("sc-clip")
    config = build_config(
        "sc-clip",
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
