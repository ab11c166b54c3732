"""Trident (Shi et al., ICCV 2025): CLIP + DINO features of sub-windows spliced into one map, aggregated by SAM.

Per image, as the authors' code (github.com/YuHengsss/Trident, commit a93b346, ``trident.py`` and ``custom_attn`` /
``guidance_attn`` / ``get_sam_sim`` of their ``open_clip/transformer.py``) does, on the whole image
(:attr:`~alignclip.methods.base.EncoderContext.image`: the processing size, at most
:data:`~alignclip.methods.base.IMAGE_CONTEXT_SIDE`):

1. the image, resized if needed so that its sides are multiples of CLIP's patch p (their ``preprocess_image``), is cut
   into ``crop`` windows at ``stride`` (the configuration's, Table 2's 224 / 112);
2. each window gets ProxyCLIP's last block: DINO (``encoder_vfm``, their hub ``dino_vitb16``) gives the proxy
   attention softmax(γ (F̂F̂ᵀ − β·mean), masked below 0), the mean taken over all windows of the image (their one
   batch), which mixes CLIP's last-block values (resized to DINO's grid); ``out_proj``, no residual, no FFN;
3. the windows' outputs (before ``ln_post``) are spliced into a map of the image on CLIP's patch grid (times DINO's
   finer ratio: 2 for DINO ViT-B/8 on ViT-B/16), overlaps averaged;
4. SAM (``trident_sam``, their ViT-B) runs on the whole image as their ``SamPredictor`` does (uint8 pixels, longest side
   resized to 1024 with Pillow's bilinear filter, ImageNet-normalised, zero-padded to 1024²); its last (global) block's
   attention, per head kept where the cosine similarity of the two tokens' values exceeds ``trident_cos_fac`` × its
   mean (at most 0.9), averaged over heads and row-normalised, on the grid the image covers (64x64 for a square image),
   is the affinity W;
5. the spliced map, resized bilinearly to SAM's grid, is aggregated by W, then ``ln_post`` and ``proj``.

:func:`encode_image` returns these features of the whole image on SAM's grid (:attr:`Encoder.encode_image`); the
pipeline takes their cosine logits (SGA, with ``+sga``, over them) and resizes them bilinearly to the image, as their
code resizes its logits. Their optional SAM-prompt refinement (``--sam_refine``) is not implemented (decision D55).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError
from alignclip.methods.base import BASELINE_PROTOCOL, PLUGIN_ALPHA, Encoder, EncoderContext, Method
from alignclip.models.clip import block_qkv, embed_patches
from alignclip.models.vfm_builders import resolve_vfm
from alignclip.ops.proxyclip import proxy_attend, resize_values
from alignclip.ops.trident import (
    aggregate,
    clip_image_size,
    pil_resize,
    proxy_weights,
    sam_affinity,
    sam_input_size,
    similarity_mean,
    splice_ratio,
    splice_windows,
    window_layout,
)

__all__ = ["METHOD", "SAM_KEY", "check", "encode_image", "sam_weights", "spliced_features"]

#: Key of Trident's SAM in :attr:`EncoderContext.vfms` (the configuration field that names it).
SAM_KEY = "trident_sam"


def check(config: Any) -> None:
    """One-line ConfigError for bad Trident fields or pipeline stages that need windows."""
    if config.encoder != "trident":
        return
    if not (math.isfinite(config.trident_beta) and config.trident_beta >= 0):
        raise ConfigError(f"trident_beta={config.trident_beta} must be a finite number >= 0 (Trident: 1.2)")
    if not (math.isfinite(config.trident_gamma) and config.trident_gamma > 0):
        raise ConfigError(f"trident_gamma={config.trident_gamma} must be a finite number > 0 (Trident: 3.0)")
    if not math.isfinite(config.trident_cos_fac):
        raise ConfigError(f"trident_cos_fac={config.trident_cos_fac} must be a finite number (Trident: 1.2)")
    for name, on in (("cce", config.cce), ("upsampler", config.upsampler != "none")):
        if on:
            raise ConfigError(
                f"trident encodes the whole image (its windows are spliced inside it), so the per-window {name} "
                f"does not apply; set {'cce=False' if name == 'cce' else 'upsampler=none'}"
            )
    if config.cls_token_lambda:
        raise ConfigError(
            f"trident has no CLS features (their code drops the CLS token), so cls_token_lambda="
            f"{config.cls_token_lambda} has nothing to add; set cls_token_lambda=0"
        )
    if config.sga and config.sga_source == "upsampled":
        raise ConfigError(
            "trident has no upsampler, so SGA takes its prototypes from its features: set sga_source=patch"
        )
    if config.trident_sam != "none" and resolve_vfm(config.trident_sam).family == "vit":
        raise ConfigError(f"trident_sam={config.trident_sam!r} is a ViT, not a SAM image encoder; use sam_vitb")
    if config.encoder_vfm != "none" and resolve_vfm(config.encoder_vfm).family == "sam":
        raise ConfigError(f"encoder_vfm={config.encoder_vfm!r} is a SAM; Trident's proxy attention needs DINO")


def extra_vfms(config: Any) -> dict[str, tuple[str, str]]:
    """Trident's second VFM: the SAM of ``trident_sam``."""
    return {SAM_KEY: (config.trident_sam, config.trident_sam_pretrained)}


def _no_windows(ctx: EncoderContext, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    raise ConfigError(
        "the trident encoder works on whole images (Encoder.encode_image); run it through Segmentor.predict"
    )


def _unnormalised(ctx: EncoderContext, image: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` 0-255 integer pixels of a CLIP-normalised image ``[1, 3, H, W]`` (the uint8 image)."""
    mean = torch.tensor(ctx.clip.mean, device=image.device).view(3, 1, 1)
    std = torch.tensor(ctx.clip.std, device=image.device).view(3, 1, 1)
    return ((image[0].float() * std + mean) * 255.0).round().clamp(0, 255)


def sam_weights(ctx: EncoderContext, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """SAM's refined affinity ``[N, N]`` of the image and its grid ``(h, w)`` (N = h·w), as their ``get_sam_feat``.

    The image (uint8 pixels) is first resized (bilinearly, rounded) to sides that are multiples of CLIP's patch, as
    their ``cv2.resize`` (a no-op for the protocol's 448² images), then as SAM's predictor: longest side to SAM's
    native size (Pillow's bilinear filter, :func:`~alignclip.ops.trident.pil_resize`), normalised, zero-padded to
    the native square. The grid is the part of SAM's patch grid that the image covers.
    """
    cfg = ctx.config
    sam = ctx.vfms[SAM_KEY]
    if sam.family != "sam" or sam.native_size is None:
        raise ConfigError(
            f"trident_sam={cfg.trident_sam!r} is not a SAM image encoder with a native size; use sam_vitb"
        )
    side, ps = sam.native_size, sam.patch_size
    patch = ctx.clip.patch_size
    pixels = _unnormalised(ctx, image)
    h, w = pixels.shape[-2:]
    th, tw = -(-h // patch) * patch, -(-w // patch) * patch
    if (th, tw) != (h, w):  # their cv2.resize to multiples of CLIP's patch
        pixels = F.interpolate(pixels[None], size=(th, tw), mode="bilinear", align_corners=False)[0]
        pixels = pixels.round().clamp(0, 255)
    nh, nw = sam_input_size(th, tw, side)
    pixels = pil_resize(pixels, (nh, nw))
    mean = (sam.mean.to(pixels.device) * 255.0).view(3, 1, 1)
    std = (sam.std.to(pixels.device) * 255.0).view(3, 1, 1)
    x = F.pad((pixels - mean) / std, (0, side - nw, 0, side - nh))[None]
    qkv, grid = sam.last_block_qkv(x)  # [1, T, 3, heads, d], the full (padded) grid
    vh, vw = nh // ps, nw // ps  # their input_size // 16
    values = qkv[0, :, 2].transpose(0, 1).reshape(sam.num_heads, grid[0], grid[1], -1)[:, :vh, :vw]
    values = values.reshape(sam.num_heads, vh * vw, -1).float()

    def head_attention(head: int) -> torch.Tensor:  # [N, N]: the full softmax over T keys, cropped
        attn = sam.head_attention(qkv, grid, head)[0].view(grid[0], grid[1], grid[0], grid[1])
        return attn[:vh, :vw, :vh, :vw].reshape(vh * vw, vh * vw)

    weights = sam_affinity(head_attention, values, cfg.trident_cos_fac, cfg.trident_refine_neg_cos)
    return weights, (vh, vw)


def _dino_features(ctx: EncoderContext, windows: torch.Tensor) -> torch.Tensor:
    """DINO's patch features ``[B, N, C]`` (last block, final norm) of CLIP-normalised windows, float32."""
    vfm = ctx.vfm
    images = vfm.prepare(windows, ctx.clip.mean, ctx.clip.std, None)
    with vfm.position_embedding():
        tokens = vfm.model.forward_features(images)
    return tokens[:, vfm.num_prefix_tokens :].float()


def _proxy_outputs(
    ctx: EncoderContext, windows: torch.Tensor, weights: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """ProxyCLIP's last-block output ``[B, C, I, J]`` of windows (``out_proj`` of the proxy-mixed values, before
    ``ln_post``) on DINO's grid ``(I, J)``."""
    visual = ctx.clip.model.visual
    x, (h, w) = embed_patches(visual, windows, ctx.config.pos_embed_interp)
    b, _, c = x.shape
    blocks = visual.transformer.resblocks
    for blk in blocks[:-1]:
        x = blk(x)
    last = blocks[-1]
    _, _, v = block_qkv(last, x)  # [B, heads, L, d]
    values = resize_values(v[:, :, 1:], (h, w), grid)  # patch tokens only (their x[1:])
    o = proxy_attend(weights, values)
    out = last.attn.out_proj(o.transpose(1, 2).reshape(b, -1, c))  # [B, I*J, C]
    return out.transpose(1, 2).reshape(b, c, grid[0], grid[1])


def spliced_features(ctx: EncoderContext, image: torch.Tensor) -> torch.Tensor:
    """The windows' ProxyCLIP outputs spliced into one map ``[1, C, H', W']`` of the image (their ``dst_v``)."""
    cfg = ctx.config
    patch = ctx.clip.patch_size
    if cfg.crop % patch or cfg.stride % patch:
        raise ConfigError(
            f"trident splices windows on CLIP's patch grid: crop={cfg.crop} and stride={cfg.stride} must be "
            f"multiples of its patch {patch} (e.g. crop={cfg.crop - cfg.crop % patch or patch})"
        )
    h, w = image.shape[-2:]
    height, width = clip_image_size(h, w, patch, cfg.crop)
    x = (
        image
        if (height, width) == (h, w)
        else F.interpolate(image, (height, width), mode="bilinear", align_corners=False)
    )
    boxes = window_layout(height, width, cfg.crop, cfg.stride)
    wh, ww = boxes[0][1] - boxes[0][0], boxes[0][3] - boxes[0][2]
    vfm = ctx.vfm
    if wh % vfm.patch_size or ww % vfm.patch_size:
        raise ConfigError(
            f"{wh}x{ww} windows are not a multiple of the patch {vfm.patch_size} of encoder_vfm {vfm.name!r}; use a crop "
            f"that is a multiple of both patches"
        )
    dev = x.device
    rows = torch.tensor([b[0] for b in boxes], device=dev)[:, None] + torch.arange(wh, device=dev)
    cols = torch.tensor([b[2] for b in boxes], device=dev)[:, None] + torch.arange(ww, device=dev)
    windows = x[0][:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)  # [n, 3, wh, ww]
    n = len(boxes)
    step = cfg.window_batch if isinstance(cfg.window_batch, int) else n  # "auto": all windows at once (bounded)
    feats = torch.cat([_dino_features(ctx, windows[i : i + step]) for i in range(0, n, step)])  # [n, N, C]
    grid = vfm.grid_size(wh, ww)
    mean = similarity_mean(feats)  # over every window of the image, as their single batch
    outs = torch.cat(
        [
            _proxy_outputs(
                ctx,
                windows[i : i + step],
                proxy_weights(feats[i : i + step], mean, cfg.trident_beta, cfg.trident_gamma),
                grid,
            )
            for i in range(0, n, step)
        ]
    )  # [n, C, I, J]
    gh, gw = wh // patch, ww // patch
    ratio = splice_ratio(grid, (gh, gw))
    if tuple(grid) != (gh * ratio, gw * ratio):
        outs = F.interpolate(outs, size=(gh * ratio, gw * ratio), mode="bilinear", align_corners=False)
    cells = [
        (y1 // patch * ratio, y2 // patch * ratio, x1 // patch * ratio, x2 // patch * ratio) for y1, y2, x1, x2 in boxes
    ]
    return splice_windows(outs, cells, (height // patch * ratio, width // patch * ratio))


def encode_image(ctx: EncoderContext) -> torch.Tensor:
    """Trident's features of the whole image ``[1, D, h, w]`` on SAM's grid (see the module docstring), not normalised."""
    if ctx.image is None:
        raise ConfigError("the trident encoder needs the whole image (EncoderContext.image); use Segmentor.predict")
    image = ctx.image()
    visual = ctx.clip.model.visual
    weights, grid = sam_weights(ctx, image)
    spliced = spliced_features(ctx, image)
    out = visual.ln_post(aggregate(weights, spliced, grid))  # [N, C]
    if visual.proj is not None:
        out = out @ visual.proj
    return out.T.reshape(1, -1, grid[0], grid[1])


METHOD = Method(
    name="trident",
    paper_name="Trident",
    reference="Shi et al., ICCV 2025",
    settings=dict(BASELINE_PROTOCOL, encoder="trident", encoder_vfm="dino_vitb16"),
    summary="ProxyCLIP features of sub-windows spliced into one map, aggregated by SAM's refined last-block attention",
    encoder=Encoder(encode=_no_windows, check=check, uses_vfm=True, extra_vfms=extra_vfms, encode_image=encode_image),
    plugin_alpha=PLUGIN_ALPHA,
)
