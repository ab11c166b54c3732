"""Bilinear resize of a strip of output rows, identical to ``F.interpolate(mode='bilinear', align_corners=False)``.

Used for the final resize of logits to the input size so that only ``rows × W0`` values exist at a time.
"""

from __future__ import annotations

import torch

__all__ = ["bilinear_rows"]


def _source_index(out_size: int, in_size: int, start: int, stop: int, device) -> tuple[torch.Tensor, ...]:
    scale = in_size / out_size
    dst = torch.arange(start, stop, device=device, dtype=torch.float32)
    src = ((dst + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    lam = src - i0.float()
    return i0, i1, lam


def bilinear_rows(x: torch.Tensor, out_hw: tuple[int, int], row_start: int, row_stop: int) -> torch.Tensor:
    """Rows ``row_start:row_stop`` of the bilinear resize of ``x [C, H, W]`` to ``out_hw``.

    Returns:
        ``[C, row_stop - row_start, W_out]``.
    """
    c, h, w = x.shape
    y0, y1, ly = _source_index(out_hw[0], h, row_start, row_stop, x.device)
    x0, x1, lx = _source_index(out_hw[1], w, 0, out_hw[1], x.device)
    ly = ly.view(1, -1, 1).to(x.dtype)
    rows = x[:, y0] * (1 - ly) + x[:, y1] * ly  # [C, r, W]
    lx = lx.view(1, 1, -1).to(x.dtype)
    return rows[:, :, x0] * (1 - lx) + rows[:, :, x1] * lx
