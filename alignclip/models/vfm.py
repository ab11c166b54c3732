"""Vision foundation models (VFMs) for Cluster-Constrained Enhancement (CCE, paper Sec. 3.3).

A :class:`VFM` wraps a frozen timm ViT and returns, for a batch of images, the patch features
F (clustered by Eq. 9) and the head-averaged self-attention A of the last block (the affinity
masked by Eq. 10-11 and used for propagation in Eq. 12).

Names (``list_vfms()``):

- ``dino_vitb16`` / ``dino_vitb8``: DINO ViT-B/16 and ViT-B/8 (timm ``vit_base_patch16_224.dino``,
  ``vit_base_patch8_224.dino``). No native size: a 224x224 window gives 14x14 / 28x28 patches.
- ``sam_vitb``: the SAM ViT-B image encoder (timm ``samvit_base_patch16.sa1b``), native size
  1024x1024 (64x64 patches). Windowed attention (14x14 patches, zero-padded when the grid is not a
  multiple of 14) in most blocks; the last block is global and adds SAM's decomposed relative
  position bias to its attention logits (included in A).
- ``dino_vits8``, ``dino_vits16``: DINO ViT-S; ``dinov2_vit{s,b,l}14_reg``: DINOv2 with 4 registers (timm
  ``vit_*_patch14_reg4_dinov2.lvd142m``).
- any timm ViT or SAM model name, and JSON architecture files (:func:`~alignclip.models.vfm_builders.resolve_vfm`).
- ``tiny`` / ``tiny_sam``: tiny random models with the same layouts for tests (embed 64, depth 2,
  4 heads, patch 16; ``tiny_sam`` has native size 224 and window 7); ``tiny_dino_b8`` / ``tiny_dino_b16``
  (architecture files: embed 128, depth 12, 2 heads of 64, DINO's position-embedding interpolation) stand in for
  DINO ViT-B/8 and B/16 in the parity tests; ``tiny_sam_1024`` (an architecture file: SAM's layout at its native
  1024², embed 96, depth 2, 12 heads, last block global) stands in for SAM ViT-B in Trident's. They have no published
  weights: ``pretrained="default"`` gives random weights, drawn from ``seed``.

Every model accepts any input whose sides are multiples of its patch size. At a size other than its
native one, SAM's absolute position embedding is resampled (bicubic) and its relative position
tables are interpolated (linear) to the new grid, both exactly as timm's own forward does; the
weights were trained at the native size only. :meth:`VFM.prepare` picks the size.

Builders never download by themselves in offline mode: ``pretrained="default"`` reads the timm
weights from the Hugging Face cache and otherwise raises :class:`WeightsNotFoundError`.

The named specs and the timm builders live in :mod:`alignclip.models.vfm_builders`;
this module holds the :class:`VFM` wrapper and :func:`create_vfm`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.layers import Attention as TimmAttention
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_sam import VisionTransformerSAM, get_decomposed_rel_pos_bias
from torch import Tensor, nn

from alignclip.errors import CheckpointError, ConfigError, InputError, WeightsNotFoundError
from alignclip.models.vfm_builders import build_timm_model, build_tiny_model, resolve_vfm

__all__ = ["POS_EMBED_MODES", "VFM", "create_vfm", "dino_pos_embed"]

POS_EMBED_MODES = ("timm", "dino")


def dino_pos_embed(pos_embed: Tensor, grid: tuple[int, int], num_prefix: int = 1) -> Tensor:
    """DINO's own resampling of a ``[1, prefix + n*n, D]`` position embedding to a ``grid = (h, w)`` patch grid.

    As ``interpolate_pos_encoding`` of DINO's code: unchanged when the grid is the trained square one; else bicubic
    (no antialiasing) with ``scale_factor = ((h + 0.1) / n, (w + 0.1) / n)`` on the (rows, columns) axes (DINO names
    the rows ``w``: ``B, nc, w, h = x.shape``), so the samples differ from timm's exact-size resampling.
    """
    n_old = pos_embed.shape[1] - num_prefix
    side = int(math.isqrt(n_old))
    h, w = grid
    if h * w == n_old and h == w:
        return pos_embed
    prefix, patch = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    dim = patch.shape[-1]
    patch = F.interpolate(
        patch.reshape(1, side, side, dim).permute(0, 3, 1, 2).float(),
        scale_factor=((h + 0.1) / side, (w + 0.1) / side),
        mode="bicubic",
    )
    if tuple(patch.shape[-2:]) != (h, w):
        raise ConfigError(f"DINO position embedding resampled to {tuple(patch.shape[-2:])}, expected {(h, w)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)
    return torch.cat([prefix, patch], dim=1)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VFM(nn.Module):
    """A frozen ViT giving patch features and last-block attention (CCE, Eq. 9-12).

    Always in eval mode (``train()`` is a no-op) with ``requires_grad=False`` on every weight.

    Attributes:
        name: The VFM name (see :func:`list_vfms`).
        family: ``"vit"`` (DINO-style, prefix tokens) or ``"sam"`` (SAM image encoder).
        model: The timm module.
        patch_size: Side of a patch in pixels.
        native_size: Square input side the weights were trained at (SAM: 1024), or None (DINO).
            Informative: any multiple of ``patch_size`` is accepted (see :meth:`prepare`).
        embed_dim: Feature width D.
        num_heads: Heads of the last block.
        num_prefix_tokens: CLS/register tokens before the patch tokens (0 for SAM).
        mean, std: Per-channel input normalisation [3] on the 0-1 scale.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        model: nn.Module,
        name: str,
        family: str,
        native_size: int | None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        pos_embed: str = "timm",
    ) -> None:
        super().__init__()
        last = model.blocks[-1]
        if family == "vit" and not isinstance(last.attn, TimmAttention):
            raise ConfigError(
                f"VFM '{name}': last block attention {type(last.attn).__name__} is "
                "not timm's plain Attention; use a standard timm ViT"
            )
        if family == "sam" and (last.window_size != 0 or last.attn.rope is not None):
            raise ConfigError(
                f"VFM '{name}': the last SAM block must use global attention without "
                "RoPE; put the last block index in global_attn_indexes"
            )
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.family = family
        self.native_size = native_size
        if pos_embed not in POS_EMBED_MODES or (pos_embed == "dino" and family != "vit"):
            raise ConfigError(f"VFM '{name}': pos_embed={pos_embed!r} is not valid; use timm (or dino for a ViT)")
        self.pos_embed = pos_embed  # resampling of the position embedding at other grids: "timm" or "dino"
        self.patch_size = int(model.patch_embed.patch_size[0])
        self.embed_dim = int(model.embed_dim)
        self.num_heads = int(last.attn.num_heads)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> VFM:
        """Keep the frozen VFM in eval mode whatever ``mode`` says."""
        return super().train(False)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (h, w) of an input of ``height`` x ``width`` pixels."""
        return height // self.patch_size, width // self.patch_size

    def prepare(
        self,
        images: Tensor,
        clip_mean: Sequence[float] | Tensor,
        clip_std: Sequence[float] | Tensor,
        size: int | tuple[int, int] | None = None,
    ) -> Tensor:
        """Turn CLIP-normalised images into this VFM's input.

        Undoes the CLIP normalisation, applies ``self.mean``/``self.std`` and resizes bilinearly
        (align_corners=False) to ``size`` when given; ``size=None`` keeps H x W (the window's own
        size). Pass ``size=vfm.native_size`` to run a model at its training resolution.

        Args:
            images: CLIP-normalised images [B, 3, H, W].
            clip_mean: CLIP's per-channel mean (0-1 scale), 3 values.
            clip_std: CLIP's per-channel std (0-1 scale), 3 values.
            size: Target side S, or (S_h, S_w), multiples of ``patch_size``; None keeps H x W.

        Returns:
            VFM-normalised images [B, 3, S_h, S_w] (or [B, 3, H, W]), float32 unless ``images``
            is another floating dtype.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(
                f"VFM.prepare expects images [B, 3, H, W], got {tuple(images.shape)}; pass a batch of RGB images"
            )
        dtype = images.dtype if images.is_floating_point() else torch.float32
        x = images.float()
        c_mean = torch.as_tensor(clip_mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        c_std = torch.as_tensor(clip_std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        v_mean = self.mean.to(x.device).view(1, 3, 1, 1)
        v_std = self.std.to(x.device).view(1, 3, 1, 1)
        x = (x * c_std + c_mean - v_mean) / v_std
        if size is None:
            target = tuple(x.shape[-2:])
        else:
            target = (int(size[0]), int(size[1])) if isinstance(size, Sequence) else (int(size),) * 2
        if target[0] % self.patch_size or target[1] % self.patch_size:
            raise InputError(
                f"VFM '{self.name}' input {target[0]}x{target[1]} is not a multiple "
                f"of its patch size {self.patch_size}; pass size=k*{self.patch_size}"
            )
        if tuple(x.shape[-2:]) != target:
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        return x.to(dtype)

    def _check_images(self, images: Tensor) -> tuple[int, int]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(
                f"VFM '{self.name}' expects images [B, 3, H, W], got "
                f"{tuple(images.shape)}; use vfm.prepare(...) to build its input"
            )
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise InputError(
                f"VFM '{self.name}' input {height}x{width} is not a multiple of its "
                f"patch size {self.patch_size}; resize with vfm.prepare(..., size=S)"
            )
        return self.grid_size(height, width)

    def _run(self, images: Tensor, features: str = "encoder") -> tuple[Tensor, Tensor]:
        """Run the model once, capturing the last block's normalised input.

        Args:
            features: ``"encoder"`` (the last block's tokens) or, for SAM, ``"neck"`` (the 256-d output of SAM's
                convolutional neck, the image embedding its mask decoder reads).

        Returns:
            ``(patch_feats [B, h, w, D], normed [B, T, D])``: ``normed`` is ``blocks[-1].norm1``'s
            output over all T tokens (prefix tokens first for the ``vit`` family).
        """
        if features not in ("encoder", "neck"):
            raise ConfigError(f"vfm_features={features!r} is not valid; choose encoder or neck")
        if features == "neck" and self.family != "sam":
            raise ConfigError(f"vfm_features='neck' needs a SAM model; VFM '{self.name}' has no neck (use encoder)")
        grid = self._check_images(images)
        last = self.model.blocks[-1]
        captured: dict[str, Tensor] = {}
        hooks = [
            last.norm1.register_forward_hook(lambda m, i, o: captured.__setitem__("normed", o)),
            last.register_forward_hook(lambda m, i, o: captured.__setitem__("block_out", o)),
        ]
        try:
            with self.position_embedding():
                tokens = self.model.forward_features(images)
        finally:
            for hook in hooks:
                hook.remove()
        batch = images.shape[0]
        if self.family == "vit":  # forward_features ends with the final LayerNorm
            feats = tokens[:, self.num_prefix_tokens :].reshape(batch, grid[0], grid[1], self.embed_dim)
        elif features == "neck":  # SAM's neck output [B, 256, h, w]
            feats = tokens.permute(0, 2, 3, 1)
        else:  # SAM: block output before the neck (768-d for ViT-B); SAM has no final norm
            feats = captured["block_out"].reshape(batch, grid[0], grid[1], self.embed_dim)
        normed = captured["normed"].reshape(batch, -1, self.embed_dim)
        return feats, normed

    @contextmanager
    def position_embedding(self):
        """Within the block, the model adds position embeddings resampled as :attr:`pos_embed` says (``"dino"``:
        :func:`dino_pos_embed`; ``"timm"``: the model's own forward). For code that runs ``self.model`` itself."""
        if self.pos_embed != "dino":
            yield
            return
        model = self.model

        def pos_embed(x: Tensor) -> Tensor:  # x: [B, h, w, D] patch tokens (dynamic_img_size layout)
            b, h, w, d = x.shape
            x = x.reshape(b, h * w, d)
            prefix = [t.expand(b, -1, -1) for t in (model.cls_token, model.reg_token) if t is not None]
            x = torch.cat([*prefix, x], dim=1)
            x = x + dino_pos_embed(model.pos_embed, (h, w), model.num_prefix_tokens)
            return model.pos_drop(x)

        if getattr(model, "no_embed_class", False) or getattr(model, "reg_token", None) is not None:
            raise ConfigError(f"VFM '{self.name}': pos_embed='dino' needs a DINO-style ViT (CLS token, no registers)")
        model._pos_embed = pos_embed  # instance attribute shadows timm's method
        try:
            yield
        finally:
            del model._pos_embed

    def _qkv(self, normed: Tensor) -> Tensor:
        """The last block's q, k, v projections of its normalised input: [B, T, 3, heads, head_dim]."""
        attn = self.model.blocks[-1].attn
        batch, n_tokens, _ = normed.shape
        return attn.qkv(normed).view(batch, n_tokens, 3, self.num_heads, attn.head_dim)

    def _head_attention(self, qkv: Tensor, grid: tuple[int, int], head: int) -> Tensor:
        """Softmax attention of one head of the last block over all T tokens, float32 [B, T, T].

        Recomputes ``softmax(q k^T * scale + bias)`` from the projections of :meth:`_qkv` (computed
        once for all heads); ``bias`` is SAM's decomposed relative position bias (zero for ``vit``).
        """
        attn = self.model.blocks[-1].attn
        q = attn.q_norm(qkv[:, :, 0, head])
        k = attn.k_norm(qkv[:, :, 1, head])
        logits = (q.float() * attn.scale) @ k.float().transpose(1, 2)
        if self.family == "sam" and attn.use_rel_pos:
            logits = logits + get_decomposed_rel_pos_bias(q, attn.rel_pos_h, attn.rel_pos_w, grid, grid).float()
        return logits.softmax(dim=-1)

    @torch.no_grad()
    def last_block_qkv(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """The last block's q, k, v projections of its normalised input ``[B, T, 3, heads, head_dim]`` and the patch
        grid, for a method that needs each head's attention and values (Trident's SAM; :meth:`head_attention`).

        Args:
            images: VFM-normalised images [B, 3, H, W], sides multiples of ``patch_size``.
        """
        _, normed = self._run(images)
        return self._qkv(normed), self.grid_size(*images.shape[-2:])

    def head_attention(self, qkv: Tensor, grid: tuple[int, int], head: int) -> Tensor:
        """Softmax attention ``[B, T, T]`` (float32) of one head of the last block, from :meth:`last_block_qkv`'s
        projections (SAM's relative position bias included), over all T tokens."""
        return self._head_attention(qkv, grid, head)

    @torch.no_grad()
    def attention_per_head(self, images: Tensor) -> Tensor:
        """Full per-head attention of the last block, for inspection and tests.

        Args:
            images: VFM-normalised images [B, 3, H, W], sides multiples of ``patch_size``.

        Returns:
            Attention [B, heads, T, T] (float32) over all T tokens (prefix tokens first); every
            row sums to 1. Memory grows as heads * T^2: prefer :meth:`forward` for large inputs
            (SAM at 1024: T = 4096).
        """
        _, normed = self._run(images)
        grid = self.grid_size(*images.shape[-2:])
        qkv = self._qkv(normed)
        heads = [self._head_attention(qkv, grid, h) for h in range(self.num_heads)]
        return torch.stack(heads, dim=1)

    @torch.no_grad()
    def forward(self, images: Tensor, features: str = "encoder") -> tuple[Tensor, Tensor]:
        """Patch features F and last-block attention A of CCE (Eq. 9-12).

        Args:
            images: Images [B, 3, H, W] normalised with ``self.mean``/``self.std``, sides
                multiples of ``patch_size`` (see :meth:`prepare`).
            features: ``"encoder"`` or, for SAM only, ``"neck"`` (F after SAM's neck, D = 256; A is
                always the last encoder block's attention).

        Returns:
            ``(patch_feats, attn)``:

            - ``patch_feats`` [B, h, w, D]: patch tokens of the last block's output. DINO/tiny:
              after the model's final LayerNorm, CLS/register tokens dropped. SAM: the last
              block's output before the neck (no final norm exists), D = 768 for ViT-B.
            - ``attn`` [B, h*w, h*w] float32: the last block's ``softmax(q k^T * scale [+ SAM
              rel-pos bias])`` averaged over heads, rows and columns restricted to patch tokens
              (row-major over the h x w grid). For models with a CLS token the rows do NOT sum to
              1 (the CLS column is dropped) and are not renormalised here; entries are in [0, 1].
        """
        feats, normed = self._run(images, features)
        grid = (feats.shape[1], feats.shape[2])
        qkv = self._qkv(normed)  # once for all heads
        total = self._head_attention(qkv, grid, 0)
        for head in range(1, self.num_heads):  # one head at a time: peak memory B * T^2
            total += self._head_attention(qkv, grid, head)
        prefix = self.num_prefix_tokens
        attn = (total / self.num_heads)[:, prefix:, prefix:].contiguous()
        return feats, attn


def create_vfm(
    name: str,
    pretrained: str = "default",
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> VFM:
    """Build a frozen VFM by name (CCE, Sec. 3.3).

    Args:
        name: One of :func:`list_vfms` (``dino_vitb16``, ``dino_vitb8``, ``sam_vitb``, ``tiny``,
            ``tiny_sam``, ...), a timm ViT/SAM model name, or a JSON architecture file (a path or the stem of one
            of the package's files: ``tiny_dino_b8``, ``tiny_dino_b16``).
        pretrained: ``"default"``: the timm tag's weights from the Hugging Face cache (random
            for ``tiny``/``tiny_sam``, which have none); ``"none"``: random weights; otherwise
            a local ``.pth``/``.safetensors`` path (loaded strictly through timm, with timm's key
            filter so original DINO/SAM checkpoints work too).
        device: Device to put the model on.
        seed: Seed of the random initialisation (restores the global RNG afterwards), so random
            models are identical across calls.

    Returns:
        The VFM in eval mode with ``requires_grad=False``.

    Raises:
        ConfigError: Unknown name or device.
        WeightsNotFoundError: Default weights not cached while offline, or a missing file.
        CheckpointError: The file exists but does not load into the architecture.
    """
    spec = resolve_vfm(name)
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(f"invalid device {device!r} for VFM '{name}'; use 'cpu' or 'cuda'") from err
    if pretrained not in ("default", "none"):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"VFM weights file '{pretrained}' for '{name}' not found (looked at "
                f"{path.resolve()}); pass an existing .pth/.safetensors file, 'default' for the "
                f"timm weights or 'none' for random weights"
            )
        pretrained = str(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.timm_tag is not None:
            model = build_timm_model(name, spec, pretrained)
        else:
            model = build_tiny_model(spec.family, spec.args)
            if pretrained not in ("default", "none"):
                try:
                    timm.models.load_checkpoint(model, pretrained, strict=True)
                except (RuntimeError, KeyError, ValueError, OSError) as err:
                    raise CheckpointError(
                        f"VFM weights file '{pretrained}' does not fit '{name}' "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); pass a state "
                        f"dict saved from create_vfm('{name}').model"
                    ) from err
    cfg = getattr(model, "pretrained_cfg", None) or {}
    family = spec.family
    if family == "timm":  # any timm model: the family is the model class's
        if isinstance(model, VisionTransformerSAM):
            family = "sam"
        elif isinstance(model, VisionTransformer):
            family = "vit"
        else:
            raise ConfigError(
                f"timm model '{name}' is a {type(model).__name__}, not a ViT or SAM image encoder; use a timm "
                f"VisionTransformer (vit_*) or VisionTransformerSAM (samvit_*) model"
            )
    native = spec.native_size
    if native is None and family == "sam":
        native = int(model.patch_embed.img_size[0])
    vfm = VFM(
        model,
        name=name,
        family=family,
        native_size=native,
        mean=tuple(spec.mean or cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(spec.std or cfg.get("std", IMAGENET_STD)),
        pos_embed=spec.pos_embed,
    )
    return vfm.to(target)
