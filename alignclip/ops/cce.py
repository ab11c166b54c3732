"""Cluster-Constrained Enhancement (CCE, paper Sec. 3.3-3.4, Eq. 10-14): pure tensor functions.

The clustering itself (Eq. 9) is :func:`alignclip.ops.kmeans.kmeans`; the VFM that provides features and attention is
:mod:`alignclip.models.vfm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError, InputError

__all__ = [
    "AFFINITIES",
    "cluster_mask",
    "cosine_affinity",
    "fuse_logits",
    "product_affinity",
    "propagate_within_clusters",
    "vfm_input_size",
]

#: Affinities A of Eq. 11: the VFM's last-layer ``attention`` (Sec. 3.3), the ``cosine`` similarity of its features
#: (negatives clamped), or their raw ``product`` F Fᵀ (Algorithm 2 as written).
AFFINITIES: tuple[str, ...] = ("attention", "cosine", "product")


def cluster_mask(cluster_ids: torch.Tensor) -> torch.Tensor:
    """Binary mask M of Eq. 10: ``M[i, j] = 1`` iff patches i and j are in the same cluster.

    Args:
        cluster_ids: ``[..., N]`` integer cluster assignment.

    Returns:
        ``[..., N, N]`` boolean mask.
    """
    return cluster_ids.unsqueeze(-1) == cluster_ids.unsqueeze(-2)


def propagate_within_clusters(
    affinity: torch.Tensor, cluster_ids: torch.Tensor, logits: torch.Tensor, eps: float = 1e-12, power: float = 1.0
) -> torch.Tensor:
    """Propagate logits along affinities restricted to each cluster (Eq. 11-12).

    ``Â = A ⊙ M`` (Eq. 11) is row-normalised (the "Norm" of Eq. 12: each row sums to 1, so every output is a weighted
    average of the logits of patches in the same cluster) and applied to the logits: ``Ŝ = Norm(Â) S'``.
    With ``power != 1`` the masked affinity is first raised to that power, ``Norm(Â^power)`` (negative entries set
    to 0 first), as the affinity-propagation helpers of weakly supervised segmentation do (PSA: power 8): larger
    powers concentrate each patch's average on its most similar neighbours.

    Args:
        affinity: ``[..., N, N]`` affinities: non-negative (VFM attention, clamped cosine) or signed (the raw
            product F Fᵀ; its rows are then normalised by their signed sums, as Algorithm 2 writes it).
        cluster_ids: ``[..., N]`` cluster assignment.
        logits: ``[..., N, K]`` patch logits S'.
        eps: guards rows whose masked affinities sum to 0 (they then return 0).
        power: exponent of the masked affinity before normalising (1 = Eq. 12 as written).

    Returns:
        ``[..., N, K]`` refined logits Ŝ.
    """
    if affinity.shape[-1] != affinity.shape[-2] or affinity.shape[-1] != logits.shape[-2]:
        raise InputError(f"affinity {tuple(affinity.shape)} must be [N, N] and logits {tuple(logits.shape)} [N, K]")
    if cluster_ids.shape[-1] != affinity.shape[-1]:
        raise InputError(f"cluster_ids {tuple(cluster_ids.shape)} must have N={affinity.shape[-1]} entries")
    if not power > 0:
        raise ConfigError(f"affinity_power={power} must be > 0 (1 = Eq. 12 as written; PSA uses 8)")
    masked = affinity * cluster_mask(cluster_ids).to(affinity.dtype)
    if power != 1.0:
        masked = masked.clamp_min(0.0).pow(power)
    total = masked.sum(dim=-1, keepdim=True)
    total = torch.where(total.abs() < eps, torch.full_like(total, float("inf")), total)  # empty rows -> 0
    return (masked / total) @ logits.to(masked.dtype)


def cosine_affinity(feats: torch.Tensor) -> torch.Tensor:
    """Cosine-similarity affinity between patch features, negatives clamped to 0.

    Args:
        feats: ``[..., N, D]``.

    Returns:
        ``[..., N, N]`` in [0, 1].
    """
    f = F.normalize(feats.float(), dim=-1)
    return (f @ f.transpose(-1, -2)).clamp_min(0.0)


def product_affinity(feats: torch.Tensor) -> torch.Tensor:
    """The raw feature product ``F Fᵀ`` of Algorithm 2 (no normalisation, no clamping).

    Args:
        feats: ``[..., N, D]`` VFM patch features as the VFM returns them.

    Returns:
        ``[..., N, N]`` (signed; of the order of the squared feature norms).
    """
    f = feats.float()
    return f @ f.transpose(-1, -2)


def fuse_logits(refined: torch.Tensor, upsampled: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 14: ``S_final = β · Interpolate(Ŝ) + (1 − β) · S_up`` with bilinear interpolation.

    Args:
        refined: ``[B, K, h, w]`` CCE-refined logits Ŝ at the VFM/patch grid.
        upsampled: ``[B, K, H, W]`` upsampled logits S_up.
        beta: fusion weight in [0, 1].

    Returns:
        ``[B, K, H, W]``.
    """
    if not 0.0 <= float(beta) <= 1.0:
        raise ConfigError(f"beta={beta} is outside [0, 1]; the fusion weight must be in [0, 1] (e.g. 0.2)")
    if refined.shape[-2:] != upsampled.shape[-2:]:
        refined = F.interpolate(refined, size=upsampled.shape[-2:], mode="bilinear", align_corners=False)
    return beta * refined + (1.0 - beta) * upsampled


def vfm_input_size(
    window_hw: tuple[int, int],
    clip_grid: tuple[int, int],
    vfm_patch: int,
    grid_align: str = "vfm",
    resolution: str = "window",
    native_size: int | None = None,
) -> tuple[int, int]:
    """The VFM's input size ``(H_v, W_v)`` for one window, multiples of ``vfm_patch`` whatever CLIP's patch size.

    - ``grid_align="clip"``: CLIP's grid times the VFM's patch, so the VFM's patch grid is CLIP's (e.g. CLIP B/32's
      7x7 grid of a 224² window gives DINOv2 B/14 an input of 98², DINO B/8 one of 56²);
    - ``resolution="native"`` and a VFM with a training size (SAM: 1024): that size;
    - otherwise the window's own size, each side rounded to the nearest multiple of ``vfm_patch`` (at least one
      patch): a 224² window is kept for patch 8, 14, 16 and 32; a 160-pixel side becomes 154 for patch 14.

    Args:
        window_hw: the (padded) window's size in pixels.
        clip_grid: CLIP's patch grid of the window.
        vfm_patch: the VFM's patch side.
        grid_align: ``"vfm"`` (propagate on the VFM's grid) or ``"clip"``.
        resolution: ``"window"`` or ``"native"``.
        native_size: the VFM's square training side, or None.
    """
    if vfm_patch < 1:
        raise ConfigError(f"VFM patch size {vfm_patch} is not valid; it must be a positive number of pixels")
    if grid_align == "clip":
        return clip_grid[0] * vfm_patch, clip_grid[1] * vfm_patch
    if resolution == "native" and native_size:
        return int(native_size), int(native_size)
    return tuple(max(1, int(side / vfm_patch + 0.5)) * vfm_patch for side in window_hw)  # type: ignore[return-value]
