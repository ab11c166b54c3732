"""Last-block attention modes of CLIP's vision transformer (paper Eq. 2 and the baselines it compares).

Pure tensor functions: q, k, v are per-head tensors ``[B, H, L, d]`` (L = 1 + number of patches, the CLS token
first). Each mode returns the attention output ``[B, H, L, d]`` before ``out_proj``.

Modes (s = d^-0.5, softmax over the last axis):

=============  ==========================================================================================
``vanilla``    softmax(q kᵀ s) v                                  (original CLIP)
``maskclip``   v                                                  (each token attends to itself)
``sclip``      [softmax(q qᵀ s) + softmax(k kᵀ s)] v              (a SUM: rows of the weights sum to 2)
``clearclip``  softmax(q qᵀ s) v
``naclip``     softmax(k kᵀ s + G) v, G a Gaussian neighbourhood bias over the patch grid (0 for the CLS token)
``segearth``   [softmax(q qᵀ s) + softmax(k kᵀ s) + softmax(v vᵀ s)] v   (Eq. 2; rows sum to 3)
=============  ==========================================================================================

The sums are implemented as several fused ``scaled_dot_product_attention`` calls, so no ``[L, L]`` weight matrix is
materialised on GPUs with flash/memory-efficient kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError

__all__ = ["ATTENTION_MODES", "attention_weights", "check_attention_mode", "modified_attention", "naclip_bias"]

ATTENTION_MODES: tuple[str, ...] = ("vanilla", "maskclip", "sclip", "clearclip", "naclip", "segearth")


def check_attention_mode(mode: str) -> str:
    """Return ``mode`` if it is a known attention mode, else raise ConfigError listing the valid ones."""
    if mode not in ATTENTION_MODES:
        raise ConfigError(f"unknown attention mode {mode!r}; choose one of {', '.join(ATTENTION_MODES)}")
    return mode


def naclip_bias(
    grid_hw: tuple[int, int],
    std: float = 1.0,
    num_prefix_tokens: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian neighbourhood bias of NACLIP, added to the k kᵀ logits.

    ``bias[i, j] = exp(-||pos_i - pos_j||² / (2 std²))`` for patch tokens i, j on a ``grid_hw`` grid (positions in
    patch units); rows and columns of the prefix (CLS) tokens are 0.

    Returns:
        ``[L, L]`` tensor with ``L = num_prefix_tokens + h * w``.
    """
    h, w = grid_hw
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1)  # [N, 2]
    d2 = torch.cdist(pos, pos).pow(2)
    gauss = torch.exp(-d2 / (2.0 * std * std))
    n = h * w
    out = torch.zeros(num_prefix_tokens + n, num_prefix_tokens + n, device=device, dtype=torch.float32)
    out[num_prefix_tokens:, num_prefix_tokens:] = gauss
    return out.to(dtype)


def _sdpa(
    a: torch.Tensor, b: torch.Tensor, v: torch.Tensor, scale: float, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(a bᵀ · scale + bias) v with PyTorch's fused kernel."""
    return F.scaled_dot_product_attention(a, b, v, attn_mask=bias, scale=scale)


def modified_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mode: str,
    grid_hw: tuple[int, int] | None = None,
    naclip_std: float = 1.0,
) -> torch.Tensor:
    """Attention output of one of the last-block modes (see the module docstring; ``segearth`` is Eq. 2).

    Args:
        q, k, v: ``[B, H, L, d]`` per-head projections of the block's normalised input (CLS token first).
        mode: one of :data:`ATTENTION_MODES`.
        grid_hw: patch grid ``(h, w)`` with ``h * w == L - 1``; required for ``naclip``.
        naclip_std: standard deviation (in patches) of NACLIP's Gaussian bias.

    Returns:
        ``[B, H, L, d]`` attention output (heads not merged, ``out_proj`` not applied).
    """
    check_attention_mode(mode)
    scale = q.shape[-1] ** -0.5
    if mode == "maskclip":
        return v
    if mode == "vanilla":
        return _sdpa(q, k, v, scale)
    if mode == "clearclip":
        return _sdpa(q, q, v, scale)
    if mode == "sclip":
        return _sdpa(q, q, v, scale) + _sdpa(k, k, v, scale)
    if mode == "segearth":
        return _sdpa(q, q, v, scale) + _sdpa(k, k, v, scale) + _sdpa(v, v, v, scale)
    # naclip
    if grid_hw is None:
        raise ConfigError("attention mode 'naclip' needs grid_hw=(h, w) of the patch grid")
    bias = naclip_bias(grid_hw, naclip_std, q.shape[-2] - grid_hw[0] * grid_hw[1], q.device, q.dtype)
    return _sdpa(k, k, v, scale, bias)


def attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mode: str,
    grid_hw: tuple[int, int] | None = None,
    naclip_std: float = 1.0,
) -> torch.Tensor:
    """Explicit ``[B, H, L, L]`` weight matrix W of a mode, such that the output is ``W @ v``.

    Reference implementation for tests and analysis (materialises L×L); :func:`modified_attention` is the fast path.
    """
    check_attention_mode(mode)
    scale = q.shape[-1] ** -0.5

    def sm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | float = 0.0) -> torch.Tensor:
        return torch.softmax(a @ b.transpose(-1, -2) * scale + bias, dim=-1)

    if mode == "maskclip":
        eye = torch.eye(q.shape[-2], device=q.device, dtype=q.dtype)
        return eye.expand(*q.shape[:-2], -1, -1)
    if mode == "vanilla":
        return sm(q, k)
    if mode == "clearclip":
        return sm(q, q)
    if mode == "sclip":
        return sm(q, q) + sm(k, k)
    if mode == "segearth":
        return sm(q, q) + sm(k, k) + sm(v, v)
    if grid_hw is None:
        raise ConfigError("attention mode 'naclip' needs grid_hw=(h, w) of the patch grid")
    return sm(k, k, naclip_bias(grid_hw, naclip_std, q.shape[-2] - grid_hw[0] * grid_hw[1], q.device, q.dtype))
