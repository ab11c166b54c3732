"""The switches of the decisions register's open choices, each on a hand-checkable case (decisions D2, D3, D7, D9,
D19, D20, D28-D31), and each running end to end in the segmentor."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError
from alignclip.models.clip import resample_pos_embed
from alignclip.models.templates import REMOTE_SENSING_TEMPLATES
from alignclip.models.vfm import create_vfm
from alignclip.ops.cce import product_affinity, propagate_within_clusters
from alignclip.ops.kmeans import kmeans
from alignclip.ops.sga import self_guided_alignment
from alignclip.pipeline.config import build_config
from alignclip.pipeline.segmentor import Segmentor

CLASSES = ["background", "building,roof", "road", "water"]


def _image(h=96, w=96, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _seg(preset="alignclip-d", **over):
    over.setdefault("long_side", 96)
    return Segmentor(build_config(preset, smoke=True, **over), CLASSES)


# ------------------------------------------------------------------------------------------ SGA (D7)
def test_raw_prototypes_follow_algorithm_1():
    patches = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1
    text = torch.tensor([[1.0, 0.0]])  # most similar patch (cosine 0.6 vs 0): the first
    norm = self_guided_alignment(patches, text, alpha=0.5)
    raw = self_guided_alignment(patches, text, alpha=0.5, normalize_prototypes=False)
    # normalised: 0.5 (1, 0) + 0.5 (0.6, 0.8) = (0.8, 0.4) -> /|.|;  raw: 0.5 (1, 0) + 0.5 (3, 4) = (2, 2) -> /|.|
    torch.testing.assert_close(norm, torch.tensor([[0.8, 0.4]]) / math.hypot(0.8, 0.4))
    torch.testing.assert_close(raw, torch.tensor([[1.0, 1.0]]) / math.sqrt(2.0))


# ------------------------------------------------------------------------------------- CCE (D2, D1)
def test_product_affinity_is_the_raw_feature_product():
    feats = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    torch.testing.assert_close(product_affinity(feats), torch.tensor([[5.0, 1.0], [1.0, 10.0]]))


def test_power_propagation_concentrates_on_the_strongest_neighbour():
    affinity = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    ids = torch.tensor([0, 0])
    logits = torch.tensor([[10.0], [0.0]])
    # power 1: rows normalised -> [1/4, 3/4], [1/2, 1/2];  power 2: [1, 9] / 10, [4, 4] / 8
    torch.testing.assert_close(propagate_within_clusters(affinity, ids, logits), torch.tensor([[2.5], [5.0]]))
    torch.testing.assert_close(
        propagate_within_clusters(affinity, ids, logits, power=2.0), torch.tensor([[1.0], [5.0]])
    )
    with pytest.raises(ConfigError, match="affinity_power"):
        propagate_within_clusters(affinity, ids, logits, power=0.0)


def test_signed_product_rows_are_normalised_by_their_sums():
    affinity = torch.tensor([[4.0, -1.0], [-1.0, 2.0]])
    ids = torch.tensor([0, 0])
    logits = torch.tensor([[3.0], [6.0]])
    # row 0: (4 * 3 - 1 * 6) / 3 = 2;  row 1: (-1 * 3 + 2 * 6) / 1 = 9
    torch.testing.assert_close(propagate_within_clusters(affinity, ids, logits), torch.tensor([[2.0], [9.0]]))


# --------------------------------------------------------------------------------- K-Means (D3, D19)
def _blobs():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.0, 5.0]])
    return torch.cat([torch.randn(20, 2) * 0.1 + c for c in centres])[None]  # [1, 60, 2]


@pytest.mark.parametrize("seed", range(5))
def test_kmeanspp_seeds_one_centroid_per_separated_blob(seed):
    ids, _ = kmeans(_blobs(), 3, n_iter=0, n_init=1, seed=seed, init="kmeans++")
    assert torch.bincount(ids[0], minlength=3).tolist() == [20, 20, 20]  # before any Lloyd step


def test_kmeanspp_is_seeded_and_independent_of_the_batch():
    x = _blobs()
    a, _ = kmeans(x, 3, n_iter=0, n_init=2, seed=3, init="kmeans++")
    b, _ = kmeans(torch.cat([x, x.flip(1)]), 3, n_iter=0, n_init=2, seed=3, init="kmeans++")
    assert torch.equal(a[0], b[0])
    with pytest.raises(ConfigError, match="kmeans init"):
        kmeans(x, 3, init="forgy")


def test_raw_and_normalised_features_cluster_differently():
    points = torch.tensor([[[1.0, 0.0], [10.0, 0.0], [0.0, 1.0]]])
    by_norm, _ = kmeans(F.normalize(points, dim=-1), 2, n_init=1, seed=0, init="kmeans++")
    by_raw, _ = kmeans(points, 2, n_init=1, seed=0, init="kmeans++")
    assert by_norm[0, 0] == by_norm[0, 1] != by_norm[0, 2]  # same direction together
    assert by_raw[0, 0] == by_raw[0, 2] != by_raw[0, 1]  # the long vector alone


# -------------------------------------------------------------------------------------- SAM (D20)
def test_sam_features_after_the_neck():
    vfm = create_vfm("tiny_sam", "none")
    x = torch.randn(2, 3, 64, 64)
    enc, attn = vfm(x)
    neck, attn_neck = vfm(x, "neck")
    assert enc.shape == (2, 4, 4, 64) and neck.shape == (2, 4, 4, 32)  # tiny SAM: 64-d blocks, 32-d neck
    torch.testing.assert_close(attn, attn_neck)  # A is the encoder's attention either way
    with pytest.raises(ConfigError, match="needs a SAM model"):
        create_vfm("tiny", "none")(x, "neck")


# ------------------------------------------------------------------------------- CLS term (D9)
def test_cls_term_on_s_up_only_is_lambda_times_one_minus_beta():
    img = _image(seed=3)
    beta = 0.4
    fused = _seg("alignclip-d", beta=beta, window_batch=1).predict(img).logits
    up_only = _seg("alignclip-d", beta=beta, cls_term_target="upsampled", window_batch=1).predict(img).logits
    none = _seg("alignclip-d", beta=beta, cls_token_lambda=0.0, window_batch=1).predict(img).logits
    # fused = L0 + λc, upsampled = L0 + (1 - β) λc  =>  fused - upsampled = β (fused - L0)
    torch.testing.assert_close(fused - up_only, beta * (fused - none), atol=1e-5, rtol=1e-4)
    assert (fused - none).abs().max() > 1e-3  # the term is not zero on the tiny model


# -------------------------------------------------------------------- position embeddings (D28)
def test_reference_position_interpolation_uses_the_scale_factor():
    ramp = torch.arange(14.0).view(1, 14).expand(14, 14)  # value = column index
    pe = torch.cat([torch.zeros(1, 1), ramp.reshape(-1, 1)])  # [197, 1]
    size = resample_pos_embed(pe, (7, 7), mode="size")[1:].reshape(7, 7)
    ref = resample_pos_embed(pe, (7, 7), mode="reference")[1:].reshape(7, 7)
    # "size": samples at (j + 0.5) * 2 - 0.5 -> 2.5, 4.5, ... exactly where the bicubic support is inside
    torch.testing.assert_close(size[3, 1:6], torch.tensor([2.5, 4.5, 6.5, 8.5, 10.5]))
    grid = ramp.reshape(1, 1, 14, 14)
    expected = F.interpolate(grid, scale_factor=(7.1 / 14, 7.1 / 14), mode="bicubic", align_corners=False)[0, 0]
    torch.testing.assert_close(ref, expected)
    assert (ref - size).abs().max() > 0.05  # other sample positions
    assert torch.equal(resample_pos_embed(pe, (14, 14), mode="reference"), pe)  # the trained grid is kept


def test_small_windows_take_the_interpolation_switch():
    img = _image(64, 64, seed=1)  # 64-px windows: a 4x4 grid, pos. embeddings interpolated
    a = _seg("segearth-ov", long_side=None, crop=64, stride=64).predict(img).logits
    b = _seg("segearth-ov", long_side=None, crop=64, stride=64, pos_embed_interp="size").predict(img).logits
    assert not torch.allclose(a, b)


# ------------------------------------------------------------------------ NACLIP and templates
def test_naclip_defaults_to_the_reference_std():
    assert build_config("naclip").naclip_std == 1.0  # SegEarth-OV's code runs NACLIP with std 1 (Table 2)
    with pytest.raises(ConfigError, match="naclip_std"):
        build_config("naclip", naclip_std=0.0)


def test_the_template_quoted_in_section_3_1_is_in_the_list():
    assert "a satellite image of {}." in REMOTE_SENSING_TEMPLATES and len(REMOTE_SENSING_TEMPLATES) == 80
    assert len(set(REMOTE_SENSING_TEMPLATES)) == 80


# --------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize(
    "over",
    [
        dict(sga_prototype_norm=False),
        dict(affinity="product"),
        dict(affinity_power=8.0),
        dict(kmeans_seeding="kmeans++"),
        dict(kmeans_features="raw"),
        dict(cls_term_target="upsampled"),
        dict(pos_embed_interp="size"),
        dict(sga_prototype_norm=False, sga_scope="image"),
    ],
)
def test_every_switch_runs_and_changes_the_logits(over):
    img = _image(seed=7)
    base = _seg().predict(img).logits
    alt = _seg(**over).predict(img)
    assert alt.labels.shape == (96, 96) and torch.isfinite(alt.logits).all()
    if "kmeans_features" not in over:  # the tiny VFM's features have near-equal norms: same clusters
        assert not torch.allclose(base, alt.logits)


def test_sam_neck_switch_runs_end_to_end():
    labels = _seg("alignclip-s", vfm="tiny_sam", vfm_features="neck").segment(_image(64, 80))
    assert labels.shape == (64, 80)
    with pytest.raises(ConfigError, match="vfm_features"):
        build_config("alignclip-d", vfm_features="decoder")


@pytest.mark.parametrize("host", ["gem", "sc-clip", "resclip", "proxyclip", "cass"])
def test_sga_plugged_into_another_method_takes_the_papers_plugin_alpha(host):
    """Decision D32: PRESET+sga uses α = 0.1 (A.5) for every host, Table 6's α only for SegEarth-OV + SGA."""
    assert build_config(f"{host}+sga", dataset="loveda").alpha == 0.1
    assert build_config(f"{host}+sga", dataset="loveda", alpha=0.4).alpha == 0.4  # an explicit field wins
    assert build_config("segearth-ov+sga", dataset="loveda").alpha == 0.7  # Table 6, AlignCLIP-D on LoveDA
    assert not build_config(host).sga
