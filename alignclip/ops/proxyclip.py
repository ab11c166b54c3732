"""ProxyCLIP's proxy attention (Lan et al., ECCV 2024, Sec. 3.2): CLIP's last-block values mixed by VFM affinities.

Pure tensor functions. The VFM's patch features give the attention weights (the "proxy"), CLIP's last block gives
the values; the two patch grids may differ (DINO ViT-B/8 at 224: 28x28, CLIP ViT-B/16: 14x14), and the values are
resized bilinearly to the VFM's grid, as the authors' code does (``custom_attn`` of their ``open_clip/transformer.py``,
commit e7b767f). Notation: F the VFM patch features, N its patches, β and γ the paper's normalisation constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["proxy_attention_weights", "proxy_attend", "resize_values"]


def proxy_attention_weights(vfm_feats: torch.Tensor, beta: float = 1.2, gamma: float = 3.0) -> torch.Tensor:
    """Proxy attention of ProxyCLIP (paper Sec. 3.2, adaptive normalisation and masking).

    ``S = F̂ F̂ᵀ`` (F̂: L2-normalised features, cosine similarities), ``Ŝ = γ (S − β · mean(S))``,
    ``A = softmax(Ŝ + M)`` with ``M = −∞`` where ``Ŝ < 0`` (else 0). ``mean(S)`` is over all N² entries of the
    window (the authors' code takes ``torch.mean`` of its batch, which is one window). A row whose entries are all
    masked (possible only when ``mean(S) > 1/β``, as the diagonal is 1) is NaN, as in the authors' code.

    Args:
        vfm_feats: ``[B, N, C]`` VFM patch features of B windows.
        beta, gamma: β (the mean's multiplier: the masking threshold) and γ (the temperature-like scale).

    Returns:
        ``[B, N, N]`` attention weights (rows sum to 1), float like ``vfm_feats``.
    """
    f = F.normalize(vfm_feats, dim=-1)
    sim = f @ f.transpose(1, 2)  # [B, N, N]
    sim = (sim - sim.mean(dim=(1, 2), keepdim=True) * beta) * gamma
    return sim.masked_fill(sim < 0.0, float("-inf")).softmax(dim=-1)


def resize_values(values: torch.Tensor, grid_hw: tuple[int, int], size_hw: tuple[int, int]) -> torch.Tensor:
    """CLIP's patch values resampled to the VFM's patch grid (bilinear, ``align_corners=False``, per head).

    Args:
        values: ``[B, H, h*w, d]`` per-head values of the patch tokens (row-major over the ``grid_hw`` = (h, w) grid).
        grid_hw: CLIP's patch grid (h, w).
        size_hw: the VFM's patch grid (I, J).

    Returns:
        ``[B, H, I*J, d]`` (the input itself when the grids match).
    """
    if tuple(grid_hw) == tuple(size_hw):
        return values
    b, heads, _, d = values.shape
    v = values.reshape(b * heads, grid_hw[0], grid_hw[1], d).permute(0, 3, 1, 2)
    v = F.interpolate(v, size=tuple(size_hw), mode="bilinear", align_corners=False)
    return v.permute(0, 2, 3, 1).reshape(b, heads, size_hw[0] * size_hw[1], d)


def proxy_attend(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Every head's values mixed by the same proxy attention: ``O_h = A V_h``.

    Args:
        weights: ``[B, N, N]`` proxy attention (:func:`proxy_attention_weights`).
        values: ``[B, H, N, d]`` per-head values on the VFM's grid (:func:`resize_values`).

    Returns:
        ``[B, H, N, d]`` attention output, before CLIP's ``out_proj``.
    """
    return weights.unsqueeze(1).to(values.dtype) @ values
