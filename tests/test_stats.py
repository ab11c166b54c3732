"""Tests of alignclip.evaluation.bootstrap (image-level bootstrap of dataset mIoU)."""

from __future__ import annotations

import numpy as np
import pytest

import alignclip.evaluation.bootstrap as stats
from alignclip.errors import InputError
from alignclip.evaluation.bootstrap import bootstrap_miou, classify_gain, paired_bootstrap
from alignclip.evaluation.metrics import iou_from_confusion

CM_A = np.array([[3, 1], [0, 4]], dtype=np.int64)
CM_B = np.array([[1, 2], [2, 5]], dtype=np.int64)


def _miou(cm: np.ndarray) -> float:
    return iou_from_confusion(cm)["miou"]


def _random_cms(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cms = rng.integers(0, 50, size=(n, k, k))
    cms[:, np.arange(k), np.arange(k)] += 100  # mostly correct predictions
    cms[rng.random((n, k)) < 0.3] = 0  # some classes absent from some images
    return cms


def test_identical_images_zero_width():
    cms = np.stack([CM_A] * 5)
    out = bootstrap_miou(cms, n_boot=200, seed=1)
    assert out["ci_low"] == out["ci_high"] == out["miou"] == pytest.approx(_miou(CM_A))
    assert out["mean"] == pytest.approx(out["miou"])
    assert (out["n_images"], out["n_boot"], out["seed"], out["ci"]) == (5, 200, 1, 0.95)


def test_two_images_enumerated():
    # Resamples aa, ab, ba, bb are equally likely; mIoU is scale-free so aa -> mIoU(a).
    values = [_miou(CM_A), _miou(CM_A + CM_B), _miou(CM_B)]
    expected_mean = (values[0] + 2 * values[1] + values[2]) / 4
    out = bootstrap_miou(np.stack([CM_A, CM_B]), n_boot=20000, seed=0)
    assert out["miou"] == pytest.approx(values[1])
    assert out["mean"] == pytest.approx(expected_mean, abs=0.3)
    assert any(np.isclose(out["ci_low"], v) for v in values)
    assert any(np.isclose(out["ci_high"], v) for v in values)
    # With 25 % of mass on each extreme, the 95 % interval spans min..max.
    assert out["ci_low"] == pytest.approx(min(values))
    assert out["ci_high"] == pytest.approx(max(values))


def test_matches_loop_reference():
    cms = _random_cms(n=9, k=4, seed=0)
    n_boot, seed = 300, 5
    idx = np.random.Generator(np.random.PCG64(seed)).integers(0, 9, size=(n_boot, 9))
    ref = np.array([_miou(cms[row].sum(0)) for row in idx])
    out = bootstrap_miou(cms, n_boot=n_boot, seed=seed)
    assert out["mean"] == pytest.approx(ref.mean())
    assert out["ci_low"] == pytest.approx(np.quantile(ref, 0.025, method="lower"))
    assert out["ci_high"] == pytest.approx(np.quantile(ref, 0.975, method="higher"))


def test_block_size_does_not_change_results(monkeypatch):
    cms = _random_cms(n=7, k=3, seed=1)
    full = bootstrap_miou(cms, n_boot=101, seed=2)
    monkeypatch.setattr(stats, "_MAX_CELLS", 7 * 3)  # blocks of 3 resamples
    assert bootstrap_miou(cms, n_boot=101, seed=2) == full


def test_seed_reproducible():
    cms = _random_cms(n=20, k=5, seed=2)
    a = bootstrap_miou(cms, n_boot=300, seed=7)
    assert bootstrap_miou(cms, n_boot=300, seed=7) == a
    b = bootstrap_miou(cms, n_boot=300, seed=8)
    assert b["miou"] == a["miou"]
    assert (b["mean"], b["ci_low"], b["ci_high"]) != (a["mean"], a["ci_low"], a["ci_high"])


def test_paired_identical_runs():
    cms = _random_cms(n=10, k=4, seed=3)
    ids = [f"t{i}" for i in range(10)]
    out = paired_bootstrap(cms, cms, ids, ids, n_boot=200, seed=0)
    assert out["delta"] == out["ci_low"] == out["ci_high"] == 0.0
    assert out["p_b_better"] == 0.0
    assert classify_gain((out["ci_low"], out["ci_high"])) == "not distinguishable from zero"


def test_paired_aligns_by_id_and_detects_gain():
    cms_a = _random_cms(n=12, k=4, seed=4)
    cms_b = cms_a.copy()
    cms_b[:, np.arange(4), np.arange(4)] += 200  # B is better on every image
    ids = [f"t{i}" for i in range(12)]
    perm = np.random.default_rng(0).permutation(12)
    out = paired_bootstrap(cms_a, cms_b, ids, ids, n_boot=300, seed=1)
    shuffled = paired_bootstrap(cms_a, cms_b[perm], ids, [ids[i] for i in perm], n_boot=300, seed=1)
    assert shuffled == out
    a_alone = bootstrap_miou(cms_a, n_boot=300, seed=1)
    assert out["miou_a"] == pytest.approx(a_alone["miou"])
    assert out["delta"] > 0 and out["p_b_better"] == 1.0
    assert 0 < out["ci_low"] <= out["delta"] <= out["ci_high"]
    assert classify_gain((out["ci_low"], out["ci_high"])) == "supported"


def test_paired_refuses_different_images():
    cms = _random_cms(n=4, k=3, seed=5)
    with pytest.raises(InputError, match=r"A has 1 images B lacks \(e\.g\. \['a'\]\).*same images"):
        paired_bootstrap(cms, cms, ["a", "b", "c", "d"], ["x", "b", "c", "d"])
    with pytest.raises(InputError, match="twice"):
        paired_bootstrap(cms, cms, ["a", "a", "c", "d"], ["a", "b", "c", "d"])
    with pytest.raises(InputError, match="ids for"):
        paired_bootstrap(cms, cms, ["a", "b", "c"], ["a", "b", "c", "d"])


def test_bad_arguments():
    with pytest.raises(InputError, match="n_boot"):
        bootstrap_miou(np.stack([CM_A]), n_boot=0)
    with pytest.raises(InputError, match="ci"):
        bootstrap_miou(np.stack([CM_A]), ci=95)
    with pytest.raises(InputError, match="shape"):
        bootstrap_miou(CM_A)


def test_classify_gain():
    assert classify_gain((0.1, 0.5)) == "supported"
    assert classify_gain((-0.5, -0.1)) == "contradicted"
    assert classify_gain((-0.1, 0.3)) == "not distinguishable from zero"
    assert classify_gain((0.0, 0.3)) == "not distinguishable from zero"
    assert classify_gain((-0.5, -0.1), claimed_sign=-1) == "supported"
    assert classify_gain((0.1, 0.5), claimed_sign=-1) == "contradicted"
    with pytest.raises(InputError, match="claimed_sign"):
        classify_gain((0.1, 0.5), claimed_sign=0)
    with pytest.raises(InputError, match="low <= high"):
        classify_gain((0.5, 0.1))
