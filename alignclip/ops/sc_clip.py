"""SC-CLIP's tensor maths (Bai et al., 2024, "Self-Calibrated CLIP for Training-Free Open-Vocabulary Segmentation").

Pure functions transcribing the authors' ``clip/model.py`` (``lof_pytorch``, ``mean_interpolation``,
``adaptively_aggregate``, ``custom_attn``), batched over windows: the authors run one window at a time, these take
``B`` windows at once with the same result per window. Equation numbers are the SC-CLIP paper's (arXiv 2411.15869).

- :func:`lof_scores` / :func:`anomaly_mask`: anomaly tokens as the patches whose local outlier factor exceeds its
  ``1 - contamination`` quantile (Sec. 3.2, "resolving anomaly tokens");
- :func:`interpolate_anomalies`: each anomaly replaced by the mean of its valid 3x3 neighbours (Eq. 4);
- :func:`feature_similarity` / :func:`aggregate`: cosine similarity of an intermediate layer's features, thresholded
  and row-normalised, used to aggregate tokens (Eq. 5, "self-adjusting");
- :func:`sc_attention`: the last block's attention, the mean of a softmax over the centred mid-layer similarity and
  the k-k softmax (Eq. 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "aggregate",
    "anomaly_mask",
    "feature_similarity",
    "interpolate_anomalies",
    "lof_scores",
    "sc_attention",
]


def lof_scores(feats: torch.Tensor, n_neighbors: int = 30) -> torch.Tensor:
    """Local outlier factor of every token among the tokens of its window, as the authors' ``lof_pytorch``.

    With ``d`` the squared Euclidean distance, ``kNN(i)`` the ``k`` nearest other tokens and ``d_k(i)`` the distance to
    the k-th of them: ``reach(i, j) = max(d(i, j), d_k(i))``, ``lrd(i) = k / mean_j reach(i, j)`` and
    ``LOF(i) = mean_{j ∈ kNN(i)} lrd(j) / lrd(i)``. (The authors' reachability uses the query's own k-distance, not
    the neighbour's as in Breunig et al., and squared distances; this follows their code.)

    Args:
        feats: ``[B, N, C]`` patch tokens of each window.
        n_neighbors: k (clipped to ``N - 1``).

    Returns:
        ``[B, N]`` LOF scores (large: anomalous).
    """
    n = feats.shape[1]
    k = min(n_neighbors, n - 1)
    x = feats.float()
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") ** 2  # [B, N, N]
    knn_dist, knn_idx = torch.topk(dist, k=k + 1, dim=-1, largest=False)
    knn_dist, knn_idx = knn_dist[..., 1:], knn_idx[..., 1:]  # drop the token itself
    k_dist = knn_dist[..., -1:].expand_as(knn_dist)
    reach = torch.max(knn_dist, k_dist)
    lrd = k / torch.nan_to_num(reach.mean(dim=-1), nan=1e-6)  # [B, N]
    ratios = lrd.gather(1, knn_idx.flatten(1)).view_as(knn_idx) / lrd.unsqueeze(-1)
    return ratios.mean(dim=-1)


def anomaly_mask(scores: torch.Tensor, contamination: float = 0.05) -> torch.Tensor:
    """``[B, N]`` bool: scores above their window's ``1 - contamination`` quantile (linear interpolation)."""
    threshold = torch.quantile(scores.float(), 1 - contamination, dim=-1, keepdim=True)
    return scores > threshold


def interpolate_anomalies(feature_map: torch.Tensor, anomalies: torch.Tensor) -> torch.Tensor:
    """Eq. 4: each anomalous token becomes the mean of its non-anomalous 3x3 neighbours (zero padding outside the
    grid); an anomaly without such a neighbour is kept. The authors' ``mean_interpolation``, one mask per window.

    Args:
        feature_map: ``[B, C, H, W]``.
        anomalies: ``[B, H, W]`` bool.

    Returns:
        ``[B, C, H, W]``.
    """
    c = feature_map.shape[1]
    dtype = feature_map.dtype
    kernel = torch.ones(c, 1, 3, 3, device=feature_map.device, dtype=dtype)
    kernel[:, 0, 1, 1] = 0
    bad = anomalies.to(dtype).unsqueeze(1)  # [B, 1, H, W]
    mask = 1 - bad
    neighbour_sum = F.conv2d(F.pad(feature_map * mask, (1, 1, 1, 1)), kernel, groups=c)
    valid = F.conv2d(F.pad(mask, (1, 1, 1, 1)), kernel[:1])  # valid neighbours per position
    mean_neighbours = neighbour_sum / torch.where(valid == 0, torch.ones_like(valid), valid)
    update = bad * (valid > 0).to(dtype)
    return feature_map * (1 - update) + mean_neighbours * update


def feature_similarity(feats: torch.Tensor) -> torch.Tensor:
    """``[B, N, C]`` → ``[B, N, N]`` cosine similarity of the L2-normalised tokens."""
    f = feats / feats.norm(dim=-1, keepdim=True)
    return f @ f.transpose(1, 2)


def aggregate(tokens: torch.Tensor, similarity: torch.Tensor, threshold: float = 0.4) -> torch.Tensor:
    """Eq. 5: ``Norm(S ⊙ [S >= threshold]) X``, rows normalised by their sum (+ 1e-6); the authors'
    ``adaptively_aggregate`` after zeroing the similarities below ``beta``.

    Args:
        tokens: ``[B, N, C]``.
        similarity: ``[B, N, N]``.
        threshold: the authors' ``beta`` (0.4).
    """
    s = torch.where(similarity < threshold, torch.zeros_like(similarity), similarity)
    s = s / (s.sum(dim=-1, keepdim=True) + 1e-6)
    return s @ tokens


def sc_attention(k: torch.Tensor, v: torch.Tensor, similarity: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """Eq. 6, the last block's attention (the authors' ``custom_attn``; the queries are not used).

    ``W = [softmax(M) + softmax(k kᵀ d^-1/2)] / 2`` with ``M = temperature · (S - mean(S))`` and ``M = -inf`` where it
    is negative (the mean is over the window's whole ``N x N`` similarity); output ``W v``.

    Args:
        k, v: ``[B, H, N, d]`` per-head keys and values (patch tokens only).
        similarity: ``[B, N, N]`` the mid-layer feature similarity S, shared by the heads.
        temperature: the authors' 3.0.

    Returns:
        ``[B, H, N, d]`` before ``out_proj``.
    """
    scale = k.shape[-1] ** -0.5
    m = (similarity - similarity.mean(dim=(-2, -1), keepdim=True)) * temperature
    m = m.masked_fill(m < 0.0, float("-inf"))
    weights = F.softmax(m, dim=-1).unsqueeze(1)  # [B, 1, N, N]
    weights = weights + F.softmax(torch.matmul(k, k.transpose(-2, -1)) * scale, dim=-1)
    weights = weights / 2
    return torch.matmul(weights, v)
