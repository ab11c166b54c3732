"""Per-image confusion matrices of a dataset: accumulation, merging and exact serialisation.

The metric maths (``confusion_matrix``, ``iou_from_confusion``, ...) lives in :mod:`alignclip.evaluation.metrics`;
see its docstring for the formulas and the deliberate differences from mmseg. ``ConfusionAccumulator`` sums
per-image matrices over a dataset before any division and keeps one matrix per image (keyed
by image id) so that ``alignclip.evaluation.bootstrap`` can bootstrap over images, plus its exact
serialisation (``to_compact`` / ``save_npz``).
"""

from __future__ import annotations

import base64
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignclip.errors import InputError
from alignclip.evaluation.metrics import check_confusion_stack, confusion_matrix, iou_from_confusion
from alignclip.io.files import atomic_write

__all__ = ["COMPACT_FORMAT", "ConfusionAccumulator"]

#: Identifier written into ``to_compact`` / ``save_npz`` payloads (bumped on any layout change).
COMPACT_FORMAT = "alignclip.confusion/v1"


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
        cm = check_confusion_stack(cm, ndim=2, name="cm")
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
            raise InputError(f"corrupt compact confusion payload ({exc}); regenerate it with to_compact()") from exc
        if "num_pixels" in d and int(d["num_pixels"]) != int(acc._total.sum()):
            raise InputError(
                f"corrupt compact confusion payload: num_pixels {d['num_pixels']} != decoded "
                f"total {int(acc._total.sum())}; regenerate it with to_compact()"
            )
        return acc

    @classmethod
    def _from_arrays(cls, ids: Sequence[str], cms: np.ndarray, k: int, ignore_index: int) -> ConfusionAccumulator:
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
                np.savez_compressed(
                    fh,
                    format=np.array(COMPACT_FORMAT),
                    ids=np.array(ids, dtype=str),
                    cms=cms,
                    num_classes=np.array(self.num_classes),
                    ignore_index=np.array(self.ignore_index),
                )

        path = atomic_write(path, write, overwrite=True)
        return path

    @classmethod
    def load_npz(cls, path: str | os.PathLike[str]) -> ConfusionAccumulator:
        """Read a file written by ``save_npz``."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"confusion file not found: {path}; pass the path written by save_npz()")
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != COMPACT_FORMAT:
                    raise ValueError(f"format {str(z['format'])!r}, expected {COMPACT_FORMAT!r}")
                return cls._from_arrays(z["ids"].tolist(), z["cms"], int(z["num_classes"]), int(z["ignore_index"]))
        except (KeyError, ValueError, OSError) as exc:
            raise InputError(f"{path} is not a confusion file written by save_npz() ({exc}); regenerate it") from exc
