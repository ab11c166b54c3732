"""CorrCLIP (Zhang et al., ICCV 2025): CLIP's patch correlations rebuilt inside class-agnostic regions.

Per window, as the authors' code (github.com/zdk258/CorrCLIP, commit 103bc18, ``CorrCLIPv1/corrclip_segmentor.py``
and ``VisionTransformer.forward`` of their ``open_clip/transformer.py``) does (maths in :mod:`alignclip.ops.corrclip`):

1. region labels of the window: the whole image's masks cropped at the window (``corrclip_mask_scope="image"``,
   theirs) or the window's own (``"window"``), from the mask generator (:mod:`alignclip.models.masks`; SAM 2's
   automatic masks as theirs, or the tiny stand-in), nearest-resized to DINO's patch grid;
2. DINO's (``encoder_vfm``, ViT-B/8) ``q + k`` of its last block, L2-normalised: cosine similarities S; regions
   merged by the similarity of their mean features (their DBSCAN); the correlation scope restricted to the regions
   and the weights ``softmax(τ S)`` (:func:`~alignclip.ops.corrclip.correlation_weights`);
3. CLIP's first L-1 blocks unchanged, plus one class token per region attending to CLIP's CLS token and its
   region's patches (the semantic branch); the spatial branch is the mean of the outputs of blocks L-1-n..L-2
   (1-based; n = 5 for 12 blocks: blocks 6-10);
4. the last block: the values of the main and spatial inputs (``ln_1``, value projection, resized bilinearly to
   DINO's grid) mixed by the weights and projected (no residual, no FFN); the region tokens through the full block;
   ``ln_post`` of each, ``main + α·spatial + β·semantic`` (their ALPHA 1, BETA 0.5), ``proj``.

The patch features are on DINO's grid (28x28 at a 224 window). After the pipeline's argmax, every region of the
whole image's masks (label 0 excepted) takes its majority class (:func:`correct_labels`, their map correction;
``corrclip_map_correction``). The CLS features (only for the CLS term, off in the Table-2 protocol) are CLIP's
standard last block on the CLS token.

``corrclip_mask_scope="image"`` needs each window's place in the image: the encoder asks the segmentor for the
windows' boxes (``Encoder.uses_boxes``) and crops the whole image's masks there. When the image context is downsampled
(processing size over :data:`~alignclip.methods.base.IMAGE_CONTEXT_SIDE`), the windows' own masks are used. The
whole image's masks are made once per image (cached by the image callable's identity, and on disk for SAM 2); SAM 2
per window (``"window"`` scope) reads each window back to the host, as its generator takes numpy images.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError
from alignclip.methods.base import BASELINE_PROTOCOL, IMAGE_CONTEXT_SIDE, PLUGIN_ALPHA, Encoder, EncoderContext, Method
from alignclip.models.clip import embed_patches
from alignclip.models.masks import MASK_GENERATORS, cached_labels, create_mask_generator
from alignclip.ops.corrclip import (
    apply_vote,
    correlation_weights,
    dense_labels,
    merge_regions,
    nearest_index,
    region_token_mask,
    region_tokens_to_patches,
    scope_mask,
    spatial_layer_count,
    spatial_range,
    vote_counts,
)
from alignclip.ops.proxyclip import resize_values
from alignclip.ops.windows import pad_to_multiple, window_size

__all__ = [
    "CORRCLIP_MASK_SCOPES",
    "METHOD",
    "PAD_LABEL",
    "check",
    "correct_labels",
    "encode",
    "image_labels",
    "window_labels",
]

CORRCLIP_MASK_SCOPES = ("image", "window")
#: Label of padded pixels (their ``F.pad(..., value=10000)``); larger than any mask's, so never a window's first.
PAD_LABEL = 10000

_GENERATORS: dict[tuple, Any] = {}  # (generator fields, device) → generator (SAM 2 loads once per process)


def check(config: Any) -> None:
    """One-line ConfigError for bad CorrCLIP fields."""
    if config.encoder != "corrclip":
        return
    if config.corrclip_mask_generator not in MASK_GENERATORS:
        raise ConfigError(
            f"corrclip_mask_generator={config.corrclip_mask_generator!r} is not valid; choose one of "
            f"{', '.join(MASK_GENERATORS)}"
        )
    if config.corrclip_mask_scope not in CORRCLIP_MASK_SCOPES:
        raise ConfigError(
            f"corrclip_mask_scope={config.corrclip_mask_scope!r} is not valid; choose one of "
            f"{', '.join(CORRCLIP_MASK_SCOPES)}"
        )
    if config.corrclip_max_regions < 2:
        raise ConfigError(f"corrclip_max_regions={config.corrclip_max_regions} must be >= 2 (default 128)")
    for name in ("corrclip_tau", "corrclip_merge_eps"):
        v = getattr(config, name)
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{name}={v} must be a finite number > 0 (their code: TAU 4, EPS 0.2)")
    for name in ("corrclip_spatial_weight", "corrclip_semantic_weight"):
        v = getattr(config, name)
        if not math.isfinite(v):
            raise ConfigError(f"{name}={v} must be a finite number (their code: ALPHA 1.0, BETA 0.5)")
    masks = config.corrclip_points_per_side**2 + 2  # SAM 2 gives at most one mask per point; label 0 and padding
    if config.corrclip_mask_generator == "sam2" and masks > config.corrclip_max_regions:
        raise ConfigError(
            f"corrclip_points_per_side={config.corrclip_points_per_side} can give {masks} labels per window, more than "
            f"corrclip_max_regions={config.corrclip_max_regions}; set corrclip_max_regions >= {masks}"
        )
    if config.corrclip_spatial_layers is not None and config.corrclip_spatial_layers < 1:
        raise ConfigError(
            f"corrclip_spatial_layers={config.corrclip_spatial_layers} must be >= 1, or None for their rule "
            f"(5 of 12 blocks)"
        )


def _generator(cfg: Any, device: torch.device):
    key = (
        cfg.corrclip_mask_generator,
        cfg.corrclip_sam2_config,
        cfg.corrclip_sam2_checkpoint,
        cfg.corrclip_points_per_side,
        cfg.corrclip_pred_iou_thresh,
        cfg.corrclip_stability_score_thresh,
        str(device),
    )
    if key not in _GENERATORS:
        _GENERATORS[key] = create_mask_generator(cfg, device)
    return _GENERATORS[key]


def image_labels(ctx: EncoderContext) -> torch.Tensor | None:
    """The whole image's region labels ``[H, W]`` (at the context's size), once per image callable; None outside
    :meth:`~alignclip.pipeline.segmentor.Segmentor.predict`."""
    return _image_state(ctx)["labels"] if ctx.image is not None else None


def _image_state(ctx: EncoderContext) -> dict[str, Any]:
    """What is derived from the whole image, once per image callable (kept on the context as CASS keeps its image
    CLS; the segmentor sets a new callable per image): the image, its labels, and the windows' lookup."""
    state = getattr(ctx, "corrclip_image", None)
    if state is None or state["key"] is not ctx.image:
        image = ctx.image()
        gen = _generator(ctx.config, image.device)
        labels = generate_masks(gen, image, ctx.clip.mean, ctx.clip.std, ctx.config.corrclip_mask_cache)
        state = dict(key=ctx.image, image=image, labels=labels.to(image.device))
        ctx.corrclip_image = state
    return state


def window_labels(ctx: EncoderContext, windows: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """Region labels ``[B, H, W]`` of padded CLIP-normalised windows ``[B, 3, H, W]`` (see the module docstring):
    with the ``"image"`` scope and the windows' ``boxes`` ``[B, 4]`` (y1, y2, x1, x2), the whole image's masks at
    each window's place; otherwise the windows' own masks."""
    cfg = ctx.config
    labels = image_labels(ctx) if cfg.corrclip_mask_scope == "image" and boxes is not None else None
    if labels is not None:
        height, width = labels.shape[-2:]
        exact = max(height, width) < IMAGE_CONTEXT_SIDE or (
            cfg.long_side is not None and cfg.long_side <= IMAGE_CONTEXT_SIDE
        )  # the context image is the processing-size image (not downsampled): the boxes index it
        wh, ww = window_size(height, width, cfg.crop)
        left, right, top, bottom = pad_to_multiple(wh, ww, ctx.clip.patch_size)
        if exact and (wh + top + bottom, ww + left + right) == tuple(windows.shape[-2:]):
            boxes = boxes.to(labels.device)
            rows = boxes[:, 0, None, None] + torch.arange(wh, device=labels.device)[None, :, None]
            cols = boxes[:, 2, None, None] + torch.arange(ww, device=labels.device)[None, None, :]
            crops = labels[rows, cols]  # [B, wh, ww]
            return (
                F.pad(crops, (left, right, top, bottom), value=PAD_LABEL) if (left or right or top or bottom) else crops
            )
    gen = _generator(cfg, windows.device)
    return generate_masks(gen, windows, ctx.clip.mean, ctx.clip.std)


def generate_masks(gen, images: torch.Tensor, mean, std, cache: bool | None = None) -> torch.Tensor:
    """Region labels from the mask generator, the one place masks are generated (the benchmark times it apart,
    stage ``masks``): ``[B, H, W]`` of a batch of CLIP-normalised windows ``[B, 3, H, W]`` (``cache`` None), or
    ``[H, W]`` of one whole image ``[1, 3, H, W]``, through the disk cache when ``cache`` is True."""
    if cache is None:
        return gen(images, mean, std)
    return cached_labels(gen, images, mean, std, cache)


def _dino_qk(ctx: EncoderContext, windows: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """DINO's last-block ``q + k`` of the patch tokens, L2-normalised ``[B, N, C]``, and its grid (their features)."""
    vfm = ctx.vfm
    height, width = windows.shape[-2:]
    if height % vfm.patch_size or width % vfm.patch_size:
        raise ConfigError(
            f"a {height}x{width} window is not a multiple of VFM {vfm.name!r}'s patch {vfm.patch_size}; use windows "
            f"(crop, image sides) that are multiples of it"
        )
    images = vfm.prepare(windows, ctx.clip.mean, ctx.clip.std, None)
    captured: dict[str, torch.Tensor] = {}
    hook = vfm.model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: captured.__setitem__("qkv", o))
    try:
        with vfm.position_embedding():
            vfm.model.forward_features(images)
    finally:
        hook.remove()
    qkv = captured["qkv"]
    b, t, _ = qkv.shape
    qkv = qkv.reshape(b, t, 3, -1)
    feats = (qkv[:, :, 0] + qkv[:, :, 1])[:, vfm.num_prefix_tokens :]
    return F.normalize(feats.float(), dim=-1), vfm.grid_size(*images.shape[-2:])


def _region_block(block: torch.nn.Module, tokens: torch.Tensor, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """One residual block for the region tokens ``[B, S, C]``: attention to the block's input ``x [B, 1 + n, C]``
    where ``keys [B, S, 1 + n]`` allows, then the block's FFN (their extra tokens, which no other token sees)."""
    attn = block.attn
    b, s, c = tokens.shape
    heads = attn.num_heads
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(block.ln_1(tokens), w[:c], bias[:c]).view(b, s, heads, -1).transpose(1, 2)
    kv = F.linear(block.ln_1(x), w[c:], bias[c:]).view(b, x.shape[1], 2, heads, -1).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=keys[:, None])
    tokens = tokens + block.ls_1(attn.out_proj(o.transpose(1, 2).reshape(b, s, c)))
    return tokens + block.ls_2(block.mlp(block.ln_2(tokens)))


def encode(
    ctx: EncoderContext, windows: torch.Tensor, boxes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CorrCLIP's dense features of a batch of windows (see the module docstring); ``boxes`` ``[B, 4]``: where the
    windows lie in the image (the ``"image"`` mask scope crops the whole image's masks there).

    Returns:
        ``patch [B, D, I, J]`` on DINO's patch grid and ``cls [B, D]`` (CLIP's standard CLS output), not normalised.
    """
    cfg = ctx.config
    visual = ctx.clip.model.visual
    slots = cfg.corrclip_max_regions
    feats, grid = _dino_qk(ctx, windows)  # [B, N, C]
    b = feats.shape[0]
    labels = window_labels(ctx, windows, boxes)  # [B, H, W]
    on_grid = F.interpolate(labels[:, None].float(), size=grid, mode="nearest").long().flatten(1)  # [B, N]
    ids = merge_regions(dense_labels(on_grid, slots), feats, slots, cfg.corrclip_merge_eps)
    sim = feats @ feats.transpose(1, 2)
    weights = correlation_weights(sim, scope_mask(ids, sim), cfg.corrclip_tau)  # [B, N, N]

    x, (h, w) = embed_patches(visual, windows, cfg.pos_embed_interp)
    ids_clip = F.interpolate(ids.view(b, 1, *grid).float(), size=(h, w), mode="nearest")  # [B, 1, h, w]
    ids_back = F.interpolate(ids_clip, size=grid, mode="nearest").long().flatten(1)  # their expand_masks
    keys = region_token_mask(ids_clip.long().flatten(1), slots)  # [B, S, 1 + h*w]
    tokens = x[:, :1].expand(b, slots, -1)
    blocks = visual.transformer.resblocks
    depth = len(blocks)
    lo, hi = spatial_range(depth, cfg.corrclip_spatial_layers or spatial_layer_count(depth))
    spatial = []
    for i, blk in enumerate(blocks[:-1]):  # a loop over layers
        tokens = _region_block(blk, tokens, x, keys)
        x = blk(x)
        if lo <= i <= hi:
            spatial.append(x)
    last = blocks[-1]
    both = torch.cat([x, torch.stack(spatial).mean(0)], dim=0)  # [2B, 1 + n, C]: main and spatial inputs
    c = both.shape[-1]
    v = F.linear(last.ln_1(both), last.attn.in_proj_weight[2 * c :], last.attn.in_proj_bias[2 * c :])[:, 1:]
    v = resize_values(v[:, None], (h, w), grid)[:, 0]  # [2B, N, C]
    mixed = last.attn.out_proj(weights.repeat(2, 1, 1).to(v.dtype) @ v)
    semantic = region_tokens_to_patches(_region_block(last, tokens, x, keys), ids_back)  # [B, N, C]

    x_cls = last(x)[:, :1]  # CLIP's standard last block for the CLS features
    ln = visual.ln_post
    out = ln(mixed[:b]) + cfg.corrclip_spatial_weight * ln(mixed[b:]) + cfg.corrclip_semantic_weight * ln(semantic)
    out = torch.cat([ln(x_cls), out], dim=1)
    if visual.proj is not None:
        out = out @ visual.proj
    return out[:, 1:].transpose(1, 2).reshape(b, -1, grid[0], grid[1]), out[:, 0]


def correct_labels(ctx: EncoderContext, labels: np.ndarray) -> np.ndarray:
    """Their map correction of the final ``[H0, W0]`` label map: each region of the whole image's masks (resized
    nearest to it; its smallest label excepted) takes its majority class (off: ``corrclip_map_correction``).

    Runs in strips of rows (two passes: counts, then the vote), so memory stays bounded on large tiles."""
    if not ctx.config.corrclip_map_correction:
        return labels
    regions = image_labels(ctx)
    if regions is None:
        return labels
    device = regions.device
    values, dense = torch.unique(regions, return_inverse=True)  # [Hc, Wc] ids, 0 = the smallest label
    h0, w0 = labels.shape
    rows = nearest_index(h0, regions.shape[0], device)
    cols = nearest_index(w0, regions.shape[1], device)
    num_classes = int(labels.max()) + 1
    step = max(1, (1 << 22) // max(w0, 1))  # rows per strip: ~4 M pixels at a time

    def strip(r: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = dense[rows[r : r + step]][:, cols]
        return torch.from_numpy(labels[r : r + step].astype(np.int64)).to(device), ids

    counts = sum(vote_counts(*strip(r), len(values), num_classes) for r in range(0, h0, step))
    out = np.empty_like(labels)
    for r in range(0, h0, step):
        out[r : r + step] = apply_vote(*strip(r), counts).cpu().numpy().astype(labels.dtype)
    return out


METHOD = Method(
    name="corrclip",
    paper_name="CorrCLIP",
    reference="Zhang et al., ICCV 2025",
    settings=dict(BASELINE_PROTOCOL, encoder="corrclip", encoder_vfm="dino_vitb8"),
    summary="DINO correlations inside SAM 2 regions mix the last block's values; spatial and region-token branches; "
    "majority vote inside masks",
    encoder=Encoder(
        encode=encode,
        check=check,
        uses_vfm=True,
        correct_labels=correct_labels,
        stages=(("masks", sys.modules[__name__], "generate_masks"),),
        uses_boxes=True,
        prepare=lambda config, device: _generator(config, device) and None,
    ),
    plugin_alpha=PLUGIN_ALPHA,
)
