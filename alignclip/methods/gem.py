"""GEM (Bousselham et al., CVPR 2024, "Grounding Everything"): a self-self attention path parallel to CLIP's ViT.

As the authors' code (github.com/WalBouss/GEM, commit 5fa677c, ``gem/gem_wrapper.py`` and ``gem/gem_utils.py``)
builds it on open_clip's ViT, batched over windows:

1. the first L - ``gem_layers`` blocks run unchanged (authors: ``gem_depth=7``, i.e. the last 6 of 12 blocks carry
   the GEM path; a ViT with fewer blocks, e.g. the 3-block smoke model, has it on all of them); their output x
   starts both paths: ``x_gem = x``;
2. in each of the last ``gem_layers`` blocks, from the ORIGINAL path's tokens ``z = ln_1(x)``: q, k, v of the
   block's own projection; the GEM path adds ``ls_1(out_proj(gem_attention(q, k, v)))``
   (:func:`~alignclip.ops.gem.gem_attention`: normalised q-q, k-k, v-v self-self attention, ``gem_iters``
   iterations, ensembled, with the adaptive inverse temperature ``mean_i ||z_i|| · d^-1/2`` of the window or a fixed
   ``gem_inv_temp``), no FFN; the original path runs the block unchanged (q-k attention, residual, FFN);
3. ``ln_post`` and ``proj`` on every token of both paths.

Position embeddings of a grid other than the trained one (windows other than 224²) are resampled as their code does
(bicubic with antialiasing, :func:`~alignclip.ops.gem.resample_pos_embed_antialias`) unless ``gem_pos_embed="shared"``.

The patch features are the GEM path's (their ``forward(..., return_ori=False)``). The original path's output is
computed only when a switch asks for it: ``gem_sga_source="original"`` (SGA's prototypes) or
``gem_cls_source="original"`` (the CLS features of the CLS term, off in the Table-2 protocol).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError
from alignclip.methods.base import BASELINE_PROTOCOL, PLUGIN_ALPHA, Encoder, EncoderContext, Method
from alignclip.models.clip import embed_patches
from alignclip.ops.gem import adaptive_inverse_temperature, gem_attention, resample_pos_embed_antialias

__all__ = ["FEATURE_PATHS", "METHOD", "POS_EMBED_MODES", "check", "encode"]

#: Values of ``gem_sga_source`` and ``gem_cls_source``: the "gem" (self-self) path or the "original" ViT path.
FEATURE_PATHS = ("gem", "original")

#: ``gem_pos_embed``: the "authors'" antialiased bicubic to the exact grid, or the pipeline's "shared"
#: ``pos_embed_interp`` (SegEarth-OV's); both leave the trained 14x14 grid (224 windows) unchanged.
POS_EMBED_MODES = ("authors", "shared")


def check(config: Any) -> None:
    """One-line ConfigError for bad GEM fields (their types are checked by the config before)."""
    if config.gem_layers < 1:
        raise ConfigError(
            f"gem_layers={config.gem_layers!r} must be an int >= 1 (the last blocks with the GEM path; authors: 6, "
            f"their gem_depth=7)"
        )
    if config.gem_iters < 0:
        raise ConfigError(f"gem_iters={config.gem_iters!r} must be an int >= 0 (self-self iterations; authors: 1)")
    t = config.gem_inv_temp
    if t is not None and not (math.isfinite(t) and t > 0):
        raise ConfigError(
            f"gem_inv_temp={t!r} must be a finite number > 0, or None for GEM's adaptive temperature (authors: None)"
        )
    for name, valid in (
        ("gem_sga_source", FEATURE_PATHS),
        ("gem_cls_source", FEATURE_PATHS),
        ("gem_pos_embed", POS_EMBED_MODES),
    ):
        value = getattr(config, name)
        if value not in valid:
            raise ConfigError(f"{name}={value!r} is not valid; choose one of {', '.join(valid)}")


def _project(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``ln_post`` then ``proj`` on every token: ``[B, L, C]`` → ``[B, L, D]``."""
    x = visual.ln_post(x)
    return x @ visual.proj if visual.proj is not None else x


def encode(ctx: EncoderContext, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """GEM's dense features of CLIP-normalised windows ``[B, 3, H, W]`` (see the module docstring).

    Returns:
        ``patch [B, D, H/p, W/p]`` (GEM path), ``cls [B, D]`` (``gem_cls_source``'s path), and SGA's source
        ``[B, D, H/p, W/p]`` (the original path's patches with ``gem_sga_source="original"``, else None: ``patch``);
        none normalised.
    """
    cfg = ctx.config
    visual = ctx.clip.model.visual
    blocks = visual.transformer.resblocks
    patch = visual.conv1.kernel_size[0]
    grid = (windows.shape[-2] // patch, windows.shape[-1] // patch)
    own = resample_pos_embed_antialias(visual.positional_embedding, grid) if cfg.gem_pos_embed == "authors" else None
    x, (h, w) = embed_patches(visual, windows, cfg.pos_embed_interp, pos=own)
    b, _, c = x.shape

    need_original = "original" in (cfg.gem_sga_source, cfg.gem_cls_source)
    first = max(len(blocks) - cfg.gem_layers, 0)  # a ViT with fewer blocks: all of them
    for blk in blocks[:first]:
        x = blk(x)
    x_gem = x
    for i, blk in enumerate(blocks[first:], start=first):
        attn = blk.attn
        heads = attn.num_heads
        z = blk.ln_1(x)
        qkv = F.linear(z, attn.in_proj_weight, attn.in_proj_bias)  # [B, L, 3C]
        q, k, v = qkv.view(b, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # each [B, heads, L, d]
        inv_temp = adaptive_inverse_temperature(z, c // heads) if cfg.gem_inv_temp is None else cfg.gem_inv_temp
        o = gem_attention(q, k, v, inv_temp, cfg.gem_iters)
        x_gem = x_gem + blk.ls_1(attn.out_proj(o.transpose(1, 2).reshape(b, -1, c)))
        if i < len(blocks) - 1 or need_original:  # the original path: the block as it is
            o = F.scaled_dot_product_attention(q, k, v)
            x = x + blk.ls_1(attn.out_proj(o.transpose(1, 2).reshape(b, -1, c)))
            x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))

    gem_out = _project(visual, x_gem)
    patch = gem_out[:, 1:].transpose(1, 2).reshape(b, -1, h, w)
    ori_out = _project(visual, x) if need_original else None
    cls_feats = ori_out[:, 0] if cfg.gem_cls_source == "original" else gem_out[:, 0]
    sga_src = ori_out[:, 1:].transpose(1, 2).reshape(b, -1, h, w) if cfg.gem_sga_source == "original" else None
    return patch, cls_feats, sga_src


METHOD = Method(
    name="gem",
    paper_name="GEM",
    reference="Bousselham et al., CVPR 2024",
    settings=dict(BASELINE_PROTOCOL, encoder="gem"),
    summary="a parallel path over the last 6 blocks: normalised q-q, k-k, v-v self-self attention, adaptive "
    "temperature, ensembled (no FFN); its patch tokens are the features",
    encoder=Encoder(encode=encode, check=check),
    plugin_alpha=PLUGIN_ALPHA,
)
