"""Runtime resolution and the in-process caches of the pipeline.

- :func:`resolve_device`, :func:`resolve_dtype`, :func:`resolve_window_batch`: turn the configuration's ``"auto"``
  values into a device, an autocast dtype and a window batch size.
- :func:`check_image_size`: an image too thin for the windows, refused with the fix before any model runs.
- :func:`cached_model`: loaded models reused across segmentors of one process (sweeps build hundreds of them).
- :func:`text_embeddings`: the text embeddings ``[Q, D]`` of (queries, templates), encoded once per CLIP model object
  and freed with it, and kept on disk across runs (:mod:`alignclip.pipeline.text_cache`).
"""

from __future__ import annotations

import json
import logging
import math
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from alignclip.errors import ConfigError, InputError
from alignclip.io.images import resized_size
from alignclip.models.backbones import resolve_backbone
from alignclip.models.clip import ClipBundle, register_model_configs
from alignclip.models.text import build_text_embeddings
from alignclip.pipeline.config import SegmentorConfig, check_window_batch
from alignclip.pipeline.text_cache import cached_text_embeddings

__all__ = [
    "UPSAMPLER_MIN_PATCHES",
    "backbone_patch_size",
    "cached_model",
    "check_image_size",
    "clear_model_cache",
    "resolve_device",
    "resolve_dtype",
    "resolve_window_batch",
    "text_embeddings",
]

log = logging.getLogger(__name__)

MODEL_CACHE_SIZE = 4  # models kept per process (least recently built dropped first)
TEXT_CACHE_SIZE = 64  # text-embedding sets kept per CLIP model

_MODELS: dict[tuple, Any] = {}
_TEXTS: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or any other torch device
    string is checked to exist here (one-line :class:`ConfigError` otherwise)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"device {device!r} is not a device name; use auto, cpu, cuda or cuda:N (N = 0 for the first GPU)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(
                f"device {device!r} does not exist: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}; use one of them, cuda or auto"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but MPS is not available; use --device cpu or auto")
    return dev


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None = plain fp32)."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def resolve_window_batch(window_batch: int | str, device: torch.device | str) -> int:
    """Windows per forward: ``"auto"`` → 1 on CPU (faster and lighter there), 32 on CUDA or any other accelerator
    (batching the windows fills the device); an int ``>= 1`` is kept."""
    check_window_batch(window_batch)
    if window_batch == "auto":
        return 1 if torch.device(device).type == "cpu" else 32
    return int(window_batch)


#: Patches each side of a window needs: the upsampler reflect-pads its source by half its kernel radius, which needs
#: sides > radius / 2 (alignclip.models.upsampler: jbu_one radius 5 → 3 patches, jbu_stack radius 3 → 2); no
#: upsampler: 1.
UPSAMPLER_MIN_PATCHES = {"jbu_one": 3, "jbu_stack": 2, "none": 1}


def backbone_patch_size(backbone: str) -> int | None:
    """Patch side in pixels of an open_clip model name or model-config JSON, read from its config (no model is built);
    None when the config cannot be read (building the model then says why)."""
    named = resolve_backbone(backbone)
    if named is not None:
        return named.patch_size
    try:
        if backbone.endswith(".json"):
            cfg = json.loads(Path(backbone).read_text())
        else:
            register_model_configs()
            import open_clip

            cfg = open_clip.get_model_config(backbone)
        patch = cfg["vision_cfg"]["patch_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(patch if isinstance(patch, int) else max(patch))


def check_image_size(config: SegmentorConfig, height: int, width: int, patch_size: int | None = None) -> None:
    """Refuse an image the windows cannot process, before any model runs (one-line error with the fix).

    The image is segmented at :func:`~alignclip.io.images.resized_size` (``config.long_side``); each window is
    ``min(crop, side)`` pixels a side, padded to whole patches, and needs :data:`UPSAMPLER_MIN_PATCHES` patches a side,
    i.e. more than ``(m - 1) * patch_size`` pixels.

    Args:
        config: the pipeline settings.
        height, width: the input image's size (pixels).
        patch_size: the CLIP patch side (default: read from ``config.backbone``'s config; unknown: not checked).

    Raises:
        ConfigError: ``crop`` itself is below the minimum window side.
        InputError: the image (after the resize) is thinner than the minimum window side.
    """
    patch = patch_size or backbone_patch_size(config.backbone)
    if patch is None:
        return
    patches = UPSAMPLER_MIN_PATCHES.get(config.upsampler, 1)
    need = (patches - 1) * patch + 1  # pixels a window side needs
    if config.upsampler != "none":
        rule = f"the {config.upsampler} upsampler needs windows of at least {patches} patches a side ({need} px)"
    else:
        rule = "a window needs at least 1 px a side"
    if config.crop < need:
        raise ConfigError(f"crop={config.crop} is too small: {rule}; use crop >= {need}")
    if config.long_side is None or min(height, width) < 1:
        h, w = height, width
    else:
        h, w = resized_size(height, width, config.long_side)
    if min(h, w) >= need:
        return
    where = f"image {height}x{width} (HxW)"
    if (h, w) != (height, width):
        where += f" is {h}x{w} after the long-side resize (long_side={config.long_side}) and"
    fixes = [f"pad or tile the image to at least {need} px on its short side"]
    if config.long_side is not None and min(height, width) >= need:
        long_needed = math.ceil((need - 0.5) * max(height, width) / min(height, width))
        while min(resized_size(height, width, long_needed)) < need:
            long_needed += 1
        fixes = ["keep the input size with --set long_side=none", f"use --set long_side={long_needed}"]
    if config.upsampler != "none":
        fixes.append("use --upsampler none")
    raise InputError(f"{where} is too thin: {rule}; {', or '.join(fixes)}")


def cached_model(key: tuple, build: Callable[[], Any]) -> Any:
    """The model stored under ``key``, built by ``build()`` on first use (at most :data:`MODEL_CACHE_SIZE`)."""
    if key not in _MODELS:
        log.info("loading %s %s (weights: %s)", str(key[0]).upper(), key[1], key[2])  # (kind, name, weights, ...)
        if len(_MODELS) >= MODEL_CACHE_SIZE:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = build()
    return _MODELS[key]


def text_embeddings(
    clip: ClipBundle, queries: Sequence[str], templates: Sequence[str], device: torch.device | str
) -> torch.Tensor:
    """Template-averaged text embeddings ``[Q, D]`` of ``queries`` (:func:`~alignclip.models.text.build_text_embeddings`),
    encoded once per CLIP model object (segmentors sharing a model share its embeddings) and kept on disk across runs
    (:mod:`alignclip.pipeline.text_cache`)."""
    per_model = _TEXTS.setdefault(clip.model, {})
    key = (tuple(queries), tuple(templates), str(device))
    if key not in per_model:

        def build() -> torch.Tensor:
            log.info("encoding %d queries x %d templates with %s", len(queries), len(templates), clip.name)
            return build_text_embeddings(clip.model, clip.tokenizer, queries, templates, device)

        per_model[key] = cached_text_embeddings(clip, queries, templates, device, build)
        while len(per_model) > TEXT_CACHE_SIZE:
            per_model.pop(next(iter(per_model)))
    return per_model[key]


def clear_model_cache() -> None:
    """Free the models and text embeddings kept for reuse."""
    _MODELS.clear()
    _TEXTS.clear()
