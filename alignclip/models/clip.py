"""CLIP backbone loading (open_clip) and dense patch features with a modified last block.

Building a model is separate from loading weights (open_clip's pattern): ``create_clip(name, pretrained)`` builds
any registered open_clip architecture (or one described by a model-config JSON file) and loads weights from an
open_clip pretrained tag, a local checkpoint file, or nothing (``"none"``: random weights, for pipeline checks).
The package registers a tiny architecture ``tiny`` (embed 32, 3 vision layers) used by the tests and the book's
default smoke profile.
"""

from __future__ import annotations

import hashlib
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError, WeightsNotFoundError
from alignclip.ops.attention import check_attention_mode, modified_attention

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TINY_SEED = 0  # random weights of any architecture are drawn with this seed


def register_model_configs() -> None:
    """Register the package's model configs (``tiny``) with open_clip (idempotent)."""
    if "tiny" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


@dataclass
class ClipBundle:
    """A loaded CLIP model with what the segmentor needs to use it."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    pretrained: str
    weights_id: str  # "openai" style tag, "sha256:<hex>" of a local file, or "random"
    patch_size: int
    embed_dim: int
    mean: tuple[float, float, float]  # 0-1 units
    std: tuple[float, float, float]

    @property
    def is_random(self) -> bool:
        return self.weights_id == "random"


@contextmanager
def _quiet_open_clip():
    """Silence open_clip's root-logger warning about random weights (we label random runs ourselves)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _resolve_name(name: str) -> str:
    register_model_configs()
    path = Path(name)
    if name.endswith(".json"):
        if not path.is_file():
            raise ConfigError(f"model config {name} not found; pass an open_clip model name or an existing JSON file")
        open_clip.add_model_config(path)
        return path.stem
    if name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if name.lower() in m.lower()][:8]
        raise ConfigError(f"unknown CLIP backbone {name!r}; use an open_clip model name (e.g. ViT-B-16, tiny"
                          f"{', ' + ', '.join(close) if close else ''}) or a path to a model-config JSON")
    return name


def create_clip(name: str = "ViT-B-16", pretrained: str = "openai", device: str | torch.device = "cpu") -> ClipBundle:
    """Build an open_clip model and load its weights.

    Args:
        name: open_clip model name (``ViT-B-16``, ``tiny``, ...) or a path to a model-config JSON file.
        pretrained: an open_clip pretrained tag (``openai``), a local checkpoint path (state dict), or ``none``.
        device: where to put the model.

    Raises:
        WeightsNotFoundError: the tag's weights are not in the local cache (offline) or the file does not exist.
    """
    model_name = _resolve_name(name)
    quick_gelu = None
    if pretrained in ("none", "", None):
        with torch.random.fork_rng(devices=[]), _quiet_open_clip():  # deterministic, global RNG untouched
            torch.manual_seed(TINY_SEED)
            model = open_clip.create_model(model_name, pretrained=None)
        weights_id = "random"
    elif Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors", ".ckpt") or Path(pretrained).exists():
        if not Path(pretrained).is_file():
            raise WeightsNotFoundError(f"CLIP checkpoint {pretrained} not found; pass --pretrained with an existing "
                                       f"state-dict file, an open_clip tag, or none")
        model = open_clip.create_model(model_name, pretrained=str(pretrained))
        weights_id = "sha256:" + file_sha256(pretrained)
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise ConfigError(f"unknown pretrained tag {pretrained!r} for {model_name}; valid tags: "
                              f"{', '.join(tags) or '(none: pass a local file or none)'}")
        cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        quick_gelu = cfg.get("quick_gelu")
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained)
        except Exception as exc:  # offline cache miss: huggingface_hub / urllib errors vary by version
            hub = cfg.get("hf_hub") or cfg.get("url", "")
            raise WeightsNotFoundError(
                f"CLIP weights {model_name}/{pretrained} are not available offline (looked in the Hugging Face cache "
                f"for {hub!r}: {type(exc).__name__}); on a machine with internet run `python -c \"import open_clip; "
                f"open_clip.create_model('{model_name}', pretrained='{pretrained}')\"` and copy ~/.cache/huggingface, "
                f"or pass --pretrained /path/to/open_clip_pytorch_model.bin") from None
        weights_id = f"{model_name}/{pretrained}"
    model = model.to(device).eval().requires_grad_(False)
    visual = model.visual
    patch = visual.conv1.kernel_size[0]
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    log.debug("built %s (%s), quick_gelu=%s", model_name, weights_id, quick_gelu)
    return ClipBundle(model=model, tokenizer=open_clip.get_tokenizer(model_name), name=model_name,
                      pretrained=str(pretrained), weights_id=weights_id, patch_size=patch,
                      embed_dim=int(visual.output_dim), mean=mean, std=std)


def resample_pos_embed(pos_embed: torch.Tensor, grid_hw: tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """Bicubically resample a ``[1 + n*n, C]`` absolute position embedding to ``grid_hw`` (prefix kept).

    Returns ``pos_embed`` itself when the grid already matches.
    """
    n = pos_embed.shape[0] - num_prefix
    old = int(math.isqrt(n))
    if (old, old) == tuple(grid_hw):
        return pos_embed
    prefix, grid = pos_embed[:num_prefix], pos_embed[num_prefix:]
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=grid_hw, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(grid_hw[0] * grid_hw[1], -1).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=0)


def dense_features(visual: torch.nn.Module, images: torch.Tensor, attention: str = "segearth",
                   drop_residual: bool = True, naclip_std: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch and CLS embeddings of CLIP's vision tower with a modified last block.

    Every block but the last runs unchanged. The last block computes its attention with ``attention`` (see
    :mod:`alignclip.ops.attention`); with ``drop_residual`` the block's residual connection and FFN are dropped and its
    output is ``out_proj(attention)`` alone (the baseline's ``ignore_residual``), else the standard block is kept
    around the modified attention. ``ln_post`` and ``proj`` are then applied to every token.

    Args:
        visual: ``open_clip`` ``VisionTransformer`` (``model.visual``).
        images: ``[B, 3, H, W]`` CLIP-normalised, H and W multiples of the patch size.

    Returns:
        ``patch_feats [B, D, H/p, W/p]`` and ``cls_feats [B, D]`` (not normalised).
    """
    check_attention_mode(attention)
    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # [B, C, h, w]
    b, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, 1, -1)
    x = torch.cat([cls, x], dim=1) + resample_pos_embed(visual.positional_embedding, (h, w)).to(x.dtype)
    x = visual.ln_pre(x)
    blocks = visual.transformer.resblocks
    if not visual.transformer.batch_first:
        raise ConfigError("open_clip transformer must be batch_first (open_clip >= 2.24)")
    for blk in blocks[:-1]:
        x = blk(x)
    last = blocks[-1]
    attn = last.attn
    heads = attn.num_heads
    y = F.linear(last.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)  # [B, L, 3C]
    q, k, v = y.view(b, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # each [B, H, L, d]
    o = modified_attention(q, k, v, attention, grid_hw=(h, w), naclip_std=naclip_std)
    o = attn.out_proj(o.transpose(1, 2).reshape(b, -1, c))
    if drop_residual:
        x = o
    else:
        x = x + last.ls_1(o)
        x = x + last.ls_2(last.mlp(last.ln_2(x)))
    x = visual.ln_post(x)
    if visual.proj is not None:
        x = x @ visual.proj
    cls_feats, patch = x[:, 0], x[:, 1:]
    return patch.transpose(1, 2).reshape(b, -1, h, w), cls_feats
