"""Bootstrap confidence intervals for dataset-level mIoU (is a small gain real?).

The unit of resampling is the IMAGE: a resample draws ``n`` image indices with replacement, sums
those images' confusion matrices and recomputes the dataset-level mIoU exactly as
``alignclip.evaluation.confusion.iou_from_confusion`` (a class with union 0 in that resample is NaN and
excluded). Intervals are percentile intervals whose endpoints are resampled values (numpy's
``"lower"`` quantile for the low end, ``"higher"`` for the high end: never interpolated, slightly
conservative). All resamples are evaluated at once: a counts matrix ``counts [n_boot, n]`` (how
often each image was drawn) times the flattened matrices ``[n, K*K]`` gives every resampled total,
so there is no Python loop over resamples (rows are drawn and processed in blocks of at most
~4M cells to bound memory; the draws equal one ``rng.integers(0, n, size=(n_boot, n))`` call).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alignclip.errors import InputError
from alignclip.evaluation.metrics import check_confusion_stack, iou_arrays

__all__ = ["bootstrap_miou", "check_comparable", "classify_gain", "paired_bootstrap"]

# Largest number of (resample, image) cells held at once in the counts matrix.
_MAX_CELLS = 1 << 22
_EXACT_FLOAT = 1 << 53


def _check_args(n_boot: int, seed: int, ci: float) -> None:
    if not isinstance(n_boot, int) or n_boot < 1:
        raise InputError(f"n_boot must be a positive int, got {n_boot!r} (e.g. 1000)")
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    if not 0.0 < ci < 1.0:
        raise InputError(f"ci must be in (0, 1), got {ci!r} (e.g. 0.95)")


def resampled_mious(stacks: Sequence[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """mIoU (fraction) of ``n_boot`` image resamples, the same resamples for every stack.

    Args:
        stacks: One or more int64 arrays [n, K, K] with the same ``n`` (aligned images).
        n_boot: Number of resamples.
        seed: Seed of ``np.random.Generator(PCG64(seed))``.

    Returns:
        One array [n_boot] per stack.
    """
    n = stacks[0].shape[0]
    rng = np.random.Generator(np.random.PCG64(seed))
    flats = []
    for cms in stacks:
        k = cms.shape[-1]
        flat = cms.reshape(n, k * k)
        # float64 BLAS is exact while every resampled total stays below 2**53.
        exact = n * int(flat.max(initial=0)) < _EXACT_FLOAT
        flats.append((flat.astype(np.float64) if exact else flat, k))
    out = [np.empty(n_boot, dtype=np.float64) for _ in stacks]
    block = max(1, _MAX_CELLS // n)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        # Sequential draws from one Generator equal one draw of [n_boot, n]: the result does
        # not depend on the block size (tested), only memory does.
        rows = rng.integers(0, n, size=(b, n))
        offsets = (np.arange(b, dtype=np.int64) * n)[:, None]
        counts = np.bincount((rows + offsets).ravel(), minlength=b * n).reshape(b, n)
        for (flat, k), res in zip(flats, out, strict=True):
            totals = counts.astype(flat.dtype) @ flat
            res[start : start + b] = iou_arrays(totals.reshape(b, k, k))[2]
    return out


def percentile_interval(values: np.ndarray, ci: float) -> tuple[float, float]:
    alpha = (1.0 - ci) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        low = float(np.nanquantile(values, alpha, method="lower"))
        high = float(np.nanquantile(values, 1.0 - alpha, method="higher"))
    return low, high


def _point_miou(cms: np.ndarray, name: str) -> float:
    total = cms.sum(axis=0)
    if total.sum() == 0:
        raise InputError(f"{name} holds 0 valid pixels over all images; check that the run evaluated images")
    return float(iou_arrays(total)[2])


def bootstrap_miou(cms: np.ndarray, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap over images of the dataset-level mIoU.

    Args:
        cms: Per-image confusion matrices [n_images, K, K] (``ConfusionAccumulator.per_image``).
        n_boot: Number of resamples.
        seed: Seed of ``np.random.Generator(PCG64(seed))``.
        ci: Coverage of the interval (0.95 -> 2.5 % and 97.5 % quantiles).

    Returns:
        ``{"miou", "mean", "ci_low", "ci_high", "ci", "n_images", "n_boot", "seed"}`` with mIoU
        values in % (``miou`` is the point estimate on all images).
    """
    _check_args(n_boot, seed, ci)
    cms = check_confusion_stack(cms, ndim=3, name="cms")
    n = cms.shape[0]
    if n == 0:
        raise InputError("cms holds 0 images; evaluate at least one image before bootstrapping")
    point = _point_miou(cms, "cms")
    (boot,) = resampled_mious([cms], n_boot, seed)
    low, high = percentile_interval(boot, ci)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(boot))
    return {
        "miou": point * 100.0,
        "mean": mean * 100.0,
        "ci_low": low * 100.0,
        "ci_high": high * 100.0,
        "ci": ci,
        "n_images": n,
        "n_boot": n_boot,
        "seed": seed,
    }


def _align(cms_a: np.ndarray, cms_b: np.ndarray, ids_a: Sequence[str], ids_b: Sequence[str]) -> np.ndarray:
    """Reorder ``cms_b`` to the order of ``ids_a`` after checking that the id sets agree."""
    for name, cms, ids in (("A", cms_a, ids_a), ("B", cms_b, ids_b)):
        if len(ids) != cms.shape[0]:
            raise InputError(
                f"run {name}: {len(ids)} ids for {cms.shape[0]} matrices; pass the ids returned "
                "with the matrices by ConfusionAccumulator.per_image()"
            )
        if len(set(ids)) != len(ids):
            raise InputError(f"run {name} lists some image ids twice; each image must count once")
    if cms_a.shape[1:] != cms_b.shape[1:]:
        raise InputError(
            f"runs have {cms_a.shape[-1]} and {cms_b.shape[-1]} classes; compare runs on the same class list"
        )
    set_a, set_b = set(ids_a), set(ids_b)
    if set_a != set_b:
        only_a = sorted(set_a - set_b)
        only_b = sorted(set_b - set_a)
        raise InputError(
            f"A has {len(only_a)} images B lacks (e.g. {only_a[:3]}), B has {len(only_b)} A "
            f"lacks (e.g. {only_b[:3]}); compare runs on the same images"
        )
    pos_b = {image_id: i for i, image_id in enumerate(ids_b)}
    return cms_b[[pos_b[image_id] for image_id in ids_a]]


def check_comparable(
    result_a: Mapping[str, Any], result_b: Mapping[str, Any], names: Sequence[str] = ("A", "B")
) -> None:
    """Refuse to pair two RESULT.json dictionaries of different datasets, splits or class lists.

    Image ids alone do not tell datasets apart (``0``, ``1``... or tile names recur), so a paired comparison first
    checks what the ids mean.

    Args:
        result_a: run A's RESULT.json content (``dataset``, ``split``, ``classes``).
        result_b: run B's.
        names: how the message calls them (e.g. the file paths).

    Raises:
        InputError: the datasets, splits or class lists differ (one line naming both).
    """
    name_a, name_b = names
    for key in ("dataset", "split"):
        if result_a.get(key) != result_b.get(key):
            raise InputError(
                f"{name_a} is a result on {key} {result_a.get(key)!r} but {name_b} on {result_b.get(key)!r}; "
                "a paired comparison needs two runs on the same dataset and split"
            )
    classes_a, classes_b = list(result_a.get("classes") or []), list(result_b.get("classes") or [])
    if classes_a != classes_b:
        diff = next(
            (i for i, (a, b) in enumerate(zip(classes_a, classes_b, strict=False)) if a != b),
            min(len(classes_a), len(classes_b)),
        )
        got_a = classes_a[diff] if diff < len(classes_a) else None
        got_b = classes_b[diff] if diff < len(classes_b) else None
        raise InputError(
            f"{name_a} and {name_b} have different class lists ({len(classes_a)} and {len(classes_b)} classes, "
            f"first difference at index {diff}: {got_a!r} vs {got_b!r}); compare runs with the same classes"
        )


def paired_bootstrap(
    cms_a: np.ndarray,
    cms_b: np.ndarray,
    ids_a: Sequence[str],
    ids_b: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap of the mIoU difference B - A (both runs resampled with the same images).

    Args:
        cms_a: Per-image confusion matrices of run A [n, K, K].
        cms_b: Per-image confusion matrices of run B [n, K, K] (any image order).
        ids_a: Image ids of ``cms_a`` (length n).
        ids_b: Image ids of ``cms_b``; must be the same set as ``ids_a``.
        n_boot: Number of resamples.
        seed: Seed of ``np.random.Generator(PCG64(seed))``.
        ci: Coverage of the interval.

    Returns:
        ``{"delta", "ci_low", "ci_high", "p_b_better", "miou_a", "miou_b", "ci", "n_images",
        "n_boot", "seed"}``: ``delta`` = mIoU_B - mIoU_A on all images (points of %);
        ``p_b_better`` = share of resamples where B > A.

    Raises:
        InputError: the id sets differ, ids repeat, or the class counts differ.
    """
    _check_args(n_boot, seed, ci)
    cms_a = check_confusion_stack(cms_a, ndim=3, name="cms_a")
    cms_b = check_confusion_stack(cms_b, ndim=3, name="cms_b")
    ids_a = [str(i) for i in ids_a]
    ids_b = [str(i) for i in ids_b]
    cms_b = _align(cms_a, cms_b, ids_a, ids_b)
    n = cms_a.shape[0]
    if n == 0:
        raise InputError("runs hold 0 images; evaluate at least one image before bootstrapping")
    miou_a = _point_miou(cms_a, "run A")
    miou_b = _point_miou(cms_b, "run B")
    boot_a, boot_b = resampled_mious([cms_a, cms_b], n_boot, seed)
    diff = boot_b - boot_a
    low, high = percentile_interval(diff, ci)
    finite = ~np.isnan(diff)
    p_better = float(np.mean(diff[finite] > 0)) if finite.any() else float("nan")
    return {
        "delta": (miou_b - miou_a) * 100.0,
        "ci_low": low * 100.0,
        "ci_high": high * 100.0,
        "p_b_better": p_better,
        "miou_a": miou_a * 100.0,
        "miou_b": miou_b * 100.0,
        "ci": ci,
        "n_images": n,
        "n_boot": n_boot,
        "seed": seed,
    }


def classify_gain(delta_ci: tuple[float, float], claimed_sign: int = +1) -> str:
    """Verdict on a claimed change given the bootstrap interval of the difference.

    Args:
        delta_ci: ``(ci_low, ci_high)`` of B - A.
        claimed_sign: ``+1`` for a claimed gain of B over A, ``-1`` for a claimed drop.

    Returns:
        ``"supported"`` if the whole interval lies on the claimed side of 0, ``"contradicted"``
        if it lies wholly on the other side, else ``"not distinguishable from zero"``.
    """
    if claimed_sign not in (1, -1):
        raise InputError(f"claimed_sign must be +1 (gain) or -1 (drop), got {claimed_sign!r}")
    try:
        low, high = (float(v) for v in delta_ci)
    except (TypeError, ValueError) as exc:
        raise InputError(f"delta_ci must be a (low, high) pair of numbers, got {delta_ci!r}") from exc
    if np.isnan(low) or np.isnan(high) or low > high:
        raise InputError(f"delta_ci must satisfy low <= high (no NaN), got {delta_ci!r}")
    low, high = sorted((low * claimed_sign, high * claimed_sign))
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "not distinguishable from zero"
