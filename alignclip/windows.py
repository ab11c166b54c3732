"""Sliding-window layout, extraction and count-averaged accumulation (the baseline's ``slide`` inference).

All windows of an image have the same size ``(min(crop, H), min(crop, W))``, so they are gathered into one batch
with advanced indexing and scattered back with ``index_put_(accumulate=True)``: no Python loop over windows.
"""

from __future__ import annotations

import torch

from .errors import ConfigError


def window_boxes(height: int, width: int, crop: int = 224, stride: int = 112) -> torch.Tensor:
    """Window boxes ``[n, 4]`` as ``(y1, y2, x1, x2)`` exactly as the baseline lays them out.

    Rows/columns of windows: ``max(size - crop + stride - 1, 0) // stride + 1``; window i starts at ``i * stride``,
    ends at ``min(start + crop, size)`` and is clamped back inside the image (``start = max(end - crop, 0)``), so the
    last window is shifted back rather than padded. Order: row-major.
    """
    if crop <= 0 or stride <= 0:
        raise ConfigError(f"crop={crop} and stride={stride} must be positive")
    if stride > crop:
        raise ConfigError(f"stride={stride} > crop={crop} would leave pixels uncovered; use stride <= crop")

    def starts_ends(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(size - crop + stride - 1, 0) // stride + 1
        start = torch.arange(n) * stride
        end = torch.clamp(start + crop, max=size)
        start = torch.clamp(end - crop, min=0)
        return start, end

    y1, y2 = starts_ends(height)
    x1, x2 = starts_ends(width)
    gy, gx = torch.meshgrid(torch.arange(len(y1)), torch.arange(len(x1)), indexing="ij")
    gy, gx = gy.reshape(-1), gx.reshape(-1)
    return torch.stack([y1[gy], y2[gy], x1[gx], x2[gx]], dim=1)


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
    out.index_put_((kk, rows[:, None, :, None], cols[:, None, None, :]), window_logits.to(out.dtype),
                   accumulate=True)


def window_counts(height: int, width: int, boxes: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[H, W]`` number of windows covering each pixel (the baseline's count map)."""
    counts = torch.zeros(1, height, width, device=device)
    h, w = _box_hw(boxes)
    accumulate_windows(counts, torch.ones(len(boxes), 1, h, w, device=device), boxes)
    return counts[0]


def pad_to_multiple(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """Symmetric padding ``(left, right, top, bottom)`` that makes a crop a multiple of the patch size."""
    ph = (-height) % multiple
    pw = (-width) % multiple
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2
