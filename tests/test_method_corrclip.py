"""CorrCLIP (alignclip.methods.corrclip, alignclip.ops.corrclip, alignclip.models.masks): the ops on hand-checkable
cases, the mask generators, the preset end to end on tiny models, bad inputs, and parity with the authors' code
(zdk258/CorrCLIP, commit 103bc18, CorrCLIPv1) run on the shared tiny random weights and fixed region masks
(tests/data/parity/corrclip/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from parity import assert_parity, check_weights, load_golden, processed_image, settings
from test_no_host_reads import _guard

from alignclip.errors import ConfigError, WeightsNotFoundError
from alignclip.methods import METHODS
from alignclip.methods.corrclip import window_labels
from alignclip.models.masks import (
    Sam2MaskGenerator,
    TinyMaskGenerator,
    cached_labels,
    paint_masks,
    to_uint8,
    uint8_labels,
)
from alignclip.ops.corrclip import (
    apply_vote,
    correlation_weights,
    dense_labels,
    majority_vote,
    merge_regions,
    nearest_index,
    region_token_mask,
    region_tokens_to_patches,
    scope_mask,
    spatial_layer_count,
    spatial_range,
    vote_counts,
)
from alignclip.ops.windows import extract_windows, window_boxes
from alignclip.pipeline.config import build_config
from alignclip.pipeline.segmentor import Segmentor, build_segmentor

CLASSES = ["road", "building,roof", "tree"]

# ---------------------------------------------------------------- ops on hand-checkable cases


def test_dense_labels_rank_each_windows_labels_from_the_smallest():
    labels = torch.tensor([[7, 3, 3, 10000, 7], [5, 5, 5, 5, 5]])
    assert dense_labels(labels, 8).tolist() == [[1, 0, 0, 2, 1], [0, 0, 0, 0, 0]]
    assert dense_labels(labels, 2).tolist() == [[1, 0, 0, 1, 1], [0, 0, 0, 0, 0]]  # beyond the slots: the last


def test_merge_regions_joins_chains_within_eps_and_leaves_region_0():
    # regions 1, 2, 3 with unit mean features at 0°, 30°, 60° (cos 0.866 between neighbours, 0.5 across), 4 at 180°;
    # region 0 (first) has the same feature as region 1 but is never merged
    angle = torch.tensor([0.0, 0.0, 30.0, 60.0, 180.0]).deg2rad()
    unit = torch.stack([angle.cos(), angle.sin()], dim=1)
    ids = torch.tensor([[0, 1, 2, 3, 4]])
    merged = merge_regions(ids, unit[None], slots=6, eps=0.2)  # 1 − 0.866 = 0.134 ≤ 0.2: 1-2, 2-3 chained
    assert merged.tolist() == [[0, 1, 1, 1, 4]]
    assert merge_regions(ids, unit[None], slots=6, eps=0.1).tolist() == [[0, 1, 2, 3, 4]]


def test_merge_regions_uses_region_means_and_distance_from_the_max_similarity():
    # region 1 = patches at ±53° (cosine 0.6 to region 2's), its mean (0.6, 0) points along region 2's (1, 0):
    # distance max(S) − S = 0 between the two regions' means, so they merge even at a tiny eps
    f = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [1.0, 0.0]])
    ids = torch.tensor([[0, 1, 1, 2]])
    assert merge_regions(ids, f[None], slots=4, eps=1e-6).tolist() == [[0, 1, 1, 1]]
    assert merge_regions(ids[:, [0, 1, 3]], f[None, [0, 1, 3]], slots=4, eps=0.3).tolist() == [[0, 1, 2]]  # 1 − 0.6


def test_scope_mask_same_region_or_first_region_above_the_mean():
    ids = torch.tensor([[0, 1, 1, 2]])
    sim = torch.tensor([[[1.0, 0.9, 0.0, 0.1], [0.9, 1.0, 0.2, 0.0], [0.0, 0.2, 1.0, 0.0], [0.1, 0.0, 0.0, 1.0]]])
    # mean = (4 + 2·(0.9 + 0.1 + 0.2)) / 16 = 0.4
    expected = torch.tensor(
        [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool
    )  # (0,1): first & 0.9 > 0.4; (1,2): same region 1; (2,1) likewise; (0,3): 0.1 < 0.4; (3,3): region 2
    assert scope_mask(ids, sim)[0].tolist() == expected.tolist()


def test_correlation_weights_softmax_with_tau_over_the_allowed_pairs():
    sim = torch.tensor([[[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    allowed = torch.tensor([[[1, 1, 0], [1, 1, 0], [0, 0, 1]]], dtype=torch.bool)
    w = correlation_weights(sim, allowed, tau=2.0)  # rows 1-2: e^2 : e^1
    e = torch.e
    torch.testing.assert_close(w[0, 0], torch.tensor([e / (e + 1), 1 / (e + 1), 0.0]))
    torch.testing.assert_close(w[0, 2], torch.tensor([0.0, 0.0, 1.0]))


def test_region_tokens_attend_to_cls_and_their_region_and_return_to_their_patches():
    ids = torch.tensor([[0, 2, 2]])
    mask = region_token_mask(ids, 3)
    assert mask[0].int().tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 0, 1, 1]]  # an empty slot sees the CLS only
    tokens = torch.arange(6.0).view(1, 3, 2)
    assert region_tokens_to_patches(tokens, ids)[0].tolist() == [[0.0, 1.0], [4.0, 5.0], [4.0, 5.0]]


def test_majority_vote_inside_regions_except_the_smallest_label():
    pred = torch.tensor([[0, 1, 1], [2, 2, 1]])
    labels = torch.tensor([[0, 5, 5], [0, 5, 9]])  # region 5: classes 1, 1, 2 → 1; region 9: one pixel; 0: kept
    assert majority_vote(pred, labels, 3).tolist() == [[0, 1, 1], [2, 1, 1]]
    tie = majority_vote(torch.tensor([[2, 1]]), torch.tensor([[3, 4]]), 3)  # no label 0: label 3 is left alone
    assert tie.tolist() == [[2, 1]]


@pytest.mark.parametrize(("out", "src"), [(448, 448), (1000, 896), (7, 3), (300, 896), (896, 448), (5, 17)])
def test_nearest_index_is_f_interpolate_nearest(out, src):
    x = torch.arange(src, dtype=torch.float32).view(1, 1, src, 1)
    expected = F.interpolate(x, size=(out, 1), mode="nearest")[0, 0, :, 0].long()
    assert torch.equal(nearest_index(out, src), expected)


def test_majority_vote_over_strips_is_the_whole_maps():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (9, 7), generator=gen)
    labels = torch.randint(0, 5, (9, 7), generator=gen) * 3
    whole = majority_vote(pred, labels, 4)
    _, ids = torch.unique(labels, return_inverse=True)
    counts = vote_counts(pred[:4], ids[:4], 5, 4) + vote_counts(pred[4:], ids[4:], 5, 4)
    assert torch.equal(torch.cat([apply_vote(pred[:4], ids[:4], counts), apply_vote(pred[4:], ids[4:], counts)]), whole)


def test_spatial_branch_layers_as_their_rule():
    assert [spatial_layer_count(d) for d in (12, 24, 32, 6)] == [5, 12, 28, 2]
    assert spatial_range(12, 5) == (5, 9)  # 0-based blocks 5..9: 1-based 6-10
    assert spatial_range(2, spatial_layer_count(2)) == (0, 0)  # the 2-block tiny CLIP: its first block


# ---------------------------------------------------------------- mask generators


def test_paint_masks_larger_masks_drawn_last():
    small = torch.zeros(3, 3, dtype=torch.bool)
    small[0, 0] = True
    big = torch.zeros(3, 3, dtype=torch.bool)
    big[:2, :2] = True
    labels = paint_masks(torch.stack([big, small]))  # sorted by area: small = 1, big = 2 drawn over it
    assert labels.tolist() == [[2, 2, 0], [2, 2, 0], [0, 0, 0]]
    assert paint_masks(torch.zeros(0, 2, 2, dtype=torch.bool)).tolist() == [[0, 0], [0, 0]]


def test_tiny_generator_cells_and_levels_and_normalisation_round_trip():
    gen = TinyMaskGenerator(grid=2, levels=3)
    pixels = torch.zeros(1, 3, 4, 4)
    pixels[..., :, 2:] = 200.0  # right half bright (level 2), left half dark (level 0: unsegmented)
    labels = gen.from_pixels(pixels)[0]
    # cell = row * 2 + col of the 2x2 grid; label = 1 + cell * 2 + (level - 1)
    assert labels.tolist() == [[0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 8, 8], [0, 0, 8, 8]]
    mean, std = (0.48, 0.45, 0.40), (0.26, 0.26, 0.27)
    x = (pixels / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(to_uint8(x, mean, std), pixels)
    image = pixels[0].permute(1, 2, 0).to(torch.uint8).numpy()
    assert torch.equal(uint8_labels(gen, image), labels)


def test_sam2_generator_absent_package_or_checkpoint_is_one_line(tmp_path):
    import importlib.util

    if importlib.util.find_spec("sam2") is None:
        with pytest.raises(ConfigError, match="pip install sam2"):
            Sam2MaskGenerator("configs/sam2/sam2_hiera_l.yaml", str(tmp_path / "sam2_hiera_large.pt"))
    else:
        with pytest.raises(WeightsNotFoundError, match="sam2_hiera_large.pt"):
            Sam2MaskGenerator("configs/sam2/sam2_hiera_l.yaml", str(tmp_path / "sam2_hiera_large.pt"))


def test_sam2_generator_with_the_package_on_random_weights(tmp_path):
    """Only where the sam2 package is installed (not in the project's environment): SAM 2's Hiera-T with random
    weights through our wrapper gives a label map of the image's size (random SAM 2 finds few or no masks)."""
    pytest.importorskip("sam2")
    from sam2.build_sam import build_sam2

    config = "configs/sam2/sam2_hiera_t.yaml"
    torch.save({"model": build_sam2(config, None, device="cpu").state_dict()}, tmp_path / "sam2_t.pt")
    gen = Sam2MaskGenerator(config, str(tmp_path / "sam2_t.pt"), "cpu", pred_iou_thresh=0.0, stability_score_thresh=0.0)
    image = np.random.default_rng(0).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    labels = uint8_labels(gen, image)
    assert labels.shape == (64, 96) and labels.dtype == torch.int64 and int(labels.min()) >= 0


def test_cached_labels_round_trip_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNCLIP_CACHE_DIR", str(tmp_path))
    calls = []

    class Counting(TinyMaskGenerator):
        cacheable = True

        def __call__(self, images, mean, std):
            calls.append(1)
            return super().__call__(images, mean, std)

    gen = Counting()
    image = torch.rand(1, 3, 8, 8)
    first = cached_labels(gen, image, (0, 0, 0), (1, 1, 1))
    again = cached_labels(gen, image, (0, 0, 0), (1, 1, 1))
    assert torch.equal(first, again) and len(calls) == 1
    assert len(list((tmp_path / "masks").glob("*.npy"))) == 1
    cached_labels(gen, image, (0, 0, 0), (1, 1, 1), use_cache=False)
    assert len(calls) == 2


# ---------------------------------------------------------------- the preset end to end


def test_preset_is_registered_before_segearth_ov_with_the_protocol():
    names = list(METHODS)
    assert names.index("corrclip") + 1 == names.index("segearth-ov")
    m = METHODS["corrclip"]
    assert (m.paper_name, m.reference, m.plugin_alpha) == ("CorrCLIP", "Zhang et al., ICCV 2025", 0.1)
    cfg = build_config("corrclip")
    assert (cfg.encoder, cfg.encoder_vfm, cfg.corrclip_mask_generator, cfg.corrclip_mask_scope) == (
        "corrclip", "dino_vitb8", "sam2", "image",
    )  # fmt: skip
    smoke = build_config("corrclip", smoke=True)
    assert (smoke.corrclip_mask_generator, smoke.encoder_vfm) == ("tiny", "tiny_dino_b8")


@pytest.mark.parametrize("preset", ["corrclip", "corrclip+sga"])
@pytest.mark.parametrize("scope", ["image", "window"])
def test_preset_runs_end_to_end_without_host_reads(preset, scope, monkeypatch):
    seg = build_segmentor(preset, classes=CLASSES, smoke=True, window_batch=4, corrclip_mask_scope=scope)
    image = np.random.default_rng(0).integers(0, 256, size=(120, 170, 3), dtype=np.uint8)
    expected = seg.predict(image)
    assert expected.labels.shape == (120, 170) and torch.isfinite(expected.logits).all()
    _guard(seg, monkeypatch)
    assert np.array_equal(seg.predict(image).labels, expected.labels)


def test_image_scope_windows_take_the_image_masks_at_their_place():
    seg = build_segmentor("corrclip", classes=CLASSES, smoke=True, window_batch=3, corrclip_map_correction=False)
    image = np.random.default_rng(1).integers(0, 256, size=(96, 160, 3), dtype=np.uint8)
    image[:, 80:] //= 4  # not a translation-invariant image
    seg.predict(image)
    labels = seg.encoder_context.corrclip_image["labels"]
    region = seg._normaliser(seg._resized(image))
    h, w = labels.shape
    boxes = window_boxes(h, w, seg.config.crop, seg.config.stride)
    windows = extract_windows(region(0, h, 0, w), boxes)
    got = window_labels(seg.encoder_context, windows, boxes)
    assert torch.equal(got, extract_windows(labels[None], boxes)[:, 0])
    own = window_labels(seg.encoder_context, windows)  # no boxes: the windows' own masks
    assert own.shape == got.shape


def test_map_correction_makes_regions_uniform():
    image = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    seg = build_segmentor("corrclip", classes=CLASSES, smoke=True, long_side=None)
    labels = seg.predict(image).labels
    regions = seg.encoder_context.corrclip_image["labels"].numpy()
    for r in np.unique(regions)[1:]:
        assert len(np.unique(labels[regions == r])) == 1
    off = build_segmentor("corrclip", classes=CLASSES, smoke=True, long_side=None, corrclip_map_correction=False)
    raw = off.predict(image).labels
    assert np.array_equal(labels[regions == regions.min()], raw[regions == regions.min()])


def test_map_correction_at_the_input_size_uses_the_masks_resized_nearest():
    image = np.random.default_rng(3).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    seg = build_segmentor("corrclip", classes=CLASSES, smoke=True, long_side=112)  # processed at 80x112
    labels = seg.predict(image).labels
    regions = seg.encoder_context.corrclip_image["labels"]
    assert tuple(regions.shape) == (80, 112)
    small = F.interpolate(regions[None, None].float(), size=(50, 70), mode="nearest")[0, 0].long().numpy()
    for r in np.unique(small)[1:]:
        assert len(np.unique(labels[small == r])) == 1


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("corrclip_mask_generator", "sam3", "corrclip_mask_generator"),
        ("corrclip_mask_scope", "tile", "corrclip_mask_scope"),
        ("corrclip_max_regions", 1, ">= 2"),
        ("corrclip_tau", 0.0, "TAU"),
        ("corrclip_merge_eps", float("nan"), "EPS"),
        ("corrclip_semantic_weight", float("inf"), "BETA"),
        ("corrclip_spatial_layers", 0, "None"),
        ("corrclip_points_per_side", 16, "corrclip_max_regions >= 258"),
    ],
)
def test_bad_fields_are_one_line_config_errors(field, value, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_config("corrclip", **{field: value})
    assert "\n" not in str(info.value)


def test_sam2_without_the_package_or_weights_fails_in_one_line(tmp_path):
    """When the segmentor is built (Encoder.prepare), before any image: the missing package, or the missing
    checkpoint file when the package is there."""
    with pytest.raises((ConfigError, WeightsNotFoundError)) as info:
        build_segmentor(
            "corrclip", classes=CLASSES, smoke=True, corrclip_mask_generator="sam2",
            corrclip_sam2_checkpoint=str(tmp_path / "sam2_hiera_large.pt"),
        )  # fmt: skip
    assert "\n" not in str(info.value) and "sam2" in str(info.value)


# ---------------------------------------------------------------- parity with the authors' code


@pytest.mark.parametrize("key", ["potsdam", "vaihingen", "openearthmap"])
def test_parity_with_the_authors_code(key):
    """Golden outputs of their corrclip_segmentor.py and vendored open_clip (unmodified; mmseg stubbed, fp32 on CPU,
    DINO's own ViT for torch.hub), 224 windows at stride 112 on 448² images, both fed the same region masks (the
    tiny stand-in generator's, stored in golden.npz: SAM 2 cannot run tiny)."""
    check_weights("corrclip")
    golden = load_golden("corrclip")
    image = processed_image(golden, key, 448)
    assert torch.equal(
        uint8_labels(TinyMaskGenerator(), image), torch.from_numpy(golden[f"{key}/regions"].astype(np.int64))
    )  # our generator gives the stored masks
    classes = [str(c) for c in golden[f"{key}/classes"]]
    config = build_config(
        "corrclip", backbone="tiny-b16", pretrained="none", device="cpu", precision="fp32", long_side=None,
        **settings(golden),
    )  # fmt: skip
    assert_parity(Segmentor(config, classes), golden, key, image)


def test_a_missing_sam2_stops_when_the_segmentor_is_built_not_at_the_first_image(monkeypatch):
    """SAM 2's generator is built with the segmentor (Encoder.prepare): a missing package or checkpoint is one line
    before any image is read (the rehearsal found it failing only at the first window)."""
    import importlib.util

    from alignclip.errors import AlignCLIPError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sam2" else real(name, *a))
    with pytest.raises(AlignCLIPError, match="sam2"):
        build_segmentor("corrclip", classes=CLASSES, smoke=True, corrclip_mask_generator="sam2")


def test_random_weights_and_the_rehearsal_use_the_mask_stand_in():
    from alignclip.evaluation.bench import RANDOM_WEIGHTS
    from alignclip.study.context import REHEARSAL_WEIGHTS

    assert RANDOM_WEIGHTS["corrclip_mask_generator"] == "tiny" == REHEARSAL_WEIGHTS["corrclip_mask_generator"]
