"""Runtime resolution and the in-process caches of the pipeline.

- :func:`resolve_device`, :func:`resolve_dtype`, :func:`resolve_window_batch`: turn the configuration's ``"auto"``
  values into a device, an autocast dtype and a window batch size.
- :func:`cached_model`: loaded models reused across segmentors of one process (sweeps build hundreds of them).
- :func:`text_embeddings`: the text embeddings ``[Q, D]`` of (queries, templates), encoded once per CLIP model object
  and freed with it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch

from alignclip.errors import ConfigError
from alignclip.models.text import build_text_embeddings
from alignclip.pipeline.config import check_window_batch

__all__ = [
    "cached_model",
    "clear_model_cache",
    "resolve_device",
    "resolve_dtype",
    "resolve_window_batch",
    "text_embeddings",
]

MODEL_CACHE_SIZE = 4  # models kept per process (least recently built dropped first)
TEXT_CACHE_SIZE = 64  # text-embedding sets kept per CLIP model

_MODELS: dict[tuple, Any] = {}
_TEXTS: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
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


def cached_model(key: tuple, build: Callable[[], Any]) -> Any:
    """The model stored under ``key``, built by ``build()`` on first use (at most :data:`MODEL_CACHE_SIZE`)."""
    if key not in _MODELS:
        if len(_MODELS) >= MODEL_CACHE_SIZE:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = build()
    return _MODELS[key]


def text_embeddings(
    model: torch.nn.Module, tokenizer: Any, queries: Sequence[str], templates: Sequence[str], device: torch.device | str
) -> torch.Tensor:
    """Template-averaged text embeddings ``[Q, D]`` of ``queries`` (:func:`~alignclip.models.text.build_text_embeddings`),
    encoded once per CLIP ``model`` object: segmentors sharing a model share its embeddings."""
    per_model = _TEXTS.setdefault(model, {})
    key = (tuple(queries), tuple(templates), str(device))
    if key not in per_model:
        per_model[key] = build_text_embeddings(model, tokenizer, queries, templates, device)
        while len(per_model) > TEXT_CACHE_SIZE:
            per_model.pop(next(iter(per_model)))
    return per_model[key]


def clear_model_cache() -> None:
    """Free the models and text embeddings kept for reuse."""
    _MODELS.clear()
    _TEXTS.clear()
