"""ResCLIP's tensor maths (Yang et al., CVPR 2025, arXiv 2411.15851): RCS, SFR and the first pass's PAMR.

Equation numbers are the ResCLIP paper's; every constant follows the authors' code (github:yvhangyang/ResCLIP,
``clip/model.py`` and ``pamr.py``), whose deviations from the paper's text are noted where they matter:

- RCS (Eq. 5-6): the cross-correlation (q kᵀ) attention maps of middle blocks, averaged (:func:`cross_correlation`),
  mixed into the last block's self-correlation attention *after* its softmax, scaled by τ_rcs
  (:func:`resclip_attention`);
- SFR (Eq. 7-9): a first pass's label map per patch (:func:`patch_labels`), the same-label matrix decayed with the
  distance where the straight path leaves the label (:func:`straight_path_valid`, :func:`sfr_attention`), smoothed
  by a 1-D Gaussian along each row and row-normalised, then mixed into the last block's k kᵀ logits *before* the
  softmax, scaled by τ_sfr;
- :func:`pamr`: PAMR (Araslanov & Roth, CVPR 2020) as the authors' ``pamr.py`` runs it on the first pass's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "PAMR_DILATIONS",
    "cross_correlation",
    "pamr",
    "patch_labels",
    "resclip_attention",
    "sfr_attention",
    "straight_path_valid",
]

#: Dilations of the first pass's PAMR (the authors' ``PAMR(10, dilations=(8, 16))``).
PAMR_DILATIONS: tuple[int, ...] = (8, 16)


def cross_correlation(maps: list[torch.Tensor]) -> torch.Tensor:
    """A_c of Eq. 5: the mean of middle blocks' cross-correlation attention maps.

    Args:
        maps: each ``[B, H, N, N]`` ``softmax(q kᵀ / sqrt(d))`` of one block (the authors': blocks 6-9).

    Returns:
        ``[B, H, N, N]``.
    """
    return torch.stack(maps).mean(dim=0)


def resclip_attention(
    k: torch.Tensor,
    bias: torch.Tensor,
    rcs: torch.Tensor | None = None,
    rcs_weights: tuple[float, float] = (2.0, 0.2),
    sfr: torch.Tensor | None = None,
    sfr_weights: tuple[float, float] = (2.1, 0.6),
    sfr_fp16: bool = True,
) -> torch.Tensor:
    """The last block's attention weights with RCS and SFR (Eq. 6 and 9, in the authors' code's order).

    ``S = k kᵀ / sqrt(d)``; with SFR ``S = τ_sfr ((1 - λ_sfr) S + λ_sfr A_sfr / max A_sfr)``; ``A = softmax(S + G)``
    (G: NACLIP's Gaussian bias); with RCS ``A = τ_rcs ((1 - λ_rcs) A + λ_rcs A_c)``. The rows of A then sum to τ_rcs.

    Args:
        k: ``[B, H, N, d]`` keys of the last block.
        bias: ``[N, N]`` G (:func:`alignclip.ops.attention.naclip_bias`).
        rcs: ``[B, H, N, N]`` A_c (:func:`cross_correlation`) or None (no RCS).
        rcs_weights: ``(τ_rcs, λ_rcs)``.
        sfr: ``[B, N, N]`` A_sfr (:func:`sfr_attention`), shared by the heads, or None (no SFR).
        sfr_weights: ``(τ_sfr, λ_sfr)``.
        sfr_fp16: round A_sfr / max A_sfr to float16 as the authors' code does (``attn_sfr.to(torch.float16)``).

    Returns:
        ``[B, H, N, N]`` attention weights (not a distribution when τ_rcs != 1).
    """
    s = torch.matmul(k, k.transpose(-1, -2)) * k.shape[-1] ** -0.5
    if sfr is not None:
        tau, lam = sfr_weights
        a_sfr = sfr / sfr.amax(dim=(-1, -2), keepdim=True)  # the max of each window's matrix
        if sfr_fp16:
            a_sfr = a_sfr.half()
        s = tau * ((1 - lam) * s + lam * a_sfr.to(s.dtype).unsqueeze(1))
    a = torch.softmax(s + bias.to(s.dtype), dim=-1)
    if rcs is not None:
        tau, lam = rcs_weights
        a = tau * ((1 - lam) * a + lam * rcs.to(a.dtype))
    return a


def pamr(
    image: torch.Tensor, mask: torch.Tensor, iters: int = 10, dilations: tuple[int, ...] = PAMR_DILATIONS
) -> torch.Tensor:
    """Pixel-adaptive mask refinement: ``iters`` propagations of ``mask`` over image-affinity neighbourhoods.

    The affinity of pixel i to its 8 neighbours j at every dilation is ``softmax_j(mean_c(-|I_i - I_j| / (1e-8 +
    0.1 σ_i)))`` over all 8 x len(dilations) neighbours (σ_i: per channel, the standard deviation of I over i's
    3x3 neighbourhoods of all dilations together, the centre once per dilation; replicate padding), and each
    iteration replaces ``mask_i`` by ``Σ_j a_ij mask_j``.

    Args:
        image: ``[B, 3, H, W]`` (the authors pass the CLIP-normalised window).
        mask: ``[B, Q, H, W]`` logits at the image's size.

    Returns:
        ``[B, Q, H, W]``.
    """
    b, c, h, w = image.shape
    pad = max(dilations)  # replicate padding by the largest dilation serves every dilation (clamped indices)
    # the 3x3 neighbourhood in the authors' kernel order (row-major); the centre is index 4
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    ring = [(d * dy, d * dx) for d in dilations for i, (dy, dx) in enumerate(offsets) if i != 4]  # 8 nd neighbours

    def at(padded: torch.Tensor, dy: int, dx: int) -> torch.Tensor:  # the padded map shifted by (dy, dx)
        return padded[:, :, pad + dy : pad + dy + h, pad + dx : pad + dx + w]

    img = F.pad(image, [pad] * 4, mode="replicate")
    centre_ring = [(d * dy, d * dx) for d in dilations for dy, dx in offsets]  # 9 per dilation, centre included
    std = torch.stack([at(img, dy, dx) for dy, dx in centre_ring], 2).std(dim=2)  # [B, 3, H, W] (unbiased)
    diff = torch.stack([(image - at(img, dy, dx)).abs() for dy, dx in ring], 2)  # [B, 3, 8 nd, H, W]
    aff = torch.softmax((-diff / (1e-8 + 0.1 * std.unsqueeze(2))).mean(1), dim=1)  # [B, 8 nd, H, W]
    for _ in range(iters):
        padded = F.pad(mask, [pad] * 4, mode="replicate")
        out = torch.zeros_like(mask)
        for n, (dy, dx) in enumerate(ring):
            out = out + at(padded, dy, dx) * aff[:, n : n + 1]
        mask = out
    return mask


def patch_labels(probs: torch.Tensor, threshold: float, patch_size: int) -> torch.Tensor:
    """The first pass's label per patch (SFR's segmentation map M).

    Each pixel takes its most probable query, query 0 where that probability is below ``threshold`` (the authors'
    ``temp_thd``); each patch takes the most frequent pixel label (``torch.mode``) of its ``patch_size²`` pixels.

    Args:
        probs: ``[B, Q, H, W]`` softmax probabilities over the queries, H and W multiples of ``patch_size``.

    Returns:
        ``[B, h, w]`` int64 query indices.
    """
    best, labels = probs.max(dim=1)  # [B, H, W]
    labels = torch.where(best < threshold, torch.zeros_like(labels), labels)
    b, hh, ww = labels.shape
    p = patch_size
    blocks = labels.view(b, hh // p, p, ww // p, p).permute(0, 1, 3, 2, 4).reshape(b, hh // p, ww // p, p * p)
    return torch.mode(blocks, dim=-1).values


def straight_path_valid(labels: torch.Tensor) -> torch.Tensor:
    """Whether the sampled straight path from patch i towards patch j keeps i's label (the authors' ``check_path``).

    For the pair (i, j) with Chebyshev distance s and the grid's largest distance M = max(h, w) - 1, the points
    ``round(p_i (1 - t) + p_j t)`` for ``t = 0, 1/M, ..., s/M`` must all carry i's label. (As in the authors' code the
    step is 1/M for every pair, so for s < M only the first s/M of the segment is checked.)

    Args:
        labels: ``[B, h, w]`` patch labels.

    Returns:
        ``[B, h w, h w]`` bool.
    """
    b, h, w = labels.shape
    n = h * w
    idx = torch.arange(n, device=labels.device)
    i, j = torch.meshgrid(idx, idx, indexing="ij")
    start = torch.stack((i // w, i % w), dim=-1).view(-1, 2)  # [n², 2] (row, col)
    end = torch.stack((j // w, j % w), dim=-1).view(-1, 2)
    steps = (end - start).abs().amax(dim=1)  # [n²]
    max_steps = max(h, w) - 1  # = steps.max() on a full grid (no host read)
    t = torch.linspace(0, 1, steps=max_steps + 1, device=labels.device).view(1, -1, 1)
    coords = (start.unsqueeze(1) * (1 - t) + end.unsqueeze(1) * t).round().long()  # [n², M + 1, 2]
    on_path = torch.arange(max_steps + 1, device=labels.device).unsqueeze(0) <= steps.unsqueeze(1)  # [n², M + 1]
    flat = labels.reshape(b, n)
    along = flat[:, coords[..., 0] * w + coords[..., 1]]  # [B, n², M + 1]
    start_label = flat[:, start[:, 0] * w + start[:, 1]].unsqueeze(-1)  # [B, n², 1]
    return ((along == start_label) | ~on_path).all(dim=-1).view(b, n, n)


def sfr_attention(
    labels: torch.Tensor, std: float = 5.0, delete_same_entity: bool = True, num_prefix_tokens: int = 1
) -> torch.Tensor:
    """A_sfr of Eq. 7-8 from patch labels (the authors' ``generate_attention_sfr``).

    ``R_ij = 1`` where patches i and j share a label (and on the diagonal), else 0; with ``delete_same_entity`` the
    pairs whose straight path leaves the label (:func:`straight_path_valid`) are decayed by ``exp(-s_ij / M)`` (s:
    Chebyshev distance in patches, M its largest value). Each row is then convolved with a normalised 1-D Gaussian
    (std ``std``, ``min(N, int(6 std + 1))`` taps made odd, zero padding) along the flattened patch index, clamped at 0
    and divided by its sum (+1e-8). The prefix (CLS) rows and columns are 0.

    Args:
        labels: ``[B, h, w]`` patch labels (:func:`patch_labels`).

    Returns:
        ``[B, L, L]`` with ``L = num_prefix_tokens + h w``.
    """
    b, h, w = labels.shape
    n = h * w
    flat = labels.reshape(b, n)
    same = (flat.unsqueeze(2) == flat.unsqueeze(1)).float()  # [B, n, n]
    same = same.masked_fill(torch.eye(n, dtype=torch.bool, device=labels.device), 1.0)
    if delete_same_entity:
        idx = torch.arange(n, device=labels.device)
        rows, cols = idx // w, idx % w
        steps = torch.maximum((rows[None] - rows[:, None]).abs(), (cols[None] - cols[:, None]).abs())  # [n, n]
        decay = torch.exp(-steps / max(max(h, w) - 1, 1))
        same = torch.where(straight_path_valid(labels), same, same * decay)
    size = min(n, int(6 * std + 1))
    size = size if size % 2 == 1 else size + 1
    x = torch.arange(size, device=labels.device) - size // 2
    kernel = torch.exp(-(x**2) / (2 * std**2))
    kernel = kernel / kernel.sum()
    blurred = F.conv1d(same.reshape(b * n, 1, n), kernel.view(1, 1, -1), padding=size // 2).view(b, n, n)
    blurred = F.relu(blurred)
    blurred = blurred / (blurred.sum(dim=-1, keepdim=True) + 1e-8)
    return F.pad(blurred, (num_prefix_tokens, 0, num_prefix_tokens, 0))
