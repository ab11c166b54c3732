"""CASS (Kim et al., CVPR 2025): spectral object-level context from a VFM's attention graph, object-presence text.

The last CLIP block attends with CLIP's key graph ``k kᵀ s`` mixed, head by head, with the low-rank distilled key
graph of the method's own VFM (DINO ViT-B/8), the heads paired by spectral matching (:mod:`alignclip.ops.cass`);
plus NACLIP's Gaussian neighbourhood bias, no residual and no FFN. The text embeddings are then adjusted per window
towards the patches of the class each cluster of classes most likely shows (:func:`adjust_text`), and the logits
mix in the similarity of the image's CLS embedding to the text (``cls_token_lambda``, the authors'
``global_semantics_weight``).

Follows the authors' code (``github.com/MICV-yonsei/CASS`` at 228ecdd: ``clip/model.py``'s ``custom_attn`` with
``attn_strategy='spectral'`` and ``arch='reduced'``, ``cass_segmentor.py``); the decisions register lists where
the preset differs. Their logits are ``(1 - g)·cos(p, t') + g·cos(c, t)``: :func:`adjust_text` returns
``(1 - g)·t'`` (the patch logits are linear in the text) and the shared CLS term adds ``g·cos(c, t)`` with the
original text (``sga_cls_term=False``), ``g = cls_token_lambda``.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError
from alignclip.methods.base import BASELINE_PROTOCOL, PLUGIN_ALPHA, Encoder, EncoderContext, Method
from alignclip.models.clip import block_qkv, embed_patches
from alignclip.models.vfm_builders import resolve_vfm
from alignclip.ops.attention import naclip_bias
from alignclip.ops.cass import (
    LOW_RANK_SOLVERS,
    distill_graphs,
    head_spectra,
    key_graph,
    match_range,
    min_cost_assignment,
    object_context_text,
    spectral_cost,
    ward_clusters,
)

__all__ = ["CASS_GLOBAL_SCOPES", "CASS_VFM_INPUTS", "METHOD", "adjust_text", "encode", "vfm_input"]

#: Where the CLS embedding of the global term comes from: each ``"window"``'s own, or the whole ``"image"``'s (the
#: authors' sliding-window path; needs the segmentor to hand the encoder the image, see the decisions register).
CASS_GLOBAL_SCOPES = ("window", "image")
#: The VFM's input: ``"authors"`` (their round trip: CLIP-normalised pixels de-normalised with ImageNet's statistics,
#: the third std misprinted 0.255, truncated to uint8, then ImageNet-normalised) or ``"plain"`` (the true pixels,
#: ImageNet-normalised: :meth:`~alignclip.models.vfm.VFM.prepare`).
CASS_VFM_INPUTS = ("authors", "plain")

_AUTHORS_INV_MEAN = (-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.255)  # their transforms.Normalize inverse
_AUTHORS_INV_STD = (1 / 0.229, 1 / 0.224, 1 / 0.255)


def vfm_input(ctx: EncoderContext, images: torch.Tensor) -> torch.Tensor:
    """The VFM's input ``[B, 3, H, W]`` from CLIP-normalised windows, as ``cass_vfm_input`` says."""
    vfm = ctx.vfm
    if ctx.config.cass_vfm_input == "plain":
        return vfm.prepare(images, ctx.clip.mean, ctx.clip.std)
    x = images.float()
    inv_mean = torch.tensor(_AUTHORS_INV_MEAN, device=x.device).view(1, 3, 1, 1)
    inv_std = torch.tensor(_AUTHORS_INV_STD, device=x.device).view(1, 3, 1, 1)
    pixels = torch.floor((x - inv_mean) / inv_std * 255).clamp(0, 255)  # numpy's astype('uint8') of positives
    return (pixels / 255 - vfm.mean.view(1, 3, 1, 1)) / vfm.std.view(1, 3, 1, 1)


def _vfm_keys(ctx: EncoderContext, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The VFM's last-block keys of the patch tokens ``[B, heads_vfm, N_vfm, d_vfm]`` and its patch grid."""
    vfm = ctx.vfm
    x = vfm_input(ctx, images)
    grid = vfm.grid_size(*x.shape[-2:])
    model = vfm.model
    last = model.blocks[-1]
    captured: dict[str, torch.Tensor] = {}
    hook = last.norm1.register_forward_hook(lambda m, i, o: captured.__setitem__("normed", o))
    try:
        with vfm.position_embedding():
            model.forward_features(x)
    finally:
        hook.remove()
    normed = captured["normed"]
    b, n_tokens, _ = normed.shape
    attn = last.attn
    qkv = attn.qkv(normed).view(b, n_tokens, 3, attn.num_heads, attn.head_dim)
    keys = attn.k_norm(qkv[:, :, 1]).transpose(1, 2)  # [B, heads, T, d]
    return keys[:, :, vfm.num_prefix_tokens :], grid


def _check_inputs(ctx: EncoderContext, images: torch.Tensor, heads: int) -> None:
    vfm = ctx.vfm
    if vfm is None or vfm.family != "vit":
        name = "none" if vfm is None else vfm.name
        raise ConfigError(f"CASS needs a DINO-style ViT as encoder_vfm (got {name}); set encoder_vfm=dino_vitb8")
    h, w = images.shape[-2:]
    if h % vfm.patch_size or w % vfm.patch_size:
        raise ConfigError(
            f"CASS: the {h}x{w} windows do not split into {vfm.name}'s {vfm.patch_size}-pixel patches, so its grid "
            f"cannot be aligned with CLIP's; use a crop that is a multiple of {vfm.patch_size} and of CLIP's patch"
        )
    if vfm.embed_dim % heads:
        raise ConfigError(
            f"CASS pairs heads one to one: {vfm.name}'s width {vfm.embed_dim} does not split into CLIP's {heads} "
            f"heads; use a VFM whose width is a multiple of {heads} (dino_vitb8 for ViT-B/16)"
        )


def _global_embedding(ctx: EncoderContext, tokens_cls: torch.Tensor) -> torch.Tensor:
    """The CLS embedding of the global term ``[B, D]``: the window's (given) or the whole image's."""
    c = ctx.config
    if c.cass_global_scope == "window":
        return tokens_cls
    image = ctx.image  # () -> [1, 3, H, W]: the whole CLIP-normalised image, set by Segmentor.predict
    if image is None:
        raise ConfigError(
            "cass_global_scope='image' needs the whole image (EncoderContext.image, set by Segmentor.predict); "
            "segment with predict, or use cass_global_scope='window' for windows on their own"
        )
    cache = getattr(ctx, "cass_image_cls", None)
    if cache is None or cache[0] is not image:  # once per image (the segmentor sets a new callable per image)
        cache = (image, _cls_embedding(ctx, image()))
        ctx.cass_image_cls = cache
    return cache[1].expand(tokens_cls.shape[0], -1)


def _cls_embedding(ctx: EncoderContext, image: torch.Tensor) -> torch.Tensor:
    """CLIP's plain CLS embedding ``[1, D]`` of a CLIP-normalised image ``[1, 3, H, W]`` (any size: the position
    embedding resampled, the patch convolution dropping partial patches as the authors' forward does)."""
    visual = ctx.clip.model.visual
    x, _ = embed_patches(visual, image, ctx.config.pos_embed_interp)
    for blk in visual.transformer.resblocks:
        x = blk(x)
    out = visual.ln_post(x[:, 0])
    return out @ visual.proj if visual.proj is not None else out


def encode(ctx: EncoderContext, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CASS's dense features of CLIP-normalised windows ``[B, 3, H, W]``.

    Returns:
        ``(patch [B, D, H/p, W/p], cls [B, D])``: ``cls`` is the global term's CLS embedding (the last block run
        unchanged on the CLS token; the image's with ``cass_global_scope='image'``).
    """
    c = ctx.config
    visual = ctx.clip.model.visual
    x, (h, w) = embed_patches(visual, images, c.pos_embed_interp)
    b, _, width = x.shape
    blocks = visual.transformer.resblocks
    for blk in blocks[:-1]:
        x = blk(x)
    last = blocks[-1]
    full = visual.ln_post(last(x)[:, 0])  # the unchanged last block, CLS token: the global embedding
    window_cls = full @ visual.proj if visual.proj is not None else full
    attn = last.attn
    heads = attn.num_heads
    _check_inputs(ctx, images, heads)
    _, k, v = block_qkv(last, x)  # each [B, H, L, d]
    k, v = k[:, :, 1:], v[:, :, 1:]  # patch tokens only (the authors drop the CLS token here)
    scale = (width // heads) ** -0.5

    vk, (hv, wv) = _vfm_keys(ctx, images)  # [B, Hv, Nv, dv]
    if c.cass_vfm_half:
        vk = vk.half()  # the authors' dino_attn.half()
    vk = vk.transpose(-1, -2).reshape(b, -1, hv, wv)  # channels head-major, as their reshape
    if (hv, wv) != (h, w):
        vk = F.interpolate(vk, size=(h, w), mode="bilinear", align_corners=False)
    vk = vk.reshape(b, heads, -1, h * w).transpose(-1, -2)  # [B, H, N, C / H]: regrouped into CLIP's heads
    vk = match_range(vk, k, dims=(1, 2, 3))

    clip_graphs = key_graph(k, scale)  # [B, H, N, N]
    vfm_graphs = key_graph(vk, scale)
    exact = c.cass_lowrank_solver == "eigh"
    eig = torch.linalg.eigh(vfm_graphs.double()) if exact else None  # one decomposition: spectrum and low rank
    vfm_spectra = head_spectra(vfm_graphs, c.cass_k_eigen, eig[0] if exact else None)
    cost = spectral_cost(vfm_spectra, head_spectra(clip_graphs, c.cass_k_eigen))
    sigma = min_cost_assignment(cost)
    mixed = distill_graphs(
        clip_graphs.float(),
        vfm_graphs,
        cost,
        sigma,
        c.cass_scale_factor,
        c.cass_rank,
        c.cass_eigenscaling,
        c.cass_lowrank_solver,
        eig,
    )
    bias = naclip_bias((h, w), c.cass_gaussian_std, 0, mixed.device, mixed.dtype)
    weights = torch.softmax(mixed + bias, dim=-1)
    o = (weights.to(v.dtype) @ v).transpose(1, 2).reshape(b, h * w, width)
    o = visual.ln_post(attn.out_proj(o))  # no residual, no FFN (arch='reduced')
    patch = o @ visual.proj if visual.proj is not None else o
    global_cls = F.normalize(_global_embedding(ctx, window_cls).float(), dim=-1)  # the CLS adjust_text receives
    return patch.transpose(1, 2).reshape(b, -1, h, w), global_cls


def adjust_text(ctx: EncoderContext, patch: torch.Tensor, cls: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Object-presence text per window, scaled by ``1 - cls_token_lambda`` (see the module docstring).

    ``cls`` is the windows' global CLS embedding that :func:`encode` returned. The clusters and the class choice
    use the original text ``ctx.text``, as the authors' ``query_features``; the adjusted rows are those of ``text``.

    Args:
        patch: ``[B, D, h, w]`` CASS's patch features of the windows.
        cls: ``[B, D]`` their global CLS embedding (L2-normalised by :func:`encode`).
        text: ``[B, Q, D]`` the text embeddings (after SGA when it is on).

    Returns:
        ``[B, Q, D]``.
    """
    c = ctx.config
    global_sim = F.normalize(cls, dim=-1) @ ctx.text.T  # [B, Q], the original text as the authors' query_features
    clusters = ward_clusters(ctx.text, c.cass_cluster_threshold)
    adjusted = object_context_text(
        text, patch.flatten(2).transpose(1, 2), global_sim, clusters, c.cass_text_weight, c.cass_top_k
    )
    return adjusted * (1.0 - c.cls_token_lambda)


def _check_vfm(c) -> None:
    """The VFM must be a DINO-style ViT whose patch tiles the windows (its grid is then resized onto CLIP's)."""
    if c.encoder_vfm == "none":
        return  # the config's own check asks for a VFM
    spec = resolve_vfm(c.encoder_vfm)  # ConfigError for an unknown name
    if spec.family == "sam":
        raise ConfigError(
            f"encoder_vfm={c.encoder_vfm!r} is a SAM encoder; CASS reads a ViT's last-block keys of its patch "
            f"tokens: use a DINO-style ViT (dino_vitb8)"
        )
    match = re.search(r"patch(\d+)", spec.timm_tag or "")
    patch = int(spec.args["patch_size"]) if spec.args and "patch_size" in spec.args else match and int(match.group(1))
    if patch and c.crop % patch:
        raise ConfigError(
            f"encoder_vfm={c.encoder_vfm!r} has patch {patch}, which does not tile crop={c.crop} windows (its patch "
            f"grid cannot be aligned with CLIP's); use a crop that is a multiple of {patch}"
        )


def check(config) -> None:
    """One-line ConfigError for a bad CASS field."""
    c = config
    if c.cass_global_scope not in CASS_GLOBAL_SCOPES:
        raise ConfigError(
            f"cass_global_scope={c.cass_global_scope!r} is not valid; choose one of {', '.join(CASS_GLOBAL_SCOPES)}"
        )
    if c.cass_vfm_input not in CASS_VFM_INPUTS:
        raise ConfigError(
            f"cass_vfm_input={c.cass_vfm_input!r} is not valid; choose one of {', '.join(CASS_VFM_INPUTS)}"
        )
    if c.cass_lowrank_solver not in LOW_RANK_SOLVERS:
        raise ConfigError(
            f"cass_lowrank_solver={c.cass_lowrank_solver!r} is not valid; choose one of {', '.join(LOW_RANK_SOLVERS)}"
        )
    for name in ("cass_k_eigen", "cass_rank", "cass_top_k"):
        if getattr(c, name) < 1:
            raise ConfigError(f"{name}={getattr(c, name)} must be >= 1")
    if not c.cass_gaussian_std > 0:
        raise ConfigError(f"cass_gaussian_std={c.cass_gaussian_std} must be > 0 (patches; the authors use 5)")
    if not c.cass_scale_factor >= 0:
        raise ConfigError(f"cass_scale_factor={c.cass_scale_factor} must be >= 0 (the authors use 10)")
    if not 0.0 <= c.cass_text_weight <= 1.0:
        raise ConfigError(f"cass_text_weight={c.cass_text_weight} is outside [0, 1]; the authors use 0.01-0.05")
    if not c.cass_cluster_threshold >= 0:
        raise ConfigError(f"cass_cluster_threshold={c.cass_cluster_threshold} must be >= 0 (0: one class a cluster)")
    if c.encoder == "cass":
        _check_vfm(c)
        if c.sga_cls_term:
            raise ConfigError("encoder 'cass' needs sga_cls_term=False (its global term uses the original text)")
        if not 0.0 <= c.cls_token_lambda < 1.0:
            raise ConfigError(
                f"cls_token_lambda={c.cls_token_lambda} is CASS's global weight g in (1 - g)·cos(p, t') + g·cos(c, t); "
                f"set it in [0, 1) (the authors: 0.1-0.4)"
            )


METHOD = Method(
    name="cass",
    paper_name="CASS",
    reference="Kim et al., CVPR 2025",
    settings=dict(
        BASELINE_PROTOCOL,
        encoder="cass",
        encoder_vfm="dino_vitb8",
        cls_token_lambda=0.25,  # the authors' global_semantics_weight (Pascal Context 59/60 configuration)
        sga_cls_term=False,
    ),
    summary="CLIP's key graph mixed with DINO's spectrally matched low-rank key graph; object-presence text",
    encoder=Encoder(encode=encode, adjust_text=adjust_text, check=check, uses_vfm=True),
    plugin_alpha=PLUGIN_ALPHA,
)
