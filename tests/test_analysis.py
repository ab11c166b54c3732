"""Feature analysis (Table 1, Fig. 1c / Fig. 5): hand-checkable similarity statistics and the feature collector."""

import math

import matplotlib
import numpy as np
import pytest
import torch

from alignclip.data import generate_fake_dataset, load_manifest
from alignclip.errors import InputError
from alignclip.evaluation.features import (
    DomainFeatures,
    _cap_per_class,
    _image_features,
    _owned,
    _patch_majority,
    collect_class_features,
)
from alignclip.models.clip import create_clip
from alignclip.pipeline.config import build_config
from alignclip.study.analysis import (
    NATURAL_DOMAIN,
    RS_DOMAIN,
    _triu_pairs,
    bootstrap_domain_gap,
    check_compactness,
    embed_2d,
    intra_class_similarity,
    table1_comparison,
)
from alignclip.study.analysis_figures import (
    _pick_classes,
    embed_domains,
    plot_embeddings,
    plot_similarity_distributions,
    separability,
)

matplotlib.use("Agg")


def test_intra_class_similarity_three_vectors_by_hand():
    # a=(1,0), b=(0,1), c=(1,1)/sqrt2 (unnormalised here): cosines ab=0, ac=bc=1/sqrt2; d is alone in its class
    feats = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [5.0, 5.0]])
    res = intra_class_similarity(feats, np.array([0, 0, 0, 1]))
    h = 1 / math.sqrt(2)
    assert res["n_pairs"] == 3
    assert res["mean"] == pytest.approx(2 * h / 3)
    assert res["std"] == pytest.approx(math.sqrt(((0 - 2 * h / 3) ** 2 + 2 * (h - 2 * h / 3) ** 2) / 3))
    assert res["std"] == pytest.approx(1 / 3)
    assert sorted(res["values"].tolist()) == pytest.approx([0.0, h, h], abs=1e-6)
    assert res["per_class"][0] == dict(mean=pytest.approx(2 * h / 3), n_pairs=3, n_patches=3)
    assert res["per_class"][1]["n_pairs"] == 0 and math.isnan(res["per_class"][1]["mean"])


def test_intra_class_similarity_pools_pairs_over_classes():
    # class "x": two identical vectors (1 pair, sim 1); class "y": three orthogonal ones (3 pairs, sim 0)
    feats = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    res = intra_class_similarity(feats, np.array(["x", "x", "y", "y", "y"]))
    assert res["n_pairs"] == 4
    assert res["mean"] == pytest.approx(0.25)  # pooled over pairs, not the mean of class means (0.5)
    assert res["std"] == pytest.approx(math.sqrt(0.25 * 0.75))


def test_pair_subset_is_seeded_and_distinct():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 8))
    full = intra_class_similarity(feats, np.zeros(40, int))
    sub = intra_class_similarity(feats, np.zeros(40, int), max_pairs_per_class=100, seed=3)
    again = intra_class_similarity(feats, np.zeros(40, int), max_pairs_per_class=100, seed=3)
    assert full["n_pairs"] == 780 and sub["n_pairs"] == 100
    np.testing.assert_array_equal(sub["values"], again["values"])
    assert np.isin(np.round(sub["values"], 5), np.round(full["values"], 5)).all()
    assert len(np.unique(np.round(sub["values"], 6))) == 100


@pytest.mark.parametrize("n", [2, 3, 7, 50, 301])
def test_triu_pairs_inverts_row_major_upper_triangle(n):
    i, j = np.triu_indices(n, 1)
    gi, gj = _triu_pairs(np.arange(n * (n - 1) // 2), n)
    np.testing.assert_array_equal(gi, i)
    np.testing.assert_array_equal(gj, j)


def test_patch_majority_and_owned_windows():
    lab = np.full((1, 4, 4), 255, dtype=np.uint8)
    lab[0, :2, :2] = [[1, 1], [1, 2]]  # patch 0: class 1 covers 3/4
    lab[0, :2, 2:] = 7  # patch 1: pure 7; patches 2, 3: ignore
    major, share = _patch_majority(lab, 2)
    np.testing.assert_array_equal(major, [1, 7, 255, 255])
    np.testing.assert_allclose(share, [0.75, 1.0, 1.0, 1.0])
    # a 300-row image, crop 224: windows start at 0 and 76; the second keeps only patches centred >= 224
    owned = _owned(torch.tensor([0, 76]), 300, 224, 0, 16, 14)
    assert owned[0].all()
    np.testing.assert_array_equal(owned[1].numpy(), (76 + 8 + 16 * np.arange(14)) >= 224)


def test_cap_per_class_is_seeded():
    ids = np.array([0] * 10 + [1] * 3 + [2])
    keep = _cap_per_class(ids, 4, np.random.default_rng(0))
    assert np.bincount(ids[keep]).tolist() == [4, 3, 1]
    np.testing.assert_array_equal(keep, _cap_per_class(ids, 4, np.random.default_rng(0)))


def _two_domains(seed: int = 0) -> DomainFeatures:
    """Domain A: tight classes (noise 0.1); domain B: loose classes (noise 1.0); 2 datasets x 6 images each."""
    rng = np.random.default_rng(seed)
    parts = []
    for domain, noise in ((RS_DOMAIN, 0.1), (NATURAL_DOMAIN, 1.0)):
        for ds in ("d1", "d2"):
            centres = rng.normal(size=(3, 16))
            cls = np.tile(np.arange(3), 24)
            img = np.repeat(np.arange(6), 12)
            f = centres[cls] + noise * rng.normal(size=(len(cls), 16))
            parts.append(
                (
                    f,
                    cls,
                    np.array([f"c{c}" for c in cls]),
                    np.full(len(cls), ds),
                    np.full(len(cls), domain),
                    np.array([f"{ds}/{i}" for i in img]),
                )
            )
    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    return DomainFeatures(cols[0].astype(np.float32), *cols[1:])


def test_bootstrap_gap_point_estimate_matches_pooled_similarity():
    feats = _two_domains()
    gap = bootstrap_domain_gap(feats, n_boot=200, seed=0)
    for domain, key in ((RS_DOMAIN, "a"), (NATURAL_DOMAIN, "b")):
        sub = feats.domain(domain)
        ref = intra_class_similarity(sub.feats, sub.class_keys)
        assert gap[f"mean_{key}"] == pytest.approx(ref["mean"], abs=1e-6)
        assert gap[f"std_{key}"] == pytest.approx(ref["std"], abs=1e-6)
    assert gap["mean_ci_low"] > 0 and gap["std_ci_high"] < 0  # A is clearly more compact
    assert gap == bootstrap_domain_gap(feats, n_boot=200, seed=0)
    table = check_compactness(gap, pipeline_check=False)
    assert table["verdict"].tolist() == ["supported", "supported"]
    assert set(check_compactness(gap, pipeline_check=True)["verdict"]) == {"pipeline-check"}
    reverse = bootstrap_domain_gap(feats, NATURAL_DOMAIN, RS_DOMAIN, n_boot=200)
    assert check_compactness(reverse, pipeline_check=False)["verdict"].tolist() == ["contradicted"] * 2


def test_table1_comparison_and_separability():
    feats = _two_domains()
    sims = {
        d: intra_class_similarity(feats.domain(d).feats, feats.domain(d).class_keys)
        for d in (RS_DOMAIN, NATURAL_DOMAIN)
    }
    table = table1_comparison(sims, kind="pipeline-check").set_index("domain")
    assert table.loc[RS_DOMAIN, "paper_mean"] == 0.89 and table.loc[NATURAL_DOMAIN, "paper_pairs"] == 331998
    assert table.loc[RS_DOMAIN, "delta_mean"] == pytest.approx(sims[RS_DOMAIN]["mean"] - 0.89)
    sep = separability(feats).set_index("dataset")
    assert (sep[sep["domain"] == RS_DOMAIN]["silhouette"] > 0.8).all()
    assert (
        sep[sep["domain"] == RS_DOMAIN]["silhouette"] > sep[sep["domain"] == NATURAL_DOMAIN]["silhouette"].max()
    ).all()
    fig = plot_similarity_distributions(sims, pipeline_check=True)
    assert "PIPELINE CHECK" in fig._suptitle.get_text()


def test_embed_2d_tsne_is_seeded_and_plots():
    feats = _two_domains()
    a = embed_2d(feats.feats[:30], "tsne", seed=0)
    assert a.shape == (30, 2)
    np.testing.assert_array_equal(a, embed_2d(feats.feats[:30], "tsne", seed=0))
    with pytest.raises(InputError, match="tsne, umap"):
        embed_2d(feats.feats, "pca")
    maps = embed_domains(feats, methods=("tsne",), max_points=20, top_classes=2)
    assert len(maps) == 40 and set(maps["cls"]) >= {"other"}
    assert "PIPELINE CHECK" in plot_embeddings(maps, pipeline_check=True)._suptitle.get_text()


@pytest.mark.slow
def test_embed_2d_umap_is_seeded():  # numba compiles UMAP for ~20 s on first use
    pytest.importorskip("umap")
    feats = _two_domains().feats[:80]
    a = embed_2d(feats, "umap", seed=0)
    np.testing.assert_array_equal(a, embed_2d(feats, "umap", seed=0))


def test_collect_class_features_on_fake_dataset(tmp_path):
    root = generate_fake_dataset("potsdam", tmp_path / "potsdam", n_images=3, size=96, seed=0)
    cfg = build_config("segearth-ov", "potsdam", smoke=True, long_side=128)  # 128x128 → 1 window, 8x8 patches
    feats, cls, img = collect_class_features(cfg, "potsdam", root, n_images=2, max_per_class=10, seed=0)
    assert feats.dtype == np.float32 and feats.shape[1] == 32 and len(feats) == len(cls) == len(img)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert cls.min() >= 0 and cls.max() < load_manifest("potsdam").num_classes
    assert np.bincount(cls).max() <= 10 and len(set(img)) <= 2
    again = collect_class_features(cfg, "potsdam", root, n_images=2, max_per_class=10, seed=0)
    np.testing.assert_array_equal(feats, again[0])
    np.testing.assert_array_equal(cls, again[1])
    everything = collect_class_features(cfg, "potsdam", root, n_images=0, max_per_class=10_000, purity=0.01)
    assert len(set(everything[2])) == 3 and len(everything[0]) <= 3 * 64
    with pytest.raises(InputError, match="needs root"):
        collect_class_features(cfg, "potsdam")


def test_image_features_tile_each_area_once():
    # 300x300 (no resize), crop 224: windows start at 0 and 76; rows of kept patches: 14 + 5 (centres >= 224)
    cfg = build_config("segearth-ov", smoke=True, long_side=None)
    clip = create_clip("tiny", "none")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    label = np.full((300, 300), 4, dtype=np.uint8)
    feats, cls = _image_features(clip, cfg, image, label, torch.device("cpu"), purity=0.75)
    assert feats.shape == (19 * 19, 32) and (cls == 4).all()
    label[:150] = 255  # the top half ignored: 9 full patch rows + one row with 6/16 labelled pixels dropped
    _, cls = _image_features(clip, cfg, image, label, torch.device("cpu"), purity=0.75)
    assert len(cls) == (19 - 10) * 19


def test_pick_classes_spreads_over_datasets():
    label = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] * 4 + ["e"])
    datasets = np.array(["x"] * 8 + ["y"] * 6 + ["z"])
    assert _pick_classes(label, datasets, 4, np.random.default_rng(0)) == ["a", "d", "e", "b"]
