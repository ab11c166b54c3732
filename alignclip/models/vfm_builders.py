"""Builders of the timm models behind :class:`alignclip.models.vfm.VFM`: the named specs and the weights.

A VFM is named in one of three ways (:func:`resolve_vfm`):

- a name of ``VFM_SPECS`` (``list_vfms()``): family, timm tag and native size fixed here;
- any timm model name (``vit_small_patch14_reg4_dinov2.lvd142m``, ``samvit_large_patch16``): its family is read
  from the model class (timm ``VisionTransformer`` or ``VisionTransformerSAM``);
- an architecture file: a small JSON ``{"family": "vit", "args": {...timm VisionTransformer arguments...},
  "mean": [...], "std": [...], "pos_embed": "dino"}`` (a path ending in ``.json``, or the stem of one of the
  package's files in ``configs/vfm``: ``tiny_dino_b8``, ``tiny_dino_b16``, ``tiny_sam_1024``), for tiny random models
  of any patch size; ``args`` may hold ``norm_eps`` (the LayerNorms' epsilon).

``build_timm_model`` creates a timm model with default (Hugging Face cache, never downloaded in offline mode),
random or local-file weights; ``build_tiny_model`` makes the tiny random test models.
:func:`alignclip.models.vfm.create_vfm` calls these and wraps the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import timm
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_sam import VisionTransformerSAM
from torch import nn

from alignclip.errors import CheckpointError, ConfigError, WeightsNotFoundError
from alignclip.models.lazy_init import skip_weight_init

__all__ = ["VFM_CONFIG_DIR", "VFMSpec", "VFM_SPECS", "build_timm_model", "build_tiny_model", "list_vfms", "resolve_vfm"]

_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class VFMSpec:
    """How to build one named VFM."""

    family: str  # "vit" (CLS token + blocks on [B, T, D]) or "sam" (blocks on [B, h, w, D])
    timm_tag: str | None  # None: a tiny model built from the timm class directly
    native_size: int | None  # square training input side; None: none (DINO: any window size)
    # position embeddings at other grids: "timm" (timm's forward) or "dino" (DINO's own code: bicubic with scale
    # factors (n + 0.1) / 14, its W/H order, no antialiasing; equal to "timm" at square grids only approximately)
    pos_embed: str = "timm"
    args: dict[str, Any] = field(default_factory=dict)  # architecture file: timm VisionTransformer(SAM) arguments
    mean: tuple[float, ...] | None = None  # input normalisation (0-1 units); None: timm's pretrained config
    std: tuple[float, ...] | None = None


VFM_SPECS: dict[str, VFMSpec] = {
    "dino_vitb16": VFMSpec("vit", "vit_base_patch16_224.dino", None),
    "dino_vitb8": VFMSpec("vit", "vit_base_patch8_224.dino", None),
    "dino_vits8": VFMSpec("vit", "vit_small_patch8_224.dino", None),
    "dino_vits16": VFMSpec("vit", "vit_small_patch16_224.dino", None),
    "dinov2_vits14_reg": VFMSpec("vit", "vit_small_patch14_reg4_dinov2.lvd142m", None),
    "dinov2_vitb14_reg": VFMSpec("vit", "vit_base_patch14_reg4_dinov2.lvd142m", None),
    "dinov2_vitl14_reg": VFMSpec("vit", "vit_large_patch14_reg4_dinov2.lvd142m", None),
    "sam_vitb": VFMSpec("sam", "samvit_base_patch16.sa1b", 1024),
    "tiny": VFMSpec("vit", None, None),
    "tiny_sam": VFMSpec("sam", None, 224),
}


VFM_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "vfm"
_FAMILIES = ("vit", "sam")


def list_vfms() -> list[str]:
    """Named VFMs (``VFM_SPECS``), sorted; any timm model name and architecture file are accepted as well."""
    return sorted(VFM_SPECS)


def _architecture_file(path: Path) -> VFMSpec:
    """A :class:`VFMSpec` from a JSON architecture file (one-line ConfigError for a malformed one)."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"VFM architecture file {path} is not readable JSON ({err}); fix the file") from None
    family = cfg.get("family", "vit")
    if family not in _FAMILIES or not isinstance(cfg.get("args", {}), dict):
        raise ConfigError(
            f'VFM architecture file {path}: "family" must be vit or sam and "args" an object of timm '
            f"VisionTransformer arguments"
        )
    pos = cfg.get("pos_embed", "timm")
    if pos not in ("timm", "dino"):
        raise ConfigError(f'VFM architecture file {path}: "pos_embed" must be timm or dino, not {pos!r}')
    mean, std = cfg.get("mean"), cfg.get("std")
    return VFMSpec(
        family,
        None,
        cfg.get("native_size"),
        pos_embed=pos,
        args=dict(cfg.get("args", {})),
        mean=tuple(mean) if mean else None,
        std=tuple(std) if std else None,
    )


def resolve_vfm(name: str) -> VFMSpec:
    """The :class:`VFMSpec` of a VFM name: a named VFM, an architecture file (path or package stem) or a timm model.

    Raises:
        ConfigError: none of these (one line listing the named VFMs and how to name others).
    """
    if name in VFM_SPECS:
        return VFM_SPECS[name]
    if name.endswith(".json"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"VFM architecture file {name} not found; pass an existing JSON file or a VFM name")
        return _architecture_file(path)
    packaged = VFM_CONFIG_DIR / f"{name}.json"
    if packaged.is_file():
        return _architecture_file(packaged)
    if timm.is_model(name):
        return VFMSpec("timm", name, None)  # family read from the built model
    raise ConfigError(
        f"unknown VFM {name!r}; use one of {', '.join(list_vfms() + sorted(p.stem for p in VFM_CONFIG_DIR.glob('*.json')))}, "
        f"a timm model name (e.g. vit_base_patch14_reg4_dinov2.lvd142m) or a JSON architecture file"
    )


def build_tiny_model(family: str, args: dict[str, Any] | None = None) -> nn.Module:
    """Tiny random model of the given family (about 0.1 M parameters), or one from an architecture file's ``args``."""
    if args:
        cls = VisionTransformer if family == "vit" else VisionTransformerSAM
        extra = dict(num_classes=0, dynamic_img_size=True) if family == "vit" else dict(num_classes=0)
        args = dict(args)
        if "norm_eps" in args:  # LayerNorm epsilon (SAM's and DINO's code: 1e-6; timm's class default: 1e-5)
            extra["norm_layer"] = partial(nn.LayerNorm, eps=float(args.pop("norm_eps")))
        try:
            model = cls(**{**extra, **args})
        except TypeError as err:
            raise ConfigError(f"VFM architecture arguments do not fit timm {cls.__name__}: {err}") from None
        if family == "sam" and getattr(model.blocks[0].attn, "use_rel_pos", False):  # drawn as tiny_sam's below
            for block in model.blocks:
                nn.init.normal_(block.attn.rel_pos_h, std=0.5)
                nn.init.normal_(block.attn.rel_pos_w, std=0.5)
        return model
    if family == "vit":
        return VisionTransformer(
            img_size=224,
            patch_size=16,
            embed_dim=64,
            depth=2,
            num_heads=4,
            num_classes=0,
            dynamic_img_size=True,
        )
    model = VisionTransformerSAM(
        img_size=224,
        patch_size=16,
        embed_dim=64,
        depth=2,
        num_heads=4,
        num_classes=0,
        window_size=7,
        global_attn_indexes=(1,),
        use_rel_pos=True,
        neck_chans=32,
    )
    # SAM initialises its relative position tables to zero; draw them so the bias is exercised.
    for block in model.blocks:
        nn.init.normal_(block.attn.rel_pos_h, std=0.5)
        nn.init.normal_(block.attn.rel_pos_w, std=0.5)
    return model


def _missing_default_message(name: str, tag: str, where: str) -> str:
    return (
        f"pretrained weights of VFM '{name}' (timm tag '{tag}', Hugging Face repo "
        f"'timm/{tag}', file {' or '.join(_HF_WEIGHT_FILES)}) are not in the Hugging Face cache "
        f'{where} and cannot be downloaded here; run `python -c "import timm; timm.create_model('
        f"'{tag}', pretrained=True)\"` on a machine with internet to fill the Hugging Face cache "
        "(~/.cache/huggingface), or pass --vfm-pretrained /path/to/weights.{pth,safetensors}"
    )


def _default_weights_cached(tag: str) -> bool:
    """Whether timm's Hugging Face weights of ``tag`` are in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    hf_id = timm.models.get_pretrained_cfg(tag).hf_hub_id or f"timm/{tag}"
    return any(isinstance(try_to_load_from_cache(hf_id, f), str) for f in _HF_WEIGHT_FILES)


def build_timm_model(name: str, spec: VFMSpec, pretrained: str) -> nn.Module:
    """Build a named timm VFM with default, random or local-file weights."""
    from huggingface_hub import constants as hf_constants

    tag = spec.timm_tag
    kwargs = {"dynamic_img_size": True} if spec.family == "vit" or not tag.startswith("samvit") else {}
    if pretrained == "none" or spec.family == "timm":  # any timm name: its class must be a ViT (checked first)
        try:
            model = timm.create_model(tag, pretrained=False, **kwargs)
        except TypeError:  # a model class without dynamic_img_size: not a timm VisionTransformer
            raise ConfigError(
                f"timm model '{tag}' is not a ViT or SAM image encoder; use a timm VisionTransformer (vit_*) or "
                f"VisionTransformerSAM (samvit_*) model"
            ) from None
        if pretrained == "none":
            return model
    if pretrained == "default":
        where = hf_constants.HF_HUB_CACHE
        if hf_constants.is_offline_mode() and not _default_weights_cached(tag):
            raise WeightsNotFoundError(_missing_default_message(name, tag, where))
        try:
            with skip_weight_init():  # timm loads the tag's weights strictly (its heads are off: num_classes 0)
                return timm.create_model(tag, pretrained=True, **kwargs)
        except (OSError, ConnectionError) as err:  # LocalEntryNotFoundError, HTTP errors, offline
            raise WeightsNotFoundError(_missing_default_message(name, tag, where)) from err
    try:
        with skip_weight_init():  # every tensor comes from the file (timm loads it strictly)
            return timm.create_model(tag, pretrained=True, pretrained_cfg_overlay={"file": pretrained}, **kwargs)
    except (RuntimeError, KeyError, ValueError, OSError) as err:
        raise CheckpointError(
            f"VFM weights file '{pretrained}' does not fit timm '{tag}' ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); pass a {tag} checkpoint (.pth or .safetensors)"
        ) from err
