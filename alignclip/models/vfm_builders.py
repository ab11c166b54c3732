"""Builders of the timm models behind :class:`alignclip.models.vfm.VFM`: the named specs and the weights.

``VFM_SPECS`` maps each VFM name (``list_vfms()``) to its family, timm tag and native size;
``build_timm_model`` creates a named timm model with default (Hugging Face cache, never downloaded in
offline mode), random or local-file weights; ``build_tiny_model`` makes the tiny random test models.
:func:`alignclip.models.vfm.create_vfm` calls these and wraps the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_sam import VisionTransformerSAM
from torch import nn

from alignclip.errors import CheckpointError, WeightsNotFoundError

__all__ = ["VFMSpec", "VFM_SPECS", "build_timm_model", "build_tiny_model", "list_vfms"]

_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class VFMSpec:
    """How to build one named VFM."""

    family: str  # "vit" (CLS token + blocks on [B, T, D]) or "sam" (blocks on [B, h, w, D])
    timm_tag: str | None  # None: a tiny model built from the timm class directly
    native_size: int | None  # square training input side; None: none (DINO: any window size)


VFM_SPECS: dict[str, VFMSpec] = {
    "dino_vitb16": VFMSpec("vit", "vit_base_patch16_224.dino", None),
    "dino_vitb8": VFMSpec("vit", "vit_base_patch8_224.dino", None),
    "sam_vitb": VFMSpec("sam", "samvit_base_patch16.sa1b", 1024),
    "tiny": VFMSpec("vit", None, None),
    "tiny_sam": VFMSpec("sam", None, 224),
}


def list_vfms() -> list[str]:
    """Names accepted by :func:`alignclip.models.vfm.create_vfm`, sorted."""
    return sorted(VFM_SPECS)


def build_tiny_model(family: str) -> nn.Module:
    """Tiny random model of the given family (about 0.1 M parameters)."""
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
    kwargs = {"dynamic_img_size": True} if spec.family == "vit" else {}
    if pretrained == "none":
        return timm.create_model(tag, pretrained=False, **kwargs)
    if pretrained == "default":
        where = hf_constants.HF_HUB_CACHE
        if hf_constants.is_offline_mode() and not _default_weights_cached(tag):
            raise WeightsNotFoundError(_missing_default_message(name, tag, where))
        try:
            return timm.create_model(tag, pretrained=True, **kwargs)
        except (OSError, ConnectionError) as err:  # LocalEntryNotFoundError, HTTP errors, offline
            raise WeightsNotFoundError(_missing_default_message(name, tag, where)) from err
    try:
        return timm.create_model(tag, pretrained=True, pretrained_cfg_overlay={"file": pretrained}, **kwargs)
    except (RuntimeError, KeyError, ValueError, OSError) as err:
        raise CheckpointError(
            f"VFM weights file '{pretrained}' does not fit timm '{tag}' ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); pass a {tag} checkpoint (.pth or .safetensors)"
        ) from err
