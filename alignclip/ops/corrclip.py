"""CorrCLIP's correlation reconstruction (Zhang et al., ICCV 2025), as pure tensor functions.

Notation of the authors' code (github.com/zdk258/CorrCLIP, ``CorrCLIPv1/open_clip/transformer.py``'s
``VisionTransformer.forward`` and ``corrclip_segmentor.py``): per window, a label map of class-agnostic regions
(SAM 2 masks; the smallest label of the window is its "unsegmented" region, normally 0), DINO's patch features F
(``q + k`` of its last block, L2-normalised) on the DINO grid (N patches), CLIP's tokens on its own grid.

- :func:`dense_labels`: the window's labels ranked densely (0 = the smallest label), as ``torch.unique``'s order;
- :func:`merge_regions`: "mask merging": the regions other than the first whose mean DINO features lie within
  ``eps`` (distance ``max(S) − S`` of their cosine similarities S) are joined, transitively, as their DBSCAN with
  ``min_samples=1`` (every point a core point: the clusters are the connected components of the ``≤ eps`` graph);
- :func:`scope_mask` and :func:`correlation_weights`: "scope reconstruction": patch i may attend to j when both lie
  in the same (merged) region other than the first, or when either lies in the first and ``S_ij > mean(S)``;
  the weights are ``softmax(τ S)`` over the allowed pairs;
- :func:`region_token_mask` / :func:`region_tokens_to_patches`: the semantic branch's per-region class tokens (each
  attends to CLIP's CLS token and its region's patches) and their broadcast back to the patches of their region;
- :func:`majority_vote`: "map correction": every pixel of a region (the smallest label excepted) takes the region's
  most frequent class.

Everything is vectorised over windows and regions: regions live in ``S`` static slots (no data-dependent shapes);
labels ranked at or beyond ``S - 1`` share the last slot.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "apply_vote",
    "correlation_weights",
    "dense_labels",
    "majority_vote",
    "merge_regions",
    "nearest_index",
    "region_token_mask",
    "region_tokens_to_patches",
    "scope_mask",
    "spatial_layer_count",
    "spatial_range",
    "vote_counts",
]


def spatial_layer_count(depth: int) -> int:
    """Blocks averaged by the spatial branch for a ViT of ``depth`` blocks (their NUM_SPATIAL: 12 → 5, 24 → 12,
    32 → 28, else depth − 4)."""
    return {12: 5, 24: 12, 32: 28}.get(depth, depth - 4)


def spatial_range(depth: int, count: int) -> tuple[int, int]:
    """0-based block indices ``[lo, hi]`` whose outputs the spatial branch averages: theirs is
    ``depth − 2 − count ≤ i ≤ depth − 3`` (12 blocks, 5: blocks 6-10 in 1-based terms; block L-1's output, the last
    block's input, is not among them), clamped to the first block for ViTs too shallow for it (the tiny test CLIP)."""
    hi = max(depth - 3, 0)
    return max(0, min(hi, depth - 2 - count)), hi


def dense_labels(labels: torch.Tensor, slots: int) -> torch.Tensor:
    """Rank of each entry's label among its window's distinct labels (0: the smallest), clamped to ``slots − 1``.

    Args:
        labels: ``[B, N]`` integer labels.
        slots: the static number of region slots S.

    Returns:
        ``[B, N]`` int64 in ``[0, S)``, in the order of ``torch.unique`` per window.
    """
    order = labels.argsort(dim=1, stable=True)
    ordered = labels.gather(1, order)
    step = torch.zeros_like(ordered, dtype=torch.int64)
    step[:, 1:] = (ordered[:, 1:] != ordered[:, :-1]).long()
    rank = step.cumsum(dim=1).clamp(max=slots - 1)
    return torch.empty_like(rank).scatter_(1, order, rank)


def _one_hot(ids: torch.Tensor, slots: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, S, N]`` membership of ``[B, N]`` slot ids."""
    return F.one_hot(ids, slots).to(dtype).transpose(1, 2)


def merge_regions(ids: torch.Tensor, feats: torch.Tensor, slots: int, eps: float = 0.2) -> torch.Tensor:
    """Their mask merging (DBSCAN, ``min_samples=1``, precomputed distance ``max(S) − S``) of dense region ids.

    Region 0 (the window's smallest label) is left alone; the other non-empty regions are joined when connected by
    a chain of pairs at distance ``≤ eps``, where S holds the cosine similarities of the regions' mean features
    and ``max(S)`` is taken over all pairs of those regions (the diagonal included).

    Args:
        ids: ``[B, N]`` dense ids (:func:`dense_labels`).
        feats: ``[B, N, C]`` patch features (their DINO ``q + k``, L2-normalised).
        slots: S.
        eps: DBSCAN's radius (their EPS: 0.2).

    Returns:
        ``[B, N]`` merged ids in ``[0, S)``: 0 stays 0, a merged group takes its smallest id.
    """
    onehot = _one_hot(ids, slots, feats.dtype)  # [B, S, N]
    count = onehot.sum(-1)  # [B, S]
    mean = (onehot @ feats) / count.clamp(min=1)[..., None]
    unit = F.normalize(mean, dim=-1)
    sim = unit @ unit.transpose(1, 2)  # [B, S, S]
    valid = count > 0
    valid[:, 0] = False
    pair = valid[:, :, None] & valid[:, None, :]
    top = sim.masked_fill(~pair, float("-inf")).amax(dim=(1, 2), keepdim=True)
    reach = (((top - sim) <= eps) & pair) | torch.eye(slots, dtype=torch.bool, device=ids.device)
    for _ in range(max(1, math.ceil(math.log2(slots)))):  # transitive closure by squaring (log2 S products)
        reach = (reach.to(feats.dtype) @ reach.to(feats.dtype)) > 0
    root = reach.to(torch.uint8).argmax(dim=2)  # [B, S]: the smallest slot reachable (itself at most)
    return root.gather(1, ids)


def scope_mask(ids: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
    """Their scope reconstruction: ``[B, N, N]`` pairs a patch may attend to.

    ``(id_i == id_j and id_i != 0) or ((id_i == 0 or id_j == 0) and S_ij > mean(S))``, the mean over the window's N².
    """
    same = (ids[:, :, None] == ids[:, None, :]) & (ids[:, :, None] != 0)
    first = ids == 0
    loose = (first[:, :, None] | first[:, None, :]) & (sim > sim.mean(dim=(1, 2), keepdim=True))
    return same | loose


def correlation_weights(sim: torch.Tensor, allowed: torch.Tensor, tau: float = 4.0) -> torch.Tensor:
    """``softmax(τ S)`` over the allowed pairs (their TAU: 4): ``[B, N, N]``."""
    return (sim.masked_fill(~allowed, float("-inf")) * tau).softmax(dim=-1)


def region_token_mask(ids: torch.Tensor, slots: int) -> torch.Tensor:
    """Keys each region's class token attends to: ``[B, S, 1 + n]`` (CLIP's CLS token and the region's patches).

    Args:
        ids: ``[B, n]`` region ids on CLIP's patch grid.
    """
    member = _one_hot(ids, slots, torch.float32) > 0  # [B, S, n]
    cls = torch.ones_like(member[:, :, :1])
    return torch.cat([cls, member], dim=2)


def region_tokens_to_patches(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Each patch takes its region's token: ``[B, S, C]`` tokens, ``[B, N]`` ids → ``[B, N, C]``."""
    return tokens.gather(1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


def nearest_index(out_size: int, in_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Source index ``[out_size]`` of each output row (or column) of ``F.interpolate(mode="nearest")``:
    ``min(floor(i · in/out), in − 1)`` in float32, as PyTorch computes it."""
    if out_size == in_size:
        return torch.arange(out_size, device=device)
    scale = torch.tensor(in_size / out_size, dtype=torch.float32, device=device)
    src = (torch.arange(out_size, device=device, dtype=torch.float32) * scale).floor().long()
    return src.clamp(max=in_size - 1)


def vote_counts(pred: torch.Tensor, ids: torch.Tensor, num_regions: int, num_classes: int) -> torch.Tensor:
    """``[R, K]`` pixels of each class in each region (``pred`` and ``ids`` of the same shape; summable over strips)."""
    counts = torch.zeros(num_regions * num_classes, dtype=torch.int64, device=pred.device)
    flat = ids.reshape(-1) * num_classes + pred.reshape(-1).long()
    counts.index_add_(0, flat, torch.ones_like(flat))
    return counts.view(num_regions, num_classes)


def apply_vote(pred: torch.Tensor, ids: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each pixel of region ``ids > 0`` takes its region's most frequent class (ties: the smallest index); region 0
    (the smallest label) keeps ``pred``."""
    mode = counts.argmax(dim=1).to(pred.dtype)
    return torch.where(ids == 0, pred, mode[ids])


def majority_vote(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Their map correction: every region but the smallest label's takes its most frequent class.

    Ties go to the smallest class index.

    Args:
        pred: ``[H, W]`` class indices in ``[0, num_classes)``.
        labels: ``[H, W]`` region labels (any integers; the smallest is left as predicted).
        num_classes: K.

    Returns:
        ``[H, W]`` corrected class indices (dtype of ``pred``).
    """
    values, ids = torch.unique(labels, return_inverse=True)
    return apply_vote(pred, ids, vote_counts(pred, ids, len(values), num_classes))
