"""Atomic file writes: nothing half-written, nothing overwritten silently."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignclip.errors import InputError

__all__ = ["atomic_write", "write_json"]

PathLike = str | os.PathLike


def atomic_write(path: PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    Raises:
        InputError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass --force (overwrite=True) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: PathLike, obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN is written as null)."""

    def _clean(o: Any) -> Any:
        if isinstance(o, float) and o != o:
            return None
        if isinstance(o, dict):
            return {str(k): _clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [_clean(v) for v in o]
        if hasattr(o, "item") and getattr(o, "ndim", 1) == 0:
            return _clean(o.item())
        if hasattr(o, "tolist"):
            return _clean(o.tolist())
        if isinstance(o, Path):
            return str(o)
        return o

    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(_clean(obj), indent=1, allow_nan=False) + "\n")

    return atomic_write(path, write, overwrite)
