"""Confusion matrices and IoU metrics exactly as mmsegmentation's ``IoUMetric`` (pure maths).

Per-image counting (``confusion_matrix``), dataset summaries (``iou_arrays``, ``iou_from_confusion``) and the
pixel accuracy of one map (``pixel_accuracy``); the per-image store ``ConfusionAccumulator`` lives in
:mod:`alignclip.evaluation.confusion`, mmseg's ``reduce_zero_label`` in :mod:`alignclip.data.labels`.

Per image, pixels whose ground truth equals ``ignore_index`` are dropped and a confusion matrix
``cm [K, K]`` (rows = ground truth, columns = prediction) is counted. Matrices are SUMMED over the
whole dataset before any division, then (see ``iou_from_confusion``):

* ``IoU_c = cm[c, c] / (colsum_c + rowsum_c - cm[c, c])`` (NaN when the union is 0: the class is
  absent from both ground truth and predictions in the whole dataset, and is excluded from mIoU;
  a class predicted but never present in the ground truth has IoU 0 and counts);
* ``mIoU = nanmean_c(IoU_c) * 100``;
* ``Acc_c = cm[c, c] / rowsum_c`` (NaN when the class never occurs in the ground truth),
  ``mAcc = nanmean_c(Acc_c) * 100``, ``aAcc = trace(cm) / sum(cm) * 100``.

Two deliberate differences from mmseg: counts are exact int64 (mmseg sums float32 histograms) and
nothing is rounded; out-of-range labels or predictions raise instead of being silently dropped.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from alignclip.errors import DatasetError, InputError

__all__ = ["check_confusion_stack", "confusion_matrix", "iou_arrays", "iou_from_confusion", "pixel_accuracy"]


def _as_index_tensor(name: str, x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Integer numpy/torch array -> int64 torch tensor (on the tensor's own device)."""
    if isinstance(x, torch.Tensor):
        bad = x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool
        dtype_name = str(x.dtype)
    else:
        x = np.asarray(x)
        bad = not np.issubdtype(x.dtype, np.integer)
        dtype_name = str(x.dtype)
    if bad:
        raise InputError(
            f"{name} must hold integer class indices, got dtype {dtype_name}; "
            "pass argmax indices (e.g. logits.argmax(0)) / the raw label map, not scores"
        )
    if isinstance(x, torch.Tensor):
        return x.long()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))


def _check_range(values: torch.Tensor, k: int, error: type[Exception], message: str) -> None:
    """Raise ``error(message)`` (``{bad}`` replaced by up to 10 offending values) unless all values lie in 0..k-1."""
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= k):
        bad = torch.unique(values[(values < 0) | (values >= k)])[:10].tolist()
        raise error(message.replace("{bad}", str(bad)))


def confusion_matrix(
    pred: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    num_classes: int,
    ignore_index: int = 255,
) -> np.ndarray:
    """Confusion matrix of one prediction against its ground truth.

    Computed with one ``bincount`` over ``label * K + pred`` on the valid pixels
    (``label != ignore_index``). Torch inputs are counted on their own device.

    Args:
        pred: Predicted class indices [H, W] (numpy or torch, integer), at the label's resolution.
        label: Ground-truth class indices [H, W]; ``ignore_index`` marks unlabelled pixels.
        num_classes: Number of classes K.
        ignore_index: Ground-truth value to ignore.

    Returns:
        int64 array [K, K]: rows = ground truth, columns = prediction.

    Raises:
        InputError: shapes differ, non-integer dtypes, or a prediction outside 0..K-1.
        DatasetError: a (non-ignored) label value outside 0..K-1.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes must be a positive int, got {num_classes!r}")
    k = num_classes
    p = _as_index_tensor("pred", pred)
    g = _as_index_tensor("label", label)
    if isinstance(pred, torch.Tensor):
        g = g.to(pred.device)
    elif isinstance(label, torch.Tensor):
        p = p.to(label.device)
    if tuple(p.shape) != tuple(g.shape):
        raise InputError(
            f"prediction shape {tuple(p.shape)} != label shape {tuple(g.shape)}; predictions must "
            "be at the label's resolution: resize logits to the label size before the argmax"
        )
    p = p.reshape(-1)
    g = g.reshape(-1)
    valid = g != ignore_index
    g = g[valid]
    _check_range(
        g,
        k,
        DatasetError,
        f"label values {{bad}} outside 0..{k - 1} (ignore {ignore_index}); check the "
        "dataset conversion (palette 'P' images, reduce_zero_label) and num_classes",
    )
    _check_range(
        p,
        k,
        InputError,
        f"prediction values {{bad}} outside 0..{k - 1}; predictions must be class "
        f"indices of the {k} evaluated classes (map background/extra queries to classes first)",
    )
    p = p[valid]
    counts = torch.bincount(g * k + p, minlength=k * k)
    return counts.reshape(k, k).cpu().numpy().astype(np.int64, copy=False)


def iou_arrays(cms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class IoU, per-class accuracy and mIoU for one or many confusion matrices.

    Vectorised core of ``iou_from_confusion`` (also used by the bootstrap). Fractions, not %.

    Args:
        cms: Confusion matrices [..., K, K] (rows = ground truth, columns = prediction).

    Returns:
        ``(iou [..., K], acc [..., K], miou [...])``: NaN where the union (IoU) or the ground
        truth area (acc) is 0; ``miou`` is the NaN-mean over classes (NaN if every class is NaN).
    """
    cms = np.asarray(cms, dtype=np.float64)
    inter = np.diagonal(cms, axis1=-2, axis2=-1)
    gt_area = cms.sum(axis=-1)
    pred_area = cms.sum(axis=-2)
    union = pred_area + gt_area - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
        acc = np.where(gt_area > 0, inter / gt_area, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN slice -> NaN
        miou = np.nanmean(iou, axis=-1)
    return iou, acc, miou


def _none_if_nan(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values.tolist()]


def iou_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """Dataset-level metrics from a summed confusion matrix, as mmseg's ``IoUMetric``.

    Args:
        cm: Confusion matrix [K, K] summed over the dataset (rows = ground truth).

    Returns:
        ``{"miou", "per_class_iou", "aacc", "macc", "per_class_acc", "num_pixels"}``; all in %,
        per-class lists use ``None`` for NaN (class excluded from the mean) so they are JSON-safe.

    Raises:
        InputError: ``cm`` is not a square non-negative matrix or holds no pixel at all.
    """
    cm = check_confusion_stack(cm, ndim=2, name="cm")
    total = int(cm.sum())
    if total == 0:
        raise InputError(
            "confusion matrix holds 0 valid pixels; every label was ignore_index or nothing was "
            "accumulated: check the label maps and that update() was called"
        )
    iou, acc, miou = iou_arrays(cm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        macc = float(np.nanmean(acc))
    return {
        "miou": float(miou) * 100.0,
        "per_class_iou": _none_if_nan(iou * 100.0),
        "aacc": float(np.trace(cm)) / total * 100.0,
        "macc": macc * 100.0,
        "per_class_acc": _none_if_nan(acc * 100.0),
        "num_pixels": total,
    }


def check_confusion_stack(cms: Any, ndim: int, name: str) -> np.ndarray:
    arr = np.asarray(cms)
    if arr.ndim != ndim or arr.shape[-1] != arr.shape[-2] or arr.shape[-1] == 0:
        want = "[K, K]" if ndim == 2 else "[n_images, K, K]"
        raise InputError(f"{name} must have shape {want}, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"{name} must hold integer pixel counts, got dtype {arr.dtype}; build it with "
            "confusion_matrix / ConfusionAccumulator"
        )
    if arr.size and arr.min() < 0:
        raise InputError(f"{name} holds negative counts; build it with confusion_matrix")
    return arr.astype(np.int64, copy=False)


def pixel_accuracy(pred: np.ndarray, label: np.ndarray, ignore_index: int = 255) -> float:
    """Share (%) of labelled pixels (``label != ignore_index``) predicted correctly; NaN when none is labelled."""
    valid = label != ignore_index
    if not valid.any():
        return float("nan")
    return float((pred[valid] == label[valid]).mean() * 100.0)
