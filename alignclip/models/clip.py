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
import pickle
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU

from alignclip.errors import CheckpointError, ConfigError, WeightsNotFoundError
from alignclip.io.cache import cached_file_sha256
from alignclip.models.backbones import backbone_weights, resolve_backbone
from alignclip.models.lazy_init import skip_weight_init
from alignclip.ops.attention import check_attention_mode, modified_attention

__all__ = [
    "CONFIG_DIR",
    "GELU",
    "QUICK_GELU",
    "TINY_SEED",
    "ClipBundle",
    "block_qkv",
    "built_activation",
    "create_clip",
    "is_torchscript_archive",
    "trained_activation",
    "dense_features",
    "embed_patches",
    "register_model_configs",
    "resample_pos_embed",
    "state_digest",
]

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
    activation: str = "gelu"  # MLP activation built in both towers: "quick_gelu" or "gelu" (trained_activation)

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


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Hex sha256 over the sorted keys and float32 bytes of a state dict's tensors (independent of the file format);
    the parity data record the shared tiny weights by it."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().float().contiguous().numpy().tobytes())
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
        raise ConfigError(
            f"unknown CLIP backbone {name!r}; use an open_clip model name (e.g. ViT-B-16, tiny"
            f"{', ' + ', '.join(close) if close else ''}) or a path to a model-config JSON"
        )
    return name


QUICK_GELU, GELU = "quick_gelu", "gelu"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a TorchScript archive (OpenAI's released CLIP ``.pt`` files), False for a state dict or anything else.

    Both are zip files when written by a recent ``torch.save``; only TorchScript archives hold compiled ``code/``.
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in name or name.startswith("code/") for name in zf.namelist())


def trained_activation(model_name: str, pretrained: str) -> tuple[str, str]:
    """The MLP activation the weights were trained with, and how it is known.

    - an open_clip tag: its pretrained config's ``quick_gelu`` (OpenAI, MetaCLIP, DFN weights: QuickGELU);
    - an OpenAI TorchScript archive: QuickGELU (every OpenAI CLIP was trained with it);
    - a state-dict file or random weights: the named architecture's (``ViT-B-16-quickgelu`` has QuickGELU,
      ``ViT-B-16`` GELU): a state dict does not record its activation (QuickGELU has no parameters).

    Returns:
        ``(activation, source)``: ``"quick_gelu"`` or ``"gelu"``, and a short phrase saying where it comes from.
    """
    arch = QUICK_GELU if open_clip.get_model_config(model_name).get("quick_gelu") else GELU
    if pretrained in ("none", "", None):
        return arch, f"architecture {model_name}"
    path = Path(pretrained)
    if path.suffix in _CHECKPOINT_SUFFIXES or path.exists():
        if path.is_file() and is_torchscript_archive(path):
            return QUICK_GELU, "OpenAI TorchScript archive"
        return arch, f"architecture {model_name} (a state dict does not record its activation)"
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    return (QUICK_GELU if cfg.get("quick_gelu") else GELU), f"pretrained tag {model_name}/{pretrained}"


def built_activation(model: torch.nn.Module) -> dict[str, str]:
    """The activation of every transformer MLP in each tower: ``{"visual": ..., "text": ...}``
    (``"quick_gelu"``, ``"gelu"``, or ``"mixed"`` if a tower has both)."""
    out = {}
    towers = {"visual": model.visual, "text": getattr(model, "transformer", None)}
    for name, tower in towers.items():
        kinds = {
            QUICK_GELU if isinstance(m, QuickGELU) else GELU
            for m in (tower.modules() if tower else [])
            if isinstance(m, (QuickGELU, torch.nn.GELU))
        }
        out[name] = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")
    return out


def _load_torchscript_weights(model: torch.nn.Module, path: Path, model_name: str) -> None:
    """Copy the weights of an OpenAI TorchScript archive into ``model`` (read with ``torch.jit.load``: TorchScript
    code, no pickled Python objects), refusing in one line an archive of another architecture."""
    state = torch.jit.load(str(path), map_location="cpu").state_dict()
    buffers = dict(model.named_buffers())  # non-persistent buffers (attention masks) that an archive may hold
    for key in [
        k
        for k in state
        if k in ("input_resolution", "context_length", "vocab_size") or (k in buffers and k not in model.state_dict())
    ]:
        state.pop(key)  # OpenAI's scalar buffers and masks the model builds itself
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shapes differ: another architecture
        first = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(
            f"{path} is not a {model_name} checkpoint ({first}); pass the matching --backbone"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} is not a {model_name} checkpoint ({len(missing)} missing, {len(unexpected)} "
            f"unexpected tensors, e.g. {(missing or unexpected)[0]}); pass the matching --backbone"
        )


def create_clip(
    name: str = "ViT-B-16", pretrained: str = "default", device: str | torch.device = "cpu", load_weights: bool = True
) -> ClipBundle:
    """Build an open_clip model with the activation its weights were trained with, and load the weights.

    Args:
        name: a named backbone (:data:`~alignclip.models.backbones.BACKBONES`: ``clip-b16``, ``remoteclip-b32``,
            ...), an open_clip model name (``ViT-B-16``, ``ViT-B-16-quickgelu``, ``tiny``, ...) or a model-config
            JSON path.
        pretrained: ``default`` (a named backbone's published weights; an open_clip architecture's ``openai``
            tag), an open_clip pretrained tag (``openai``), a local checkpoint (an open_clip state dict, an open_clip
            training checkpoint, or OpenAI's TorchScript ``.pt``), or ``none`` (random weights).
        device: where to put the model.
        load_weights: False builds the architecture ``pretrained`` implies (activation included) with random
            weights, without reading or downloading any file but the checks (``weights_id`` is then ``"random"``).

    The activation follows :func:`trained_activation`: open_clip tags and OpenAI archives carry it (OpenAI's weights
    are QuickGELU, and ``ViT-B-16`` + ``openai`` is built with QuickGELU in both towers, as the reference code
    loads it); for a state-dict file it is the named architecture's, so a QuickGELU state dict (OpenAI, MetaCLIP,
    DFN) must be named ``ViT-B-16-quickgelu``: a warning says so when a ``.pt``/``.bin`` file is given with a GELU
    architecture, and an OpenAI archive given with a GELU name is built with QuickGELU and said so.

    Raises:
        WeightsNotFoundError: the tag's weights are not in the local cache (offline) or the file does not exist.
    """
    named = resolve_backbone(name)
    if named is not None:  # a named backbone (alignclip.models.backbones): its architecture and published weights
        if pretrained == "default" and not load_weights:
            pretrained = named.tag or "none"  # the architecture's activation, no file looked up
        pretrained = backbone_weights(named, pretrained)
        name = named.arch
    model_name = _resolve_name(name)
    if pretrained == "default":  # an open_clip architecture: its OpenAI weights where they exist
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if "openai" not in tags:
            raise ConfigError(
                f"{model_name} has no default weights; pass --pretrained with one of its open_clip tags "
                f"({', '.join(tags) or 'none published'}), a local file, or none"
            )
        pretrained = "openai"
    random_weights = pretrained in ("none", "", None)
    is_file = not random_weights and (Path(pretrained).suffix in _CHECKPOINT_SUFFIXES or Path(pretrained).exists())
    if is_file and not Path(pretrained).is_file():
        raise WeightsNotFoundError(
            f"CLIP checkpoint {pretrained} not found; pass --pretrained with an existing "
            f"state-dict file, an open_clip tag, or none"
        )
    if not random_weights and not is_file:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise ConfigError(
                f"unknown pretrained tag {pretrained!r} for {model_name}; valid tags: "
                f"{', '.join(tags) or '(none: pass a local file or none)'}"
            )
    activation, source = trained_activation(model_name, pretrained)
    arch_quick = bool(open_clip.get_model_config(model_name).get("quick_gelu"))
    if is_file and activation == QUICK_GELU and not arch_quick:
        log.warning(
            "%s is an OpenAI TorchScript archive (trained with QuickGELU): building %s with QuickGELU",
            pretrained,
            model_name,
        )
    elif is_file and not arch_quick and named is None:  # a named backbone's architecture is fixed (D56)
        log.warning(
            "the activation of state-dict %s cannot be read from the file: building %s with GELU; if the "
            "weights were trained with QuickGELU (OpenAI, MetaCLIP, DFN), name the architecture %s-quickgelu",
            pretrained,
            model_name,
            model_name,
        )
    kwargs = dict(force_quick_gelu=activation == QUICK_GELU)
    if random_weights or not load_weights:
        with torch.random.fork_rng(devices=[]), _quiet_open_clip():  # deterministic, global RNG untouched
            torch.manual_seed(TINY_SEED)
            model = open_clip.create_model(model_name, pretrained=None, **kwargs)
        weights_id = "random"
    elif is_file and is_torchscript_archive(pretrained):
        with _quiet_open_clip(), skip_weight_init():  # every tensor comes from the archive (checked below)
            model = open_clip.create_model(model_name, pretrained=None, **kwargs)
        _load_torchscript_weights(model, Path(pretrained), model_name)
        weights_id = "sha256:" + cached_file_sha256(pretrained)
    elif is_file:
        try:
            with skip_weight_init():  # open_clip loads the state dict strictly
                model = open_clip.create_model(model_name, pretrained=str(pretrained), **kwargs)
        except pickle.UnpicklingError as exc:  # not a file of tensors: torch.load(weights_only=True) refuses it
            raise CheckpointError(
                f"cannot read CLIP checkpoint {pretrained} with torch.load(weights_only=True) ({type(exc).__name__}: "
                f"not a file of tensors); expected an "
                f"open_clip state dict or training checkpoint of tensors; re-save its tensors with "
                f"torch.save(state_dict, PATH)"
            ) from None
        except (RuntimeError, AssertionError, KeyError, EOFError) as exc:  # another architecture, a truncated file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
            raise CheckpointError(
                f"{pretrained} is not a {model_name} state dict ({first}); pass the matching --backbone"
            ) from None
        weights_id = "sha256:" + cached_file_sha256(pretrained)
    else:
        cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        try:
            with skip_weight_init():  # open_clip loads the tag's state dict strictly
                model = open_clip.create_model(model_name, pretrained=pretrained, **kwargs)
        except Exception as exc:  # offline cache miss: huggingface_hub / urllib errors vary by version
            hub = cfg.get("hf_hub") or cfg.get("url", "")
            raise WeightsNotFoundError(
                f"CLIP weights {model_name}/{pretrained} are not available offline (looked in the Hugging Face cache "
                f'for {hub!r}: {type(exc).__name__}); on a machine with internet run `python -c "import open_clip; '
                f"open_clip.create_model('{model_name}', pretrained='{pretrained}')\"` and copy ~/.cache/huggingface, "
                f"or pass --pretrained /path/to/open_clip_pytorch_model.bin"
            ) from None
        weights_id = f"{model_name}/{pretrained}"
    model = model.to(device).eval().requires_grad_(False)
    visual = model.visual
    patch = visual.conv1.kernel_size[0]
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    log.debug("built %s (%s), activation %s (%s)", model_name, weights_id, activation, source)
    return ClipBundle(
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        name=model_name,
        pretrained=str(pretrained),
        weights_id=weights_id,
        patch_size=patch,
        embed_dim=int(visual.output_dim),
        mean=mean,
        std=std,
        activation=activation,
    )


def resample_pos_embed(
    pos_embed: torch.Tensor, grid_hw: tuple[int, int], num_prefix: int = 1, mode: str = "reference"
) -> torch.Tensor:
    """Bicubically resample a ``[1 + n*n, C]`` absolute position embedding to ``grid_hw`` (prefix kept).

    ``mode="reference"`` interpolates with the scale factors ``(h + 0.1) / n`` and ``(w + 0.1) / n``, as
    SegEarth-OV's code (and DINO's) does, so the bicubic samples sit at ``(i + 0.5) · n / (h + 0.1) - 0.5``;
    ``mode="size"`` resizes to exactly ``h x w`` (samples at ``(i + 0.5) · n / h - 0.5``). Both give ``h x w``.
    Returns ``pos_embed`` itself when the grid already matches.
    """
    n = pos_embed.shape[0] - num_prefix
    old = int(math.isqrt(n))
    if (old, old) == tuple(grid_hw):
        return pos_embed
    if mode not in ("reference", "size"):
        raise ConfigError(f"pos_embed_interp={mode!r} is not valid; choose reference or size")
    prefix, grid = pos_embed[:num_prefix], pos_embed[num_prefix:]
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    if mode == "reference":
        scale = ((grid_hw[0] + 0.1) / old, (grid_hw[1] + 0.1) / old)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
    else:
        grid = F.interpolate(grid, size=grid_hw, mode="bicubic", align_corners=False)
    if tuple(grid.shape[-2:]) != tuple(grid_hw):  # floor((n · (h + 0.1) / n)) == h always; guard all the same
        raise ConfigError(f"position embedding resampled to {tuple(grid.shape[-2:])}, expected {tuple(grid_hw)}")
    grid = grid.permute(0, 2, 3, 1).reshape(grid_hw[0] * grid_hw[1], -1).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=0)


def embed_patches(
    visual: torch.nn.Module,
    images: torch.Tensor,
    pos_embed_interp: str = "reference",
    pos: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The tokens entering the first block of CLIP's vision tower: patch embeddings with the CLS token in front,
    position embeddings added, ``ln_pre`` applied.

    Args:
        visual: ``open_clip`` ``VisionTransformer`` (``model.visual``, batch-first).
        images: ``[B, 3, H, W]`` CLIP-normalised; partial patches at the borders are dropped by the convolution.
        pos_embed_interp: :func:`resample_pos_embed`'s mode for grids other than the trained one.
        pos: ``[1 + h*w, C]`` position embeddings to use instead (a method's own resampling).

    Returns:
        ``tokens [B, 1 + h*w, C]`` and the patch grid ``(h, w)``.
    """
    if not visual.transformer.batch_first:
        raise ConfigError("open_clip transformer must be batch_first (open_clip >= 2.24)")
    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # [B, C, h, w]
    b, _, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, 1, -1)
    if pos is None:
        pos = resample_pos_embed(visual.positional_embedding, (h, w), mode=pos_embed_interp)
    return visual.ln_pre(torch.cat([cls, x], dim=1) + pos.to(x.dtype)), (h, w)


def block_qkv(block: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v ``[B, heads, N, d]`` of an open_clip residual block's attention on ``ln_1(tokens)`` (``[B, N, C]``)."""
    b, n, c = tokens.shape
    attn = block.attn
    y = F.linear(block.ln_1(tokens), attn.in_proj_weight, attn.in_proj_bias)  # [B, N, 3C]
    q, k, v = y.view(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    return q, k, v


def dense_features(
    visual: torch.nn.Module,
    images: torch.Tensor,
    attention: str = "segearth",
    drop_residual: bool = True,
    naclip_std: float = 1.0,
    pos_embed_interp: str = "reference",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch and CLS embeddings of CLIP's vision tower with a modified last block.

    Every block but the last runs unchanged. The last block computes its attention with ``attention`` (see
    :mod:`alignclip.ops.attention`); with ``drop_residual`` the block's residual connection and FFN are dropped and its
    output is ``out_proj(attention)`` alone (the baseline's ``ignore_residual``), else the standard block is kept
    around the modified attention. ``ln_post`` and ``proj`` are then applied to every token.

    Args:
        visual: ``open_clip`` ``VisionTransformer`` (``model.visual``).
        images: ``[B, 3, H, W]`` CLIP-normalised, H and W multiples of the patch size.
        naclip_std: Gaussian std (patches) of the ``naclip`` mode.
        pos_embed_interp: :func:`resample_pos_embed`'s mode for grids other than the trained one.

    Returns:
        ``patch_feats [B, D, H/p, W/p]`` and ``cls_feats [B, D]`` (not normalised).
    """
    check_attention_mode(attention)
    x, (h, w) = embed_patches(visual, images, pos_embed_interp)
    b, _, c = x.shape
    blocks = visual.transformer.resblocks
    for blk in blocks[:-1]:
        x = blk(x)
    last = blocks[-1]
    attn = last.attn
    q, k, v = block_qkv(last, x)  # each [B, H, L, d]
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
