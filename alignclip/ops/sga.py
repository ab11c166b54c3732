"""Self-Guided Alignment (SGA, paper Sec. 3.2, Eq. 5-8): pure tensor functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError, InputError

__all__ = ["patch_logits", "self_guided_alignment"]


def self_guided_alignment(
    patch_feats: torch.Tensor,
    text_embeds: torch.Tensor,
    alpha: float,
    top_n: int = 1,
    normalize_prototypes: bool = True,
) -> torch.Tensor:
    """Align text embeddings with their most similar patches of the image itself (Eq. 5-7).

    For each text embedding t_k: cosine similarity with every patch (Eq. 5); the ``top_n`` most similar patches
    (Eq. 6 for ``top_n = 1``) are averaged into a visual prototype p_k (patches L2-normalised first, so that
    ``alpha`` balances two unit vectors; ``normalize_prototypes=False`` averages the raw patch tokens, as
    Algorithm 1 writes it, so the prototype's norm, of the order of 10 for CLIP, scales α's effect);
    ``t'_k = (1 - alpha) t_k + alpha p_k`` (Eq. 7), then L2-normalised. The aligned embeddings replace T in the
    logits (Eq. 8).

    Args:
        patch_feats: ``[..., N, D]`` patch features (any norm; a leading batch shape is allowed).
        text_embeds: ``[K, D]`` or ``[..., K, D]`` text embeddings (L2-normalised or not).
        alpha: balance ratio in [0, 1]; 0 returns the normalised text embeddings unchanged.
        top_n: number of most similar patches averaged into the prototype (paper Fig. 4; default 1).
        normalize_prototypes: L2-normalise the patches before averaging (False: raw tokens, Algorithm 1).

    Returns:
        ``[..., K, D]`` aligned, L2-normalised text embeddings.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"alpha={alpha} is outside [0, 1]; SGA's balance ratio must be in [0, 1] (e.g. 0.3)")
    n = patch_feats.shape[-2]
    if patch_feats.shape[-1] != text_embeds.shape[-1]:
        raise InputError(f"patch_feats dim {patch_feats.shape[-1]} != text_embeds dim {text_embeds.shape[-1]}")
    if not 1 <= top_n <= n:
        raise ConfigError(f"top_n={top_n} must be between 1 and the number of patches N={n}")
    raw = patch_feats.float()
    p = F.normalize(raw, dim=-1)
    t = F.normalize(text_embeds.float(), dim=-1)
    sim = t @ p.transpose(-1, -2)  # [..., K, N], Eq. 5 (cosine: the ranking is the same for raw tokens)
    if not normalize_prototypes:
        p = raw
    idx = sim.topk(top_n, dim=-1).indices  # [..., K, top_n], Eq. 6
    batch_shape = torch.broadcast_shapes(p.shape[:-2], idx.shape[:-2])
    p = p.expand(*batch_shape, *p.shape[-2:])
    idx = idx.expand(*batch_shape, *idx.shape[-2:])
    k = idx.shape[-2]
    gathered = torch.gather(p, -2, idx.reshape(*batch_shape, k * top_n, 1).expand(*batch_shape, k * top_n, p.shape[-1]))
    proto = gathered.reshape(*batch_shape, k, top_n, p.shape[-1]).mean(dim=-2)
    aligned = (1.0 - alpha) * t + alpha * proto  # Eq. 7
    return F.normalize(aligned, dim=-1)


def patch_logits(patch_feats: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Eq. 8: ``S' = sim(P, T')``, the cosine similarity of every patch with every (aligned) text embedding.

    Args:
        patch_feats: ``[B, D, h, w]`` patch features P (any norm).
        text_embeds: ``[B, Q, D]`` text embeddings per window (T' from :func:`self_guided_alignment`, or T), assumed
            L2-normalised as both functions that produce them return them.

    Returns:
        ``[B, Q, h, w]`` patch logits.
    """
    if patch_feats.shape[1] != text_embeds.shape[-1]:
        raise InputError(f"patch_feats dim {patch_feats.shape[1]} != text_embeds dim {text_embeds.shape[-1]}")
    return torch.einsum("bdhw,bqd->bqhw", F.normalize(patch_feats, dim=1), text_embeds)
