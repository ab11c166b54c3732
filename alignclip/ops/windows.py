"""Sliding-window layout, extraction and count-averaged accumulation (the baseline's ``slide`` inference).

All windows of an image have the same size ``(min(crop, H), min(crop, W))``, so they are gathered into one batch
with advanced indexing and scattered back with ``index_put_(accumulate=True)``: no Python loop over windows.
:func:`stream_windows` runs them batch by batch over a rolling band of rows and hands on each band of rows as soon
as no later window touches it, so memory does not grow with the image height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from alignclip.errors import ConfigError

__all__ = [
    "accumulate_windows",
    "axis_counts",
    "axis_windows",
    "extract_windows",
    "pad_to_multiple",
    "stream_windows",
    "window_batches",
    "window_boxes",
    "window_counts",
    "window_size",
]

#: ``region(y1, y2, x1, x2)`` → the ``[C, y2 - y1, x2 - x1]`` pixels of that part of the image.
Region = Callable[[int, int, int, int], torch.Tensor]


def window_boxes(height: int, width: int, crop: int = 224, stride: int = 112) -> torch.Tensor:
    """Window boxes ``[n, 4]`` as ``(y1, y2, x1, x2)`` exactly as the baseline lays them out.

    Rows/columns of windows: ``max(size - crop + stride - 1, 0) // stride + 1``; window i starts at ``i * stride``,
    ends at ``min(start + crop, size)`` and is clamped back inside the image (``start = max(end - crop, 0)``), so the
    last window is shifted back rather than padded. Order: row-major.
    """
    y1, y2 = axis_windows(height, crop, stride)
    x1, x2 = axis_windows(width, crop, stride)
    gy, gx = torch.meshgrid(torch.arange(len(y1)), torch.arange(len(x1)), indexing="ij")
    gy, gx = gy.reshape(-1), gx.reshape(-1)
    return torch.stack([y1[gy], y2[gy], x1[gx], x2[gx]], dim=1)


def axis_windows(size: int, crop: int = 224, stride: int = 112) -> tuple[torch.Tensor, torch.Tensor]:
    """Starts and ends ``([n], [n])`` of the windows along one axis of ``size`` pixels (see :func:`window_boxes`)."""
    if crop <= 0 or stride <= 0:
        raise ConfigError(f"crop={crop} and stride={stride} must be positive")
    if stride > crop:
        raise ConfigError(f"stride={stride} > crop={crop} would leave pixels uncovered; use stride <= crop")
    n = max(size - crop + stride - 1, 0) // stride + 1
    start = torch.arange(n) * stride
    end = torch.clamp(start + crop, max=size)
    start = torch.clamp(end - crop, min=0)
    return start, end


def axis_counts(size: int, crop: int = 224, stride: int = 112) -> torch.Tensor:
    """``[size]`` float number of windows covering each pixel along one axis.

    The boxes of :func:`window_boxes` are every pair of a row interval and a column interval, so the count map of
    an image is the outer product ``axis_counts(H)[:, None] * axis_counts(W)[None, :]`` (small integers: exact).
    """
    start, end = axis_windows(size, crop, stride)
    pos = torch.arange(size)
    return ((pos[:, None] >= start[None, :]) & (pos[:, None] < end[None, :])).sum(1).float()


def window_size(height: int, width: int, crop: int = 224) -> tuple[int, int]:
    """Size ``(h, w)`` shared by every window of an image."""
    return min(crop, height), min(crop, width)


def _box_hw(boxes: torch.Tensor) -> tuple[int, int]:
    return int(boxes[0, 1] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 2])


def _indices(boxes: torch.Tensor, wh: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = boxes.to(device)
    rows = boxes[:, 0:1] + torch.arange(wh[0], device=device)  # [n, h]
    cols = boxes[:, 2:3] + torch.arange(wh[1], device=device)  # [n, w]
    return rows, cols


def extract_windows(image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Gather windows of a ``[C, H, W]`` image into ``[n, C, h, w]`` (one indexing op)."""
    rows, cols = _indices(boxes, _box_hw(boxes), image.device)
    out = image[:, rows[:, :, None], cols[:, None, :]]  # [C, n, h, w]
    return out.permute(1, 0, 2, 3)


def accumulate_windows(out: torch.Tensor, window_logits: torch.Tensor, boxes: torch.Tensor) -> None:
    """Add ``[n, K, h, w]`` window logits into ``out [K, H, W]`` in place at their boxes (overlaps summed)."""
    n, k, h, w = window_logits.shape
    rows, cols = _indices(boxes, (h, w), out.device)
    kk = torch.arange(k, device=out.device)[None, :, None, None]
    out.index_put_((kk, rows[:, None, :, None], cols[:, None, None, :]), window_logits.to(out.dtype), accumulate=True)


def window_counts(height: int, width: int, boxes: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[H, W]`` number of windows covering each pixel (the baseline's count map), built by accumulation.

    The pipeline uses the exact outer product of :func:`axis_counts` instead; this dense form is the reference
    that the tests check it against."""
    counts = torch.zeros(1, height, width, device=device)
    h, w = _box_hw(boxes)
    accumulate_windows(counts, torch.ones(len(boxes), 1, h, w, device=device), boxes)
    return counts[0]


def window_batches(boxes: torch.Tensor, batch_size: int, region: Region) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(boxes [n, 4], windows [n, C, h, w])`` of at most ``batch_size`` windows, in the order of ``boxes``.

    Only the bounding box of each batch's windows is asked of ``region``, so a caller that normalises pixels on
    demand never holds the whole image as float.
    """
    for i in range(0, len(boxes), batch_size):  # bounded batches of windows, not a loop over windows
        chunk = boxes[i : i + batch_size]
        y1, y2 = int(chunk[:, 0].min()), int(chunk[:, 1].max())
        x1, x2 = int(chunk[:, 2].min()), int(chunk[:, 3].max())
        local = chunk - torch.tensor([y1, y1, x1, x1], dtype=chunk.dtype)
        yield chunk, extract_windows(region(y1, y2, x1, x2), local)


def stream_windows(
    height: int,
    width: int,
    crop: int,
    stride: int,
    batch_size: int,
    region: Region,
    window_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Iterator[tuple[int, torch.Tensor]]:
    """Count-averaged window outputs of an image, handed on in bands of finished rows.

    Windows run in batches of ``batch_size`` in :func:`window_boxes` order (row-major, so their top coordinate never
    decreases). Outputs are summed into a rolling ``[K, rows, W]`` buffer; after each batch the rows above the next
    window's top are final: they are divided by their window counts (:func:`axis_counts`, outer product) and
    yielded. The sums run in the same order as one ``[K, H, W]`` accumulator would, so the result is bit-identical
    to summing everything and dividing by :func:`window_counts`.

    Args:
        height, width: the image size.
        crop, stride: the window layout (:func:`window_boxes`).
        batch_size: windows per call of ``window_fn``.
        region: ``(y1, y2, x1, x2)`` → ``[C, y2 - y1, x2 - x1]`` pixels (e.g. normalised on demand).
        window_fn: ``(windows [n, C, h, w], their boxes [n, 4])`` → outputs ``[n, K, h, w]``.

    Yields:
        ``(row_start, band [K, r, W])``: consecutive bands that together cover rows ``0..H``; memory is
        O(K × (crop + rows spanned by one batch) × W) whatever the height.
    """
    boxes = window_boxes(height, width, crop, stride)
    row_counts, col_counts = axis_counts(height, crop, stride), axis_counts(width, crop, stride)
    acc: torch.Tensor | None = None  # rows lo .. lo + acc.shape[1]
    lo, done = 0, 0
    for i, (chunk, crops) in enumerate(window_batches(boxes, batch_size, region)):
        out = window_fn(crops, chunk)  # [n, K, h, w]
        bottom = int(chunk[:, 1].max())
        if acc is None:
            acc = torch.zeros(out.shape[1], bottom, width, device=out.device)
            row_counts, col_counts = row_counts.to(out.device), col_counts.to(out.device)
        elif bottom - lo > acc.shape[1]:
            acc = torch.cat([acc, acc.new_zeros(acc.shape[0], bottom - lo - acc.shape[1], width)], dim=1)
        accumulate_windows(acc, out, chunk - torch.tensor([lo, lo, 0, 0], dtype=chunk.dtype))
        nxt = (i + 1) * batch_size
        done = int(boxes[nxt, 0]) if nxt < len(boxes) else height  # later windows start at or below this row
        if done > lo:
            yield lo, acc[:, : done - lo] / (row_counts[lo:done, None] * col_counts[None, :])
            acc, lo = acc[:, done - lo :], done


def pad_to_multiple(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """Symmetric padding ``(left, right, top, bottom)`` that makes a crop a multiple of the patch size."""
    ph = (-height) % multiple
    pw = (-width) % multiple
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2
