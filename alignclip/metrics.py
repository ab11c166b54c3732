"""Segmentation metrics computed exactly as mmsegmentation's ``IoUMetric`` (the paper's metric).

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

``ConfusionAccumulator`` keeps one matrix per image (keyed by image id) so that ``alignclip.stats``
can bootstrap over images.
"""

from __future__ import annotations

import base64
import math
import os
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignclip.errors import DatasetError, InputError
from alignclip.fileio import atomic_write

__all__ = [
    "COMPACT_FORMAT",
    "ConfusionAccumulator",
    "confusion_matrix",
    "iou_from_confusion",
    "iou_arrays",
    "reduce_zero_label",
]

#: Identifier written into ``to_compact`` / ``save_npz`` payloads (bumped on any layout change).
COMPACT_FORMAT = "alignclip.confusion/v1"


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """Shift labels down by one, mapping 0 to ignore (mmseg's ``reduce_zero_label``).

    0 -> 255, then every label - 1, then 254 -> 255 (so 255 stays 255). Works on a copy; the
    arithmetic is done in int32 so uint8 inputs do not wrap.

    Args:
        label: Integer label map of any shape, e.g. [H, W].

    Returns:
        A new array with the same shape and dtype as ``label``.
    """
    arr = np.asarray(label)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"reduce_zero_label expects an integer label map, got dtype {arr.dtype}; "
            "load labels as uint8/int arrays (never resample labels with interpolation)"
        )
    out = arr.astype(np.int32, copy=True)
    out[out == 0] = 255
    out -= 1
    out[out == 254] = 255
    return out.astype(arr.dtype)


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
    if g.numel():
        g_min, g_max = int(g.min()), int(g.max())
        if g_min < 0 or g_max >= k:
            bad = torch.unique(g[(g < 0) | (g >= k)])[:10].tolist()
            raise DatasetError(
                f"label values {bad} outside 0..{k - 1} (ignore {ignore_index}); check the "
                "dataset conversion (palette 'P' images, reduce_zero_label) and num_classes"
            )
    if p.numel():
        p_min, p_max = int(p.min()), int(p.max())
        if p_min < 0 or p_max >= k:
            bad = torch.unique(p[(p < 0) | (p >= k)])[:10].tolist()
            raise InputError(
                f"prediction values {bad} outside 0..{k - 1}; predictions must be class indices "
                f"of the {k} evaluated classes (map background/extra queries to classes first)"
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
    cm = _check_cms(cm, ndim=2, name="cm")
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


def _check_cms(cms: Any, ndim: int, name: str) -> np.ndarray:
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


class ConfusionAccumulator:
    """Streaming dataset confusion matrix that also keeps each image's matrix.

    Args:
        num_classes: Number of classes K.
        ignore_index: Ground-truth value ignored by ``update``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise InputError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._cms: list[np.ndarray] = []
        self._total = np.zeros((num_classes, num_classes), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index

    def update(
        self,
        pred: np.ndarray | torch.Tensor,
        label: np.ndarray | torch.Tensor,
        image_id: str,
    ) -> np.ndarray:
        """Count one image (see ``confusion_matrix``) and store its matrix under ``image_id``.

        Args:
            pred: Predicted class indices [H, W].
            label: Ground-truth class indices [H, W].
            image_id: Unique id of the image (e.g. its file stem).

        Returns:
            The image's confusion matrix [K, K] int64.

        Raises:
            InputError: ``image_id`` was already counted (checked before any work).
        """
        self._check_new_id(image_id)
        cm = confusion_matrix(pred, label, self.num_classes, self.ignore_index)
        self._append(image_id, cm)
        return cm

    def add_matrix(self, cm: np.ndarray, image_id: str) -> None:
        """Store an already computed per-image confusion matrix [K, K] under ``image_id``."""
        self._check_new_id(image_id)
        cm = _check_cms(cm, ndim=2, name="cm")
        if cm.shape[0] != self.num_classes:
            raise InputError(
                f"matrix for {image_id!r} has {cm.shape[0]} classes, accumulator has "
                f"{self.num_classes}; use an accumulator built with the same class list"
            )
        self._append(image_id, cm.copy())

    def _check_new_id(self, image_id: str) -> None:
        if not isinstance(image_id, str) or not image_id:
            raise InputError(f"image_id must be a non-empty str, got {image_id!r}")
        if image_id in self._index:
            raise InputError(
                f"image counted twice: {image_id!r} is already in the accumulator; give each "
                "image a unique id and evaluate it once"
            )

    def _append(self, image_id: str, cm: np.ndarray) -> None:
        self._index[image_id] = len(self._ids)
        self._ids.append(image_id)
        self._cms.append(cm)
        self._total += cm

    def total(self) -> np.ndarray:
        """Dataset confusion matrix [K, K] int64 (sum of the per-image matrices)."""
        return self._total.copy()

    def metrics(self) -> dict[str, Any]:
        """``iou_from_confusion(self.total())``."""
        return iou_from_confusion(self._total)

    def per_image(self) -> tuple[list[str], np.ndarray]:
        """Image ids in insertion order and their matrices [n, K, K] int64."""
        k = self.num_classes
        if not self._cms:
            return [], np.zeros((0, k, k), dtype=np.int64)
        return list(self._ids), np.stack(self._cms)

    def merge(self, other: ConfusionAccumulator) -> ConfusionAccumulator:
        """Add every image of ``other`` to this accumulator (in place; returns ``self``).

        Raises:
            InputError: class counts differ or some image ids are in both (nothing is changed).
        """
        if not isinstance(other, ConfusionAccumulator):
            raise InputError(f"merge expects a ConfusionAccumulator, got {type(other).__name__}")
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise InputError(
                f"cannot merge accumulators with (num_classes, ignore_index) "
                f"({self.num_classes}, {self.ignore_index}) and "
                f"({other.num_classes}, {other.ignore_index}); evaluate both with one config"
            )
        overlap = [i for i in other._ids if i in self._index]
        if overlap:
            raise InputError(
                f"image counted twice: {len(overlap)} ids are in both accumulators "
                f"(e.g. {overlap[:3]}); merge only disjoint shards of a dataset"
            )
        for image_id, cm in zip(other._ids, other._cms, strict=True):
            self._append(image_id, cm.copy())
        return self

    # ------------------------------------------------------------------ serialisation
    def to_compact(self) -> dict[str, Any]:
        """JSON-serialisable, exact encoding of all per-image matrices.

        Layout (``format`` = ``COMPACT_FORMAT``): ``ids`` (list of str, insertion order),
        ``shape`` ``[n, K, K]``, ``data`` = base64 of the zlib-compressed little-endian int64
        C-order bytes of the stacked matrices, plus ``num_classes``, ``ignore_index`` and
        ``num_pixels`` (the total count, checked on load). Confusion matrices are mostly zeros
        and small numbers, so this is typically a few hundred bytes per image.
        """
        ids, cms = self.per_image()
        raw = np.ascontiguousarray(cms, dtype="<i8").tobytes()
        return {
            "format": COMPACT_FORMAT,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "ids": ids,
            "shape": list(cms.shape),
            "num_pixels": int(self._total.sum()),
            "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii"),
        }

    @classmethod
    def from_compact(cls, d: dict[str, Any]) -> ConfusionAccumulator:
        """Rebuild an accumulator from ``to_compact`` output (exact round trip)."""
        if not isinstance(d, dict) or d.get("format") != COMPACT_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise InputError(
                f"not a compact confusion payload: format {got!r}, expected {COMPACT_FORMAT!r}; "
                "pass the dict written by ConfusionAccumulator.to_compact()"
            )
        try:
            raw = zlib.decompress(base64.b64decode(d["data"]))
            cms = np.frombuffer(raw, dtype="<i8").reshape([int(s) for s in d["shape"]])
            acc = cls._from_arrays(d["ids"], cms, int(d["num_classes"]), int(d["ignore_index"]))
        except (KeyError, ValueError, TypeError, zlib.error) as exc:
            raise InputError(
                f"corrupt compact confusion payload ({exc}); regenerate it with to_compact()"
            ) from exc
        if "num_pixels" in d and int(d["num_pixels"]) != int(acc._total.sum()):
            raise InputError(
                f"corrupt compact confusion payload: num_pixels {d['num_pixels']} != decoded "
                f"total {int(acc._total.sum())}; regenerate it with to_compact()"
            )
        return acc

    @classmethod
    def _from_arrays(
        cls, ids: Sequence[str], cms: np.ndarray, k: int, ignore_index: int
    ) -> ConfusionAccumulator:
        """Validated constructor from ids [n] and matrices [n, K, K] (raises ValueError)."""
        ids = [str(i) for i in ids]
        if cms.ndim != 3 or cms.shape[1:] != (k, k) or cms.shape[0] != len(ids):
            raise ValueError(f"matrices {cms.shape} do not match {len(ids)} ids and {k} classes")
        acc = cls(k, ignore_index)
        for image_id, cm in zip(ids, cms, strict=True):
            acc.add_matrix(cm, image_id)  # InputError (a ValueError) on repeated ids
        return acc

    def save_npz(self, path: str | os.PathLike[str]) -> Path:
        """Write all per-image matrices to a compressed ``.npz`` atomically (temp file + replace).

        Returns:
            The path written.
        """
        ids, cms = self.per_image()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, format=np.array(COMPACT_FORMAT), ids=np.array(ids, dtype=str), cms=cms,
                                    num_classes=np.array(self.num_classes),
                                    ignore_index=np.array(self.ignore_index))

        path = atomic_write(path, write, overwrite=True)
        return path

    @classmethod
    def load_npz(cls, path: str | os.PathLike[str]) -> ConfusionAccumulator:
        """Read a file written by ``save_npz``."""
        path = Path(path)
        if not path.is_file():
            raise InputError(
                f"confusion file not found: {path}; pass the path written by save_npz()"
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != COMPACT_FORMAT:
                    raise ValueError(f"format {str(z['format'])!r}, expected {COMPACT_FORMAT!r}")
                return cls._from_arrays(
                    z["ids"].tolist(), z["cms"], int(z["num_classes"]), int(z["ignore_index"])
                )
        except (KeyError, ValueError, OSError) as exc:
            raise InputError(
                f"{path} is not a confusion file written by save_npz() ({exc}); regenerate it"
            ) from exc
