"""SC-CLIP (Bai et al., 2024, arXiv 2411.15869): self-calibrated CLIP, no extra model.

The authors' ``VisionTransformer.forward`` (github:SuleBai/SC-CLIP ``clip/model.py``) on open_clip's ViT, batched:

1. blocks 1..L-1 run unchanged, their outputs kept (``outs[i]`` = block i+1's output, all tokens);
2. anomaly tokens of block L-1's patches: LOF (k = ``sc_clip_lof_neighbors``) above its
   ``1 - sc_clip_lof_contamination`` quantile, replaced by their 3x3 neighbours' mean; the CLS token is set aside;
3. ``S_mid`` = similarity of ``outs[pre]`` (anomalies interpolated the same way); the patches are aggregated with
   ``S_mid`` thresholded at ``sc_clip_beta``;
4. the last block is its attention alone (no residual, no FFN): :func:`~alignclip.ops.sc_clip.sc_attention` with
   ``S_mid``, plus ``sc_clip_res_cls`` times the CLS token; then aggregated with ``S_post`` (similarity of
   ``outs[post]``, thresholded);
5. multi-level fusion: ``Σ outs[start:end]`` passes through the same last-block attention, CLS term and ``S_post``
   aggregation and is added to step 4's output;
6. ``ln_post`` and ``proj`` on the patch tokens.

The layer indices are the authors' for ViT-B/16 (12 blocks); for a shallower ViT they are clipped to the blocks it
has (``min(i, L - 2)``), for a deeper one kept, as the authors' code keeps them for every backbone.
"""

from __future__ import annotations

import torch

from alignclip.errors import ConfigError
from alignclip.methods.base import BASELINE_PROTOCOL, PLUGIN_ALPHA, Encoder, EncoderContext, Method
from alignclip.models.clip import block_qkv, embed_patches
from alignclip.ops.sc_clip import (
    aggregate,
    anomaly_mask,
    feature_similarity,
    interpolate_anomalies,
    lof_scores,
    sc_attention,
)

__all__ = ["METHOD", "SGA_SOURCES", "check", "encode"]

#: ``sc_clip_sga_source``: SGA's prototypes from the "fused" output (the returned patch features), the "last" block's
#: path alone (step 4) or the "multi"-level path alone (step 5).
SGA_SOURCES = ("fused", "last", "multi")


def _last_attention(
    block: torch.nn.Module, tokens: torch.Tensor, similarity: torch.Tensor, temp: float
) -> torch.Tensor:
    """``out_proj(sc_attention(ln_1(tokens)))`` of open_clip's last block: ``[B, N, C]`` → ``[B, N, C]``."""
    b, n, c = tokens.shape
    attn = block.attn
    _, k, v = block_qkv(block, tokens)  # each [B, H, N, d]
    o = sc_attention(k, v, similarity, temp)
    return attn.out_proj(o.transpose(1, 2).reshape(b, n, c))


def encode(ctx: EncoderContext, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """SC-CLIP's dense features of CLIP-normalised windows ``[B, 3, H, W]``.

    Returns:
        ``patch [B, D, H/p, W/p]`` (the fused output), ``cls [B, D]`` (block L-1's CLS token through ``ln_post`` and
        ``proj``: SC-CLIP has no CLS output) and SGA's source (None for ``sc_clip_sga_source="fused"``).
    """
    c = ctx.config
    visual = ctx.clip.model.visual
    x, (h, w) = embed_patches(visual, windows, c.pos_embed_interp)
    b, _, width = x.shape
    blocks = visual.transformer.resblocks
    if len(blocks) < 2:
        raise ConfigError(f"SC-CLIP needs a ViT with >= 2 blocks, {ctx.clip.name} has {len(blocks)}")
    outs = []
    for blk in blocks[:-1]:
        x = blk(x)
        outs.append(x)
    last_idx = len(outs) - 1

    def as_map(tokens: torch.Tensor) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(b, width, h, w)

    def as_tokens(fmap: torch.Tensor) -> torch.Tensor:
        return fmap.reshape(b, width, h * w).transpose(1, 2)

    cls_tok = x[:, :1]
    anomalies = anomaly_mask(lof_scores(x[:, 1:], c.sc_clip_lof_neighbors), c.sc_clip_lof_contamination)
    anomalies = anomalies.view(b, h, w)
    x = as_tokens(interpolate_anomalies(as_map(x[:, 1:]), anomalies))  # [B, N, C], CLS set aside
    pre = as_tokens(interpolate_anomalies(as_map(outs[min(c.sc_clip_pre_adjust_idx, last_idx)][:, 1:]), anomalies))
    s_mid = feature_similarity(pre)  # [B, N, N]
    x = aggregate(x, s_mid, c.sc_clip_beta)
    last = blocks[-1]
    temp = c.sc_clip_attn_temp
    x = _last_attention(last, x, s_mid, temp) + c.sc_clip_res_cls * cls_tok
    s_post = feature_similarity(outs[min(c.sc_clip_post_adjust_idx, last_idx)][:, 1:])
    x = aggregate(x, s_post, c.sc_clip_beta)
    start = min(c.sc_clip_multi_start_idx, last_idx)
    end = max(min(c.sc_clip_multi_end_idx, last_idx + 1), start + 1)
    multi = torch.zeros_like(outs[0])
    for feats in outs[start:end]:  # the same summation order as the authors'
        multi = multi + feats
    m = _last_attention(last, multi[:, 1:], s_mid, temp) + c.sc_clip_res_cls * multi[:, :1]
    m = aggregate(m, s_post, c.sc_clip_beta)
    fused = x + m

    def project(tokens: torch.Tensor) -> torch.Tensor:
        out = visual.ln_post(tokens)
        return out @ visual.proj if visual.proj is not None else out

    def grid(tokens: torch.Tensor) -> torch.Tensor:
        return project(tokens).transpose(1, 2).reshape(b, -1, h, w)

    sga = {"fused": None, "last": x, "multi": m}[c.sc_clip_sga_source]
    return grid(fused), project(cls_tok[:, 0]), None if sga is None else grid(sga)


def check(config) -> None:
    """One-line ConfigError for a bad ``sc_clip_*`` value."""
    if config.sc_clip_sga_source not in SGA_SOURCES:
        raise ConfigError(
            f"sc_clip_sga_source={config.sc_clip_sga_source!r} is not valid; choose one of {', '.join(SGA_SOURCES)}"
        )
    if config.sc_clip_lof_neighbors < 1:
        raise ConfigError(f"sc_clip_lof_neighbors={config.sc_clip_lof_neighbors} must be >= 1 (the authors use 30)")
    if not 0.0 < config.sc_clip_lof_contamination < 1.0:
        raise ConfigError(
            f"sc_clip_lof_contamination={config.sc_clip_lof_contamination} is outside (0, 1); the authors use 0.05"
        )
    for name in ("sc_clip_pre_adjust_idx", "sc_clip_post_adjust_idx", "sc_clip_multi_start_idx"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name}={getattr(config, name)} must be a block index >= 0")
    if config.sc_clip_multi_end_idx <= config.sc_clip_multi_start_idx:
        raise ConfigError(
            f"sc_clip_multi_end_idx={config.sc_clip_multi_end_idx} must exceed sc_clip_multi_start_idx="
            f"{config.sc_clip_multi_start_idx} (the fused blocks are [start, end); the authors use 3 and 10)"
        )
    if not config.sc_clip_attn_temp > 0:
        raise ConfigError(f"sc_clip_attn_temp={config.sc_clip_attn_temp} must be > 0 (the authors use 3.0)")
    if not -1.0 <= config.sc_clip_beta <= 1.0:
        raise ConfigError(f"sc_clip_beta={config.sc_clip_beta} is a cosine threshold; use a value in [-1, 1] (0.4)")


METHOD = Method(
    name="sc-clip",
    paper_name="SC-CLIP",
    reference="Bai et al., 2024 (SC-CLIP: self-calibrated CLIP)",
    settings=dict(BASELINE_PROTOCOL, encoder="sc_clip"),
    summary=(
        "LOF anomaly tokens interpolated, mid-layer similarity attention and aggregation in the last block "
        "(no residual/FFN), multi-level fusion of blocks 4-10"
    ),
    encoder=Encoder(encode=encode, check=check),
    plugin_alpha=PLUGIN_ALPHA,
)
