"""GEM's self-self attention (Bousselham et al., "Grounding Everything", CVPR 2024, Sec. 3 and Fig. 2).

Pure tensor functions on per-head tensors ``[B, H, L, d]`` (L tokens, CLS first). GEM generalises CLIP Surgery's
v-v attention to the three self-self attentions q-q, k-k and v-v, each regularised:

- L2 normalisation: ``N(x) = x / ||x||`` per token and head before every similarity;
- adaptive temperature: ``softmax(N(x) N(x)ᵀ / τ)`` with ``1/τ = mean_i ||z_i|| · d^-1/2`` (z the block's input
  tokens after ``ln_1``, full width, d the head width): :func:`adaptive_inverse_temperature`;
- iterations: ``x ← softmax(N(x) N(x)ᵀ / τ) x``, ``n`` times (the authors' ``ss_attn_iter``, 1);
- qkv-ensemble: the attention of each refined projection is applied to the values and the three are averaged,
  ``o = 1/3 Σ_{x ∈ {q, k, v}} softmax(N(x̃) N(x̃)ᵀ / τ) v``.

These are the lines of ``SelfSelfAttention.forward`` in the authors' ``gem/gem_utils.py`` (WalBouss/GEM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["adaptive_inverse_temperature", "gem_attention", "resample_pos_embed_antialias", "self_self_weights"]


def adaptive_inverse_temperature(tokens: torch.Tensor, head_dim: int) -> torch.Tensor:
    """GEM's adaptive temperature: ``1/τ = (1/L) Σ_i ||z_i|| · d^-1/2`` per image.

    Args:
        tokens: ``[B, L, C]`` the attention block's input tokens (after ``ln_1``; CLS included).
        head_dim: d, the width of one head (the usual attention scale is ``d^-1/2``).

    Returns:
        ``[B, 1, 1, 1]`` inverse temperatures (broadcast over heads and token pairs).
    """
    return tokens.norm(dim=-1).mean(dim=-1).view(-1, 1, 1, 1) * head_dim**-0.5


def self_self_weights(x: torch.Tensor, inv_temp: torch.Tensor | float) -> torch.Tensor:
    """Normalised self-self attention weights ``softmax(N(x) N(x)ᵀ · inv_temp)``.

    Args:
        x: ``[..., L, d]`` one projection (q, k or v) per head.
        inv_temp: a number or a tensor broadcasting to ``[..., 1, 1]``.

    Returns:
        ``[..., L, L]`` row-stochastic weights.
    """
    n = F.normalize(x, dim=-1)
    return torch.softmax((n @ n.transpose(-2, -1)) * inv_temp, dim=-1)


def gem_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, inv_temp: torch.Tensor | float, iters: int = 1
) -> torch.Tensor:
    """The qkv-ensemble of iterated, normalised self-self attentions, before ``out_proj``.

    ``x_0 = x``; ``x_{t+1} = softmax(N(x_t) N(x_t)ᵀ · inv_temp) N(x_t)`` for ``t < iters`` (the authors' loop
    applies the weights to the normalised tokens); then ``o = 1/3 Σ_x softmax(N(x_n) N(x_n)ᵀ · inv_temp) v``.

    Args:
        q, k, v: ``[B, H, L, d]``.
        inv_temp: ``[B, 1, 1, 1]`` (:func:`adaptive_inverse_temperature`) or a fixed number.
        iters: n >= 0.

    Returns:
        ``[B, H, L, d]``.
    """
    xs = torch.stack([v, k, q])  # [3, B, H, L, d]: the three paths at once
    for _ in range(iters):
        n = F.normalize(xs, dim=-1)
        xs = self_self_weights(n, inv_temp) @ n
    return (self_self_weights(xs, inv_temp) @ v).mean(dim=0)


def resample_pos_embed_antialias(
    pos_embed: torch.Tensor, grid_hw: tuple[int, int], num_prefix: int = 1
) -> torch.Tensor:
    """GEM's position embeddings for a ``grid_hw`` patch grid: bicubic to exactly ``h x w`` with ``antialias=True``
    (their ``resample_abs_pos_embed``; PyTorch's antialiased bicubic uses PIL's kernel, a = -0.5, also when
    upsampling, so it differs from plain bicubic, a = -0.75). The prefix (CLS) rows are kept.

    Args:
        pos_embed: ``[num_prefix + n * n, C]``.

    Returns:
        ``[num_prefix + h * w, C]``; ``pos_embed`` itself when the grid is already ``n x n``.
    """
    n = int(round((pos_embed.shape[0] - num_prefix) ** 0.5))
    if (n, n) == tuple(grid_hw):
        return pos_embed
    prefix, grid = pos_embed[:num_prefix], pos_embed[num_prefix:]
    grid = grid.reshape(1, n, n, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(grid_hw), mode="bicubic", antialias=True)
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(grid_hw[0] * grid_hw[1], -1)], dim=0)
