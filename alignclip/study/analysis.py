"""Feature analysis of the paper's motivation: intra-class compactness (Table 1) and 2-D maps (Fig. 1c, Fig. 5).

This module holds the statistics (pooled intra-class similarity, the image bootstrap of the domain gap,
the compactness verdicts, the comparison with the paper's Table 1) and ``embed_2d``. The feature
collector and its protocol (features, labels, classes, sampling) live in :mod:`alignclip.evaluation.features`;
the figures live in :mod:`alignclip.study.analysis_figures`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from alignclip.errors import InputError
from alignclip.evaluation.bootstrap import classify_gain
from alignclip.evaluation.features import DomainFeatures
from alignclip.kinds import PIPELINE_CHECK
from alignclip.paper.tables import load_table

__all__ = [
    "EMBED_METHODS",
    "NATURAL_DOMAIN",
    "RS_DOMAIN",
    "DomainFeatures",
    "bootstrap_domain_gap",
    "check_compactness",
    "domain_similarity",
    "embed_2d",
    "intra_class_similarity",
    "table1_comparison",
]

EMBED_METHODS = ("tsne", "umap")
#: Our domain names are the row names of the paper's Table 1.
RS_DOMAIN, NATURAL_DOMAIN = "Remote Sensing", "Natural Image"


# ---------------------------------------------------------------- Table 1
def _triu_pairs(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major linear indices ``k`` of the strict upper triangle of an n x n matrix → ``(i, j)``, i < j."""
    total = n * (n - 1) // 2
    rev = total - 1 - k  # index counted from the end: row n-2-r has r+1 entries
    r = ((np.sqrt(8 * rev + 1) - 1) // 2).astype(np.int64)
    r += ((r + 1) * (r + 2) // 2 <= rev).astype(np.int64)  # fix float rounding of the square root
    r -= (r * (r + 1) // 2 > rev).astype(np.int64)
    i = n - 2 - r
    j = n - 1 - (rev - r * (r + 1) // 2)
    return i, j


def intra_class_similarity(
    feats: np.ndarray, class_ids: np.ndarray, max_pairs_per_class: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Pooled intra-class cosine similarity (our protocol for the paper's Table 1).

    For every class c with n_c >= 2 patches, the cosine similarity of every unordered pair of distinct patches
    (i < j) of c is taken from the Gram matrix of the unit features (one matrix product per class); when a class
    has more than ``max_pairs_per_class`` pairs, a seeded random subset of that many distinct pairs is used
    instead. All pairs of all classes are pooled: the mean and (population) standard deviation are over pairs,
    so large classes weigh more, as one pooled ``#Pairs`` count implies.

    Args:
        feats: ``[M, D]`` features (normalised here).
        class_ids: ``[M]`` class labels (any hashable values; pairs never cross classes).
        max_pairs_per_class: cap on pairs per class (``None`` or 0: all pairs).
        seed: seed of the pair subsets.

    Returns:
        ``{"mean", "std", "n_pairs", "values" [n_pairs] float32, "per_class": {class: {"mean", "n_pairs",
        "n_patches"}}}`` (mean/std NaN when there is no pair).
    """
    feats = np.asarray(feats, dtype=np.float64)
    class_ids = np.asarray(class_ids)
    if feats.ndim != 2 or len(feats) != len(class_ids):
        raise InputError(f"feats must be [M, D] and class_ids [M], got {feats.shape} and {class_ids.shape}")
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    values, per_class = [], {}
    for c in np.unique(class_ids):  # a loop over classes; pairs are matrix products
        f = feats[class_ids == c]
        n = len(f)
        total = n * (n - 1) // 2
        if max_pairs_per_class and total > max_pairs_per_class:
            i, j = _triu_pairs(np.sort(rng.choice(total, int(max_pairs_per_class), replace=False)), n)
            sims = np.einsum("pd,pd->p", f[i], f[j])
        else:
            i, j = np.triu_indices(n, 1)
            sims = (f @ f.T)[i, j]
        values.append(sims)
        key = c.item() if hasattr(c, "item") else c
        per_class[key] = dict(
            mean=float(sims.mean()) if len(sims) else float("nan"), n_pairs=int(len(sims)), n_patches=int(n)
        )
    values = np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32)
    mean = float(values.astype(np.float64).mean()) if len(values) else float("nan")
    std = float(values.astype(np.float64).std()) if len(values) else float("nan")
    return dict(mean=mean, std=std, n_pairs=int(len(values)), values=values, per_class=per_class)


def domain_similarity(
    features: DomainFeatures, max_pairs_per_class: int | None = None, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """:func:`intra_class_similarity` of each domain (classes per dataset)."""
    out = {}
    for d in dict.fromkeys(features.domains):
        sub = features.domain(d)
        out[d] = intra_class_similarity(sub.feats, sub.class_keys, max_pairs_per_class, seed)
    return out


def table1_comparison(sims: Mapping[str, Mapping[str, Any]], kind: str = PIPELINE_CHECK) -> pd.DataFrame:
    """Paper's Table 1 beside ours: ``domain, paper_pairs, paper_mean, paper_std, pairs, mean, std, delta_mean,
    delta_std, kind``."""
    paper = load_table("table1_intra_class_similarity").set_index("domain")
    rows = []
    for domain, res in sims.items():
        p = paper.loc[domain] if domain in paper.index else None
        pm, ps = (float(p["similarity_mean"]), float(p["similarity_std"])) if p is not None else (None, None)
        rows.append(
            dict(
                domain=domain,
                paper_pairs=None if p is None else int(p["pairs"]),
                paper_mean=pm,
                paper_std=ps,
                pairs=res["n_pairs"],
                mean=res["mean"],
                std=res["std"],
                delta_mean=None if pm is None else res["mean"] - pm,
                delta_std=None if ps is None else res["std"] - ps,
                kind=kind,
            )
        )
    return pd.DataFrame(rows)


def _pair_moments(feats: np.ndarray, class_ids: np.ndarray, image_idx: np.ndarray, n_img: int) -> np.ndarray:
    """``[3, n_img, n_img]``: count, sum and sum of squares of same-class pair similarities between images
    (ordered pairs of distinct patches; the diagonal holds within-image pairs)."""
    out = np.zeros((3, n_img, n_img))
    for c in np.unique(class_ids):
        sel = class_ids == c
        f, onehot = feats[sel], np.eye(n_img)[image_idx[sel]]  # [n, D], [n, n_img]
        g = f @ f.T
        np.fill_diagonal(g, 0.0)
        ones = np.ones_like(g)
        np.fill_diagonal(ones, 0.0)
        for k, m in enumerate((ones, g, g * g)):
            out[k] += onehot.T @ m @ onehot
    return out


def bootstrap_domain_gap(
    features: DomainFeatures,
    domain_a: str = RS_DOMAIN,
    domain_b: str = NATURAL_DOMAIN,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, float]:
    """Bootstrap over images of ``mean_a - mean_b`` and ``std_a - std_b`` of the pooled intra-class similarity.

    Images are resampled with replacement within each dataset (the design draws a fixed number per dataset); a
    pair of distinct patches from images drawn w_a and w_b times counts w_a·w_b times, so each resample's pooled
    moments are ``0.5·wᵀ M w`` with per-image-pair moment matrices M, all resamples at once (no loop over
    pairs). With unit weights this is exactly :func:`intra_class_similarity` with all pairs.

    Returns:
        ``mean_a, mean_b, std_a, std_b, delta_mean, mean_ci_low, mean_ci_high, delta_std, std_ci_low, std_ci_high,
        n_boot``.
    """
    if not isinstance(n_boot, int) or n_boot < 1:
        raise InputError(f"n_boot must be a positive int, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    stats = {}
    for name in (domain_a, domain_b):
        sub = features.domain(name)
        feats = sub.feats / np.maximum(np.linalg.norm(sub.feats, axis=1, keepdims=True), 1e-12)
        images, image_idx = np.unique(sub.image_ids, return_inverse=True)
        moments = _pair_moments(feats.astype(np.float64), sub.class_keys, image_idx, len(images))
        strata = np.array([i.split("/", 1)[0] for i in images])
        weights = np.zeros((n_boot, len(images)))
        for s in np.unique(strata):  # draw images within each dataset
            members = np.flatnonzero(strata == s)
            draws = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
            np.add.at(weights, (np.repeat(np.arange(n_boot), len(members)), draws.ravel()), 1.0)
        weights = np.vstack([np.ones(len(images)), weights])  # row 0: the point estimate
        cnt, s1, s2 = (((weights @ m) * weights).sum(1) for m in moments)  # wᵀ M w per resample
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / cnt
            std = np.sqrt(np.maximum(s2 / cnt - mean**2, 0.0))
        stats[name] = (mean, std)
    (ma, sa), (mb, sb) = stats[domain_a], stats[domain_b]
    q = [(1 - ci) / 2, 1 - (1 - ci) / 2]
    dm, ds = ma - mb, sa - sb
    mlo, mhi = np.nanquantile(dm[1:], q)
    slo, shi = np.nanquantile(ds[1:], q)
    return dict(
        mean_a=float(ma[0]),
        mean_b=float(mb[0]),
        std_a=float(sa[0]),
        std_b=float(sb[0]),
        delta_mean=float(dm[0]),
        mean_ci_low=float(mlo),
        mean_ci_high=float(mhi),
        delta_std=float(ds[0]),
        std_ci_low=float(slo),
        std_ci_high=float(shi),
        n_boot=n_boot,
    )


def check_compactness(gap: Mapping[str, float], pipeline_check: bool) -> pd.DataFrame:
    """Verdicts on the paper's claim "remote sensing is more compact": higher mean AND lower std (Table 1)."""
    rows = []
    for stat, sign, lo, hi in (
        ("mean similarity", +1, "mean_ci_low", "mean_ci_high"),
        ("std of similarity", -1, "std_ci_low", "std_ci_high"),
    ):
        key = "mean" if sign > 0 else "std"
        verdict = PIPELINE_CHECK if pipeline_check else classify_gain((gap[lo], gap[hi]), claimed_sign=sign)
        rows.append(
            dict(
                statistic=stat,
                claim="RS higher" if sign > 0 else "RS lower",
                remote_sensing=gap[f"{key}_a"],
                natural=gap[f"{key}_b"],
                delta=gap[f"delta_{key}"],
                ci_low=gap[lo],
                ci_high=gap[hi],
                verdict=verdict,
            )
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Fig. 1c / Fig. 5
def embed_2d(feats: np.ndarray, method: str = "tsne", seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D map ``[M, 2]`` of features ``[M, D]`` (Fig. 1c / Fig. 5).

    ``tsne``: sklearn t-SNE, ``init="pca"``, fixed ``random_state``, perplexity min(30, (M-1)/3), Euclidean on the
    unit features (monotone in cosine), single-threaded. ``umap``: UMAP with ``random_state=seed`` (hence single-threaded and
    repeatable) on the exact cosine k-NN graph, computed here with one matrix product and handed to UMAP
    (``precomputed_knn``), which skips compiling UMAP's own neighbour search (~6 s of numba JIT per process).
    """
    if method not in EMBED_METHODS:
        raise InputError(f"method={method!r} is not valid; choose one of {', '.join(EMBED_METHODS)}")
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2 or len(feats) < 5:
        raise InputError(f"embed_2d needs [M, D] features with M >= 5, got shape {feats.shape}")
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, (len(feats) - 1) / 3))
        with threadpool_limits(1):  # one OpenMP thread: same map on any machine, and no spin-waiting
            return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(feats)
    import warnings

    import umap

    k = min(n_neighbors, len(feats) - 1)
    dist = np.clip(1.0 - feats @ feats.T, 0.0, 2.0)
    np.fill_diagonal(dist, -1.0)  # each point is its own first neighbour, as UMAP expects
    knn = np.argsort(dist, axis=1, kind="stable")[:, :k]
    knn_dist = np.maximum(np.take_along_axis(dist, knn, 1), 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", "no search index": intended
        model = umap.UMAP(
            n_components=2,
            n_neighbors=k,
            metric="cosine",
            random_state=seed,
            force_approximation_algorithm=True,
            precomputed_knn=(knn, knn_dist, None),
        )
        return model.fit_transform(feats)
