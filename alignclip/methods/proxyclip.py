"""ProxyCLIP (Lan et al., ECCV 2024): CLIP's last-block attention replaced by a proxy attention from a VFM.

Per window, as the authors' code (github.com/mc-lan/ProxyCLIP, commit e7b767f, ``proxyclip_segmentor.py`` and
``custom_attn`` of their ``open_clip/transformer.py``) does:

1. the method's VFM (``encoder_vfm``, DINO ViT-B/8 by default) runs on the window (ImageNet-normalised, at the
   window's size; a SAM model at its native size, 1024², as their SAM branch) and gives its patch features F
   (DINO: the last block's output after the final LayerNorm, patch tokens);
2. CLIP's vision tower runs its first L-1 blocks unchanged; the last block keeps only its value projection of
   ``ln_1(x)``: the patch values are resized bilinearly to the VFM's patch grid, mixed by the proxy attention
   softmax(γ (F̂F̂ᵀ − β·mean), masked below 0) (:func:`alignclip.ops.proxyclip.proxy_attention_weights`), and
   projected by ``out_proj``, without the residual or the FFN; then ``ln_post`` and ``proj``.

The patch features are therefore on the VFM's grid (28x28 for DINO ViT-B/8 at a 224 window), where the shared
pipeline computes the cosine logits and resizes them bilinearly to the window, as their code does. Their code has no
CLS output; the CLS features returned here (used only by the CLS term, off in the Table-2 protocol) are CLIP's
standard last block applied to the CLS token.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError
from alignclip.methods.base import BASELINE_PROTOCOL, PLUGIN_ALPHA, Encoder, EncoderContext, Method
from alignclip.models.clip import block_qkv, embed_patches
from alignclip.models.vfm_builders import resolve_vfm
from alignclip.ops.proxyclip import proxy_attend, proxy_attention_weights, resize_values

__all__ = ["METHOD", "check", "encode", "vfm_patch_size"]

_TINY_PATCH = 16  # patch size of the "tiny"/"tiny_sam" VFMs (alignclip.models.vfm_builders.build_tiny_model)


def vfm_patch_size(name: str) -> int | None:
    """Patch side of the VFM ``name`` read from its spec without building it (None: not known before building)."""
    spec = resolve_vfm(name)  # ConfigError for an unknown name
    if spec.args:
        return int(spec.args.get("patch_size", _TINY_PATCH))
    if spec.timm_tag is None:
        return _TINY_PATCH
    match = re.search(r"patch(\d+)", spec.timm_tag)
    return int(match.group(1)) if match else None


def check(config: Any) -> None:
    """One-line ConfigError for bad ProxyCLIP fields or a VFM whose patch grid does not tile the windows."""
    if config.encoder != "proxyclip":
        return
    if not (math.isfinite(config.proxyclip_beta) and config.proxyclip_beta >= 0):
        raise ConfigError(f"proxyclip_beta={config.proxyclip_beta} must be a finite number >= 0 (ProxyCLIP: 1.2)")
    if not (math.isfinite(config.proxyclip_gamma) and config.proxyclip_gamma > 0):
        raise ConfigError(f"proxyclip_gamma={config.proxyclip_gamma} must be a finite number > 0 (ProxyCLIP: 3.0)")
    if config.encoder_vfm == "none":
        return  # the config's own check asks for a VFM
    spec = resolve_vfm(config.encoder_vfm)
    patch = vfm_patch_size(config.encoder_vfm)
    if spec.family != "sam" and patch is not None and config.crop % patch:
        raise ConfigError(
            f"encoder_vfm={config.encoder_vfm!r} has patch {patch}, which does not tile crop={config.crop} windows "
            f"(its patch grid cannot be aligned with CLIP's); use a crop that is a multiple of {patch} "
            f"(e.g. {config.crop - config.crop % patch or patch}) or a VFM whose patch divides {config.crop}"
        )


def _vfm_features(ctx: EncoderContext, windows: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The VFM's patch features ``[B, N, C]`` of CLIP-normalised windows ``[B, 3, H, W]`` and its grid (I, J)."""
    vfm = ctx.vfm
    height, width = windows.shape[-2:]
    size = vfm.native_size if vfm.family == "sam" else None  # SAM at 1024² as their code; DINO at the window's
    if size is None and (height % vfm.patch_size or width % vfm.patch_size):
        raise ConfigError(
            f"a {height}x{width} window is not a multiple of VFM {vfm.name!r}'s patch {vfm.patch_size}, so its patch "
            f"grid cannot be aligned with CLIP's; use windows (crop, image sides) that are multiples of both"
        )
    images = vfm.prepare(windows, ctx.clip.mean, ctx.clip.std, size)
    with vfm.position_embedding():  # DINO's own position-embedding resampling for its architecture files
        tokens = vfm.model.forward_features(images)
    if vfm.family == "sam":  # SAM's image embedding [B, C, I, J] after its neck, as their SAM branch reads
        grid = (tokens.shape[-2], tokens.shape[-1])
        return tokens.flatten(2).transpose(1, 2), grid
    grid = vfm.grid_size(images.shape[-2], images.shape[-1])
    return tokens[:, vfm.num_prefix_tokens :], grid  # after the final LayerNorm, prefix tokens dropped


def encode(ctx: EncoderContext, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ProxyCLIP's dense features of a batch of windows (see the module docstring).

    Args:
        ctx: the encoder context (``ctx.vfm`` is the method's VFM).
        windows: ``[B, 3, H, W]`` CLIP-normalised, H and W multiples of CLIP's patch size.

    Returns:
        ``patch [B, D, I, J]`` on the VFM's patch grid and ``cls [B, D]`` (CLIP's standard CLS output), not
        normalised.
    """
    cfg = ctx.config
    visual = ctx.clip.model.visual
    vfm_feats, vfm_grid = _vfm_features(ctx, windows)
    weights = proxy_attention_weights(vfm_feats.float(), cfg.proxyclip_beta, cfg.proxyclip_gamma)  # [B, N, N]

    x, (h, w) = embed_patches(visual, windows, cfg.pos_embed_interp)
    b, _, c = x.shape
    blocks = visual.transformer.resblocks
    for blk in blocks[:-1]:
        x = blk(x)
    last = blocks[-1]
    attn = last.attn
    q, k, v = block_qkv(last, x)  # each [B, heads, L, d]

    values = resize_values(v[:, :, 1:], (h, w), vfm_grid)  # [B, heads, I*J, d]
    o = proxy_attend(weights, values)  # [B, heads, I*J, d]
    patch = attn.out_proj(o.transpose(1, 2).reshape(b, -1, c))  # no residual, no FFN (their custom_attn)

    o_cls = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # CLIP's own attention for the CLS token
    x_cls = x[:, :1] + last.ls_1(attn.out_proj(o_cls.transpose(1, 2).reshape(b, 1, c)))
    x_cls = x_cls + last.ls_2(last.mlp(last.ln_2(x_cls)))

    out = visual.ln_post(torch.cat([x_cls, patch], dim=1))
    if visual.proj is not None:
        out = out @ visual.proj
    patch_feats = out[:, 1:].transpose(1, 2).reshape(b, -1, vfm_grid[0], vfm_grid[1])
    return patch_feats, out[:, 0]


METHOD = Method(
    name="proxyclip",
    paper_name="ProxyCLIP",
    reference="Lan et al., ECCV 2024",
    settings=dict(BASELINE_PROTOCOL, encoder="proxyclip", encoder_vfm="dino_vitb8"),
    summary="last block: CLIP's values (resized to the VFM grid) mixed by softmax(γ(F̂F̂ᵀ − β·mean)) of DINO features",
    encoder=Encoder(encode=encode, check=check, uses_vfm=True),
    plugin_alpha=PLUGIN_ALPHA,
)
