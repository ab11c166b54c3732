"""Trident's maths (Shi et al., ICCV 2025): sub-window features spliced into one map, aggregated by SAM's affinity.

Pure tensor functions, as the authors' code computes them (github.com/YuHengsss/Trident, commit a93b346,
``trident.py`` and ``custom_attn`` / ``guidance_attn`` / ``get_sam_sim`` of their ``open_clip/transformer.py``):

1. the image is resized so that its sides are multiples of CLIP's patch p and at least one window
   (:func:`clip_image_size`), and cut into windows (:func:`window_layout`, the baseline's layout);
2. each window gets ProxyCLIP's features (CLIP's last-block values mixed by a DINO proxy attention,
   :func:`proxy_weights`; the mean that sets its threshold is taken over all windows of the image at once,
   :func:`similarity_mean`, as their single batch does), before ``ln_post``;
3. the windows' features are spliced into one map of the image on CLIP's patch grid (times a ratio when DINO's grid
   is finer, :func:`splice_ratio`), overlaps averaged (:func:`splice_windows`);
4. SAM's image encoder runs on the whole image (longest side resized to its native size as SAM's predictor does:
   :func:`sam_input_size`, :func:`pil_resize`); its last (global) block's attention, each head's entries kept only where
   the cosine similarity of the two tokens' values exceeds a per-token threshold (:func:`sam_threshold`,
   :func:`refined_attention`), averaged over heads and row-normalised, is the affinity W (:func:`sam_affinity`);
5. the spliced map, resized bilinearly to SAM's grid, is aggregated by W (:func:`aggregate`); ``ln_post`` and the
   projection follow (in the encoder).

Notation: N tokens of SAM's valid grid (the part of its padded input covered by the image), H heads.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "aggregate",
    "clip_image_size",
    "pil_bilinear_matrix",
    "pil_resize",
    "proxy_weights",
    "refined_attention",
    "sam_affinity",
    "sam_input_size",
    "sam_threshold",
    "similarity_mean",
    "splice_ratio",
    "splice_windows",
    "window_layout",
]

_PRECISION_BITS = 22  # PIL's fixed-point precision of 8-bit resampling (32 - 8 - 2)


def clip_image_size(height: int, width: int, patch: int, crop: int) -> tuple[int, int]:
    """Size at which their code cuts the image into windows (their ``preprocess_image``).

    Unchanged when both sides are multiples of ``patch``; otherwise the long side goes up to the next multiple of
    ``patch``, the short side is scaled alike (truncated) and rounded up to a multiple, and each side is at least
    ``crop``.
    """
    if height % patch == 0 and width % patch == 0:
        return height, width
    longer = max(height, width)
    dst = longer if longer % patch == 0 else (longer // patch + 1) * patch
    new_h, new_w = int(height * dst / longer), int(width * dst / longer)
    new_h = new_h if new_h % patch == 0 else (new_h // patch + 1) * patch
    new_w = new_w if new_w % patch == 0 else (new_w // patch + 1) * patch
    return max(new_h, crop), max(new_w, crop)


def window_layout(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Window boxes ``(y1, y2, x1, x2)`` in row-major order, as Python ints (their ``get_windowed_imgs``, the same
    layout as :func:`alignclip.ops.windows.window_boxes`: the last window is shifted back inside the image)."""

    def axis(size: int) -> list[tuple[int, int]]:
        n = max(size - crop + stride - 1, 0) // stride + 1
        spans = []
        for i in range(n):
            end = min(i * stride + crop, size)
            spans.append((max(end - crop, 0), end))
        return spans

    return [(y1, y2, x1, x2) for y1, y2 in axis(height) for x1, x2 in axis(width)]


def similarity_mean(vfm_feats: torch.Tensor) -> torch.Tensor:
    """Mean of the cosine similarities ``F̂F̂ᵀ`` over all windows and all entries (their ``torch.mean(similarity)``
    over one batch holding every window of the image).

    Args:
        vfm_feats: ``[B, N, C]`` VFM patch features of all B windows.

    Returns:
        0-d tensor (float like ``vfm_feats``).
    """
    f = F.normalize(vfm_feats, dim=-1)
    return (f @ f.transpose(1, 2)).mean()


def proxy_weights(vfm_feats: torch.Tensor, mean: torch.Tensor, beta: float = 1.2, gamma: float = 3.0) -> torch.Tensor:
    """ProxyCLIP's proxy attention with a given mean: ``softmax(γ (S − β·mean))`` with entries below 0 masked.

    ``S = F̂F̂ᵀ`` per window; ``mean`` is :func:`similarity_mean` of the image's windows (a row whose entries are
    all masked is NaN, as in their code; the diagonal survives whenever ``β·mean < 1``).

    Args:
        vfm_feats: ``[B, N, C]`` VFM patch features.
        mean: 0-d tensor, the similarity mean.
        beta, gamma: the threshold multiplier and the scale.

    Returns:
        ``[B, N, N]`` attention weights (rows sum to 1).
    """
    f = F.normalize(vfm_feats, dim=-1)
    sim = (f @ f.transpose(1, 2) - mean * beta) * gamma
    return sim.masked_fill(sim < 0.0, float("-inf")).softmax(dim=-1)


def splice_ratio(vfm_grid: tuple[int, int], clip_grid: tuple[int, int]) -> int:
    """Cells of the spliced map per CLIP patch side (their ``guidance_attn``): DINO's grid over CLIP's when its width
    is a multiple of CLIP's, else the rounded ratio of the heights (the window features are then resized to
    ``clip_grid × ratio``)."""
    if vfm_grid[1] % clip_grid[1] == 0:
        return vfm_grid[1] // clip_grid[1]
    return max(1, int(round(vfm_grid[0] / clip_grid[0])))


def splice_windows(feats: torch.Tensor, boxes: list[tuple[int, int, int, int]], size: tuple[int, int]) -> torch.Tensor:
    """Window features placed at their boxes in one map, overlaps averaged (their ``dst_v / count_mat``).

    Args:
        feats: ``[n, C, h, w]`` features of the n windows, all the same grid.
        boxes: n boxes ``(y1, y2, x1, x2)`` in cells of the map (``y2 - y1 = h``, ``x2 - x1 = w``).
        size: ``(H, W)`` of the map; every cell must be covered.

    Returns:
        ``[1, C, H, W]``.
    """
    n, c, h, w = feats.shape
    dev = feats.device
    rows = torch.tensor([b[0] for b in boxes], device=dev)[:, None] + torch.arange(h, device=dev)  # [n, h]
    cols = torch.tensor([b[2] for b in boxes], device=dev)[:, None] + torch.arange(w, device=dev)  # [n, w]
    r, q = rows[:, :, None].expand(n, h, w), cols[:, None, :].expand(n, h, w)
    flat = (r * size[1] + q).reshape(-1)  # [n*h*w] cell index
    total = feats.new_zeros(c, size[0] * size[1])
    total.index_add_(1, flat, feats.permute(1, 0, 2, 3).reshape(c, -1))
    count = feats.new_zeros(size[0] * size[1]).index_add_(0, flat, feats.new_ones(flat.shape[0]))
    return (total / count).reshape(1, c, size[0], size[1])


def sam_input_size(height: int, width: int, target: int) -> tuple[int, int]:
    """SAM's predictor input size: the longest side scaled to ``target`` (``ResizeLongestSide.get_preprocess_shape``)."""
    scale = target * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def pil_bilinear_matrix(in_size: int, out_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[out, in]`` PIL's 8-bit bilinear resampling coefficients along one axis, in fixed point (integers, float64).

    As ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` of Pillow's ``Resample.c``: the triangle filter scaled by
    the reduction factor (at least 1), centred on ``(i + 0.5) · in/out``, normalised per output sample, times 2^22
    and rounded half up.
    """
    return _pil_bilinear_matrix(in_size, out_size).to(device)


@functools.lru_cache(maxsize=16)
@torch.inference_mode(False)  # a normal tensor even when first built under inference mode (it is cached)
def _pil_bilinear_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """The CPU matrix of :func:`pil_bilinear_matrix`, built once per pair of sizes (a constant of them)."""
    scale = in_size / out_size
    fscale = max(scale, 1.0)
    support = fscale  # bilinear support 1, times the filter scale
    mat = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):  # a constant of the two sizes (host, Python numbers only)
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        ws = [max(0.0, 1.0 - abs((j - center + 0.5) / fscale)) for j in range(lo, hi)]
        total = sum(ws)
        for j, wt in zip(range(lo, hi), ws, strict=True):
            k = wt / total if total else 0.0
            mat[i, j] = math.floor(k * (1 << _PRECISION_BITS) + 0.5)  # bilinear weights are >= 0
    return mat


def pil_resize(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pillow's ``Image.resize(size, BILINEAR)`` of an 8-bit image, exactly: one pass per axis, each rounded to 8 bits
    (torchvision's ``resize`` of a PIL image, which SAM's ``ResizeLongestSide`` uses).

    Args:
        pixels: ``[C, H, W]`` integer values 0-255 (any float dtype).
        size: ``(h, w)`` output size.

    Returns:
        ``[C, h, w]`` float32 integer values 0-255 (the input itself when the size is unchanged).
    """
    _, h, w = pixels.shape
    half = float(1 << (_PRECISION_BITS - 1))
    div = float(1 << _PRECISION_BITS)

    def horizontal(x: torch.Tensor) -> torch.Tensor:
        if size[1] == w:
            return x
        return torch.floor((x @ pil_bilinear_matrix(w, size[1], x.device).T + half) / div).clamp_(0, 255)

    def vertical(x: torch.Tensor) -> torch.Tensor:
        if size[0] == h:
            return x
        return torch.floor((pil_bilinear_matrix(h, size[0], x.device) @ x + half) / div).clamp_(0, 255)

    out = pixels.to(torch.float64)
    # Pillow (13) runs the horizontal pass first when enlarging (SAM's case: exact, see the tests); when the image
    # shrinks vertically more than horizontally it often runs the vertical one first: the rule below matches most such
    # cases, a few differ by one level
    vertical_first = size[0] < h and size[0] * w < size[1] * h
    out = horizontal(vertical(out)) if vertical_first else vertical(horizontal(out))
    return out.to(torch.float32)


def sam_threshold(values: torch.Tensor, cos_fac: float = 1.2, refine_neg_cos: bool = True) -> torch.Tensor:
    """Per-token threshold of their ``get_sam_sim``: ``cos_fac`` × the token's mean cosine similarity of values
    (over heads and all tokens), 0.6 where negative unless ``refine_neg_cos``, at most 0.9.

    Computed as ``v̂_m · mean_n v̂_n`` per head (the row mean of ``v̂v̂ᵀ`` without forming it).

    Args:
        values: ``[H, N, d]`` SAM's last-block values on the valid grid.

    Returns:
        ``[N, 1]``.
    """
    v = F.normalize(values, dim=-1)
    row_mean = (v @ v.mean(dim=1, keepdim=True).transpose(1, 2)).mean(dim=0)  # [N, 1]
    thresh = cos_fac * row_mean
    if not refine_neg_cos:
        thresh = torch.where(thresh < 0.0, torch.full_like(thresh, 0.6), thresh)
    return thresh.clamp(max=0.9)


def refined_attention(attn: torch.Tensor, values: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
    """One head's attention kept where the cosine similarity of the two tokens' values exceeds the query's threshold.

    Args:
        attn: ``[N, N]`` softmax attention of the head (rows: queries).
        values: ``[N, d]`` the head's values.
        thresh: ``[N, 1]`` (:func:`sam_threshold`).

    Returns:
        ``[N, N]`` (zeros elsewhere).
    """
    v = F.normalize(values, dim=-1)
    return torch.where(v @ v.T > thresh, attn, torch.zeros_like(attn))


def sam_affinity(
    attn: torch.Tensor | Callable[[int], torch.Tensor],
    values: torch.Tensor,
    cos_fac: float = 1.2,
    refine_neg_cos: bool = True,
) -> torch.Tensor:
    """The affinity W of their ``get_sam_sim``: :func:`refined_attention` of every head, averaged, rows normalised.

    Args:
        attn: ``[H, N, N]`` SAM's last-block attention on the valid grid (rows and columns cropped from the full grid,
            not renormalised), or ``head -> [N, N]`` giving one head at a time (peak memory of one head).
        values: ``[H, N, d]``.

    Returns:
        ``[N, N]``, rows summing to 1 (the diagonal is always kept: its similarity is 1 > the threshold ≤ 0.9).
    """
    heads = values.shape[0]
    head_attn = attn if callable(attn) else attn.__getitem__
    thresh = sam_threshold(values, cos_fac, refine_neg_cos)
    total = refined_attention(head_attn(0), values[0], thresh)
    for h in range(1, heads):  # one head at a time
        total = total + refined_attention(head_attn(h), values[h], thresh)
    total = total / heads
    return total / total.sum(dim=-1, keepdim=True)


def aggregate(weights: torch.Tensor, spliced: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The spliced map resized bilinearly to SAM's valid grid and aggregated by the affinity: ``W · X``.

    Args:
        weights: ``[N, N]`` (:func:`sam_affinity`), N = grid[0] · grid[1].
        spliced: ``[1, C, H, W]`` (:func:`splice_windows`).
        grid: SAM's valid grid ``(h, w)``.

    Returns:
        ``[N, C]`` (row-major over the grid).
    """
    x = F.interpolate(spliced, size=tuple(grid), mode="bilinear", align_corners=False)
    return weights.to(x.dtype) @ x.flatten(2)[0].T
