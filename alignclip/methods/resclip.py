"""ResCLIP (Yang et al., CVPR 2025, arXiv 2411.15851): residual cross-correlation attention and semantic feedback.

The authors' ``VisionTransformer.forward`` (github:yvhangyang/ResCLIP ``clip/model.py``, ``arch="wo_resi"``,
``attn_strategy="resclip"``, their README's setting of the paper) on open_clip's ViT, batched over windows:

1. blocks 1..L-1 run unchanged; the cross-correlation attention ``softmax(q kᵀ / sqrt(d))`` of blocks
   ``[resclip_rcs_start, resclip_rcs_end)`` (0-based; the authors' 5..8 = blocks 6-9) is averaged per head: A_c
   (for a ViT with fewer blocks the range is clipped to the blocks before the last, ``min(i, L - 2)``);
2. first pass (SFR on): the last block's attention is NACLIP's ``softmax(k kᵀ / sqrt(d) + G)`` (G: Gaussian of the
   patch distance, std ``resclip_std``) mixed with A_c (:func:`~alignclip.ops.resclip.resclip_attention`); its output
   alone (no residual, no FFN: ``drop_residual``) through ``ln_post``/``proj`` gives cosine logits against the text
   embeddings T of the queries (``ctx.text``), bilinearly upsampled to the window, refined by PAMR, softmax-ed with
   ``logit_scale``; each patch takes its pixels' most frequent query (query 0 below ``resclip_temp_thd``);
3. A_sfr from those labels (:func:`~alignclip.ops.resclip.sfr_attention`);
4. second pass: the same last block with A_sfr mixed into its k kᵀ logits and A_c into its weights; ``ln_post`` and
   ``proj`` on every token give the patch and CLS features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError
from alignclip.methods.base import BASELINE_PROTOCOL, PLUGIN_ALPHA, Encoder, EncoderContext, Method
from alignclip.models.clip import block_qkv, embed_patches
from alignclip.ops.attention import naclip_bias
from alignclip.ops.resclip import cross_correlation, pamr, patch_labels, resclip_attention, sfr_attention

__all__ = ["METHOD", "SGA_SOURCES", "check", "encode"]

#: ``resclip_sga_source``: SGA's prototypes (``+sga``) from the "final" (second-pass) patch features, i.e. the
#: returned ones, or the "first" pass's (before SFR; the final ones when SFR is off).
SGA_SOURCES = ("final", "first")


def _attend(block: torch.nn.Module, weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``out_proj(weights v)``: ``[B, H, N, N]``, ``[B, H, N, d]`` → ``[B, N, C]``."""
    b, heads, n, d = v.shape
    o = torch.matmul(weights.to(v.dtype), v)
    return block.attn.out_proj(o.transpose(1, 2).reshape(b, n, heads * d))


def _block_with_attention(block: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One unchanged open_clip block on ``x [B, N, C]``, also returning its attention ``[B, H, N, N]``."""
    q, k, v = block_qkv(block, x)
    weights = torch.softmax(torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2)), dim=-1)
    x = x + block.ls_1(_attend(block, weights, v))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, weights


def encode(ctx: EncoderContext, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """ResCLIP's dense features of CLIP-normalised windows ``[B, 3, H, W]``.

    Returns:
        ``patch [B, D, H/p, W/p]`` and ``cls [B, D]`` of the second pass, and SGA's source (None for
        ``resclip_sga_source="final"``, else the first pass's patch features).
    """
    c = ctx.config
    visual = ctx.clip.model.visual
    x, (h, w) = embed_patches(visual, windows, c.pos_embed_interp)
    b, _, width = x.shape
    blocks = visual.transformer.resblocks
    if len(blocks) < 2:
        raise ConfigError(f"ResCLIP needs a ViT with >= 2 blocks, {ctx.clip.name} has {len(blocks)}")
    # RCS blocks clipped to the L - 1 blocks before the last (a no-op on 12-block ViTs; the tiny test ViTs)
    start = min(c.resclip_rcs_start, len(blocks) - 2)
    end = max(min(c.resclip_rcs_end, len(blocks) - 1), start + 1)
    maps = []
    for idx, blk in enumerate(blocks[:-1]):
        if c.resclip_rcs and start <= idx < end:
            x, weights = _block_with_attention(blk, x)
            maps.append(weights)
        else:
            x = blk(x)
    rcs = cross_correlation(maps) if maps else None
    last = blocks[-1]
    _, k, v = block_qkv(last, x)
    bias = naclip_bias((h, w), c.resclip_std, 1, x.device, torch.float32)
    rcs_weights = (c.resclip_rcs_tau, c.resclip_rcs_lambda)
    sfr_weights = (c.resclip_sfr_tau, c.resclip_sfr_lambda)

    def last_block(sfr: torch.Tensor | None) -> torch.Tensor:  # [B, N, C'] after ln_post and proj
        weights = resclip_attention(k, bias, rcs, rcs_weights, sfr, sfr_weights, c.resclip_sfr_fp16)
        out = _attend(last, weights, v)
        if not c.drop_residual:
            out = x + last.ls_1(out)
            out = out + last.ls_2(last.mlp(last.ln_2(out)))
        out = visual.ln_post(out)
        return out @ visual.proj if visual.proj is not None else out

    def grid(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:].transpose(1, 2).reshape(b, -1, h, w)

    first = None
    sfr = None
    if c.resclip_sfr:
        first = grid(last_block(None))  # [B, D, h, w]
        feats = first / first.norm(dim=1, keepdim=True)
        logits = torch.einsum("bdhw,qd->bqhw", feats, ctx.text.to(feats.dtype))
        logits = F.interpolate(logits, size=windows.shape[-2:], mode="bilinear", align_corners=False)
        if c.resclip_pamr_steps > 0:
            logits = pamr(windows.to(logits.dtype), logits, c.resclip_pamr_steps)
        probs = torch.softmax(logits.float() * c.logit_scale, dim=1)
        labels = patch_labels(probs, c.resclip_temp_thd, windows.shape[-1] // w)
        sfr = sfr_attention(labels, c.resclip_std, c.resclip_delete_same_entity)
    out = last_block(sfr)
    patch = grid(out)
    sga = None if c.resclip_sga_source == "final" else (patch if first is None else first)
    return patch, out[:, 0], sga


def check(config) -> None:
    """One-line ConfigError for a bad ``resclip_*`` value."""
    if config.resclip_sga_source not in SGA_SOURCES:
        raise ConfigError(
            f"resclip_sga_source={config.resclip_sga_source!r} is not valid; choose one of {', '.join(SGA_SOURCES)}"
        )
    if config.resclip_rcs_start < 0 or config.resclip_rcs_end <= config.resclip_rcs_start:
        raise ConfigError(
            f"resclip_rcs_start={config.resclip_rcs_start}, resclip_rcs_end={config.resclip_rcs_end} must satisfy "
            f"0 <= start < end (blocks [start, end), 0-based; the authors use 5 and 9)"
        )
    for name in ("resclip_std",):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name}={getattr(config, name)} must be > 0 (the authors use 5.0)")
    for name in ("resclip_rcs_lambda", "resclip_sfr_lambda"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ConfigError(f"{name}={getattr(config, name)} is a mixing weight; use a value in [0, 1]")
    for name in ("resclip_rcs_tau", "resclip_sfr_tau"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name}={getattr(config, name)} must be > 0 (the authors use 1.8-2.2)")
    if not 0.0 <= config.resclip_temp_thd <= 1.0:
        raise ConfigError(
            f"resclip_temp_thd={config.resclip_temp_thd} is a probability threshold; use a value in [0, 1] (0.1)"
        )
    if config.resclip_pamr_steps < 0:
        raise ConfigError(f"resclip_pamr_steps={config.resclip_pamr_steps} must be >= 0 (the authors use 10)")


METHOD = Method(
    name="resclip",
    paper_name="ResCLIP",
    reference="Yang et al., CVPR 2025",
    settings=dict(BASELINE_PROTOCOL, encoder="resclip"),
    summary=(
        "NACLIP's k-k attention in the last block (no residual/FFN) mixed with blocks 6-9's q-k attention (RCS) "
        "and, in a second pass, with a same-label matrix from a first pass's segmentation (SFR)"
    ),
    encoder=Encoder(encode=encode, check=check),
    plugin_alpha=PLUGIN_ALPHA,
)
