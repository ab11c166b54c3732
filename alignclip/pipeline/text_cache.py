"""Template-averaged text embeddings kept on disk, so a second run with the same classes skips the text encoder.

An entry is keyed by everything that determines the embeddings: the CLIP architecture, its weights' identity (the
open_clip tag, or the sha256 of a local file; for random weights a digest of the text tower's tensors), the MLP
activation, the queries, the templates, the recipe version and open_clip's version. Entries are written atomically
and checked on read (a corrupt or foreign file is rebuilt, never trusted).

Where: ``$ALIGNCLIP_TEXT_CACHE`` if set (``off`` disables the cache), else ``text/`` in the package's cache folder
(:func:`alignclip.io.cache.cache_root`: ``~/.cache/alignclip`` by default). ``alignclip segment/evaluate --no-cache`` switches it off for one run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import torch

from alignclip.io.cache import cache_root
from alignclip.io.files import atomic_write
from alignclip.models.clip import ClipBundle, state_digest

__all__ = ["RECIPE_VERSION", "cached_text_embeddings", "set_text_cache", "text_cache_dir", "text_cache_key"]

log = logging.getLogger(__name__)

#: Bumped whenever :func:`alignclip.models.text.build_text_embeddings` computes differently.
RECIPE_VERSION = 1
_OFF_WORDS = ("off", "0", "none", "no", "false")
_override: list[Path | None] = []  # set_text_cache's value, when one was given in this process


def set_text_cache(folder: str | os.PathLike | None) -> None:
    """Use ``folder`` for the text cache in this process (None: no disk cache), whatever the environment says."""
    _override[:] = [None if folder is None else Path(folder)]


def text_cache_dir() -> Path | None:
    """The cache folder (see the module docstring), or None when the cache is off."""
    if _override:
        return _override[0]
    env = os.environ.get("ALIGNCLIP_TEXT_CACHE")
    if env is not None:
        return None if env.strip().lower() in _OFF_WORDS else Path(env).expanduser()
    return cache_root() / "text"


def _weights_key(clip: ClipBundle) -> str:
    if not clip.is_random:
        return clip.weights_id
    text_tower = {k: v for k, v in clip.model.state_dict().items() if not k.startswith("visual.")}
    return "random:" + state_digest(text_tower)  # random weights depend on the architecture and the seed


def text_cache_key(clip: ClipBundle, queries: Sequence[str], templates: Sequence[str]) -> tuple[str, dict]:
    """``(hex digest, description)`` of the embeddings of ``queries`` × ``templates`` under ``clip``."""
    try:
        open_clip_version = metadata.version("open_clip_torch")
    except metadata.PackageNotFoundError:  # pragma: no cover - open_clip is a dependency
        open_clip_version = "unknown"
    meta = {
        "recipe": RECIPE_VERSION,
        "model": clip.name,
        "weights": _weights_key(clip),
        "activation": clip.activation,
        "queries": list(queries),
        "templates": list(templates),
        "open_clip": open_clip_version,
    }
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return digest, meta


def _read(path: Path, meta: dict) -> torch.Tensor | None:
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        embeds = entry["embeds"]
        ok = json.loads(entry["meta"]) == meta and embeds.ndim == 2 and embeds.shape[0] == len(meta["queries"])
    except Exception:  # noqa: BLE001 - any unreadable entry is rebuilt
        return None
    return embeds if ok else None


def cached_text_embeddings(
    clip: ClipBundle,
    queries: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str,
    build: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """``build()``'s ``[Q, D]`` embeddings, read from the disk cache when an entry for the same key exists."""
    folder = text_cache_dir()
    if folder is None:
        return build()
    digest, meta = text_cache_key(clip, queries, templates)
    path = folder / f"{digest}.pt"
    if path.is_file():
        embeds = _read(path, meta)
        if embeds is not None:
            log.info("text embeddings of %d queries read from the cache (%s)", len(queries), folder)
            return embeds.to(device)
    embeds = build()
    entry = {"meta": json.dumps(meta, sort_keys=True, ensure_ascii=False), "embeds": embeds.detach().float().cpu()}
    try:
        atomic_write(path, lambda tmp: torch.save(entry, tmp), overwrite=True)
    except OSError as err:  # a read-only or full disk costs only the next run's text encoding
        log.warning("text-embedding cache not written (%s): %s", path, err.strerror or err)
    return embeds
