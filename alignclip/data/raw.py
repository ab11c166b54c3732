"""File helpers shared by the converters: atomic writes, raw-file gathering (folders and zips)."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from alignclip.errors import DatasetError
from alignclip.io.files import atomic_write

__all__ = ["clear_folders", "copy_file", "gather_raw", "write_rgb_png"]


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    atomic_write(path, write, overwrite=True)


def write_rgb_png(path: Path, rgb: np.ndarray) -> None:
    """Writes an image [H, W, 3] uint8 RGB as a real PNG, atomically (temp file + rename)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    _atomic(Path(path), lambda tmp: Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG"))


def copy_file(src: Path, dst: Path) -> None:
    """Copies ``src`` to ``dst`` byte for byte, atomically."""
    _atomic(Path(dst), lambda tmp: shutil.copyfile(src, tmp))


def clear_folders(folders: list[Path], force: bool, name: str) -> None:
    """Creates the output folders; existing non-empty ones need ``force`` (then are emptied).

    Raises:
        DatasetError: a folder already holds files and ``force`` is False.
    """
    for folder in folders:
        if folder.is_dir() and any(folder.iterdir()):
            if not force:
                n = sum(1 for _ in folder.iterdir())
                raise DatasetError(
                    f"{folder} already holds {n} entries; pass force=True "
                    f"(`alignclip data prepare {name} ... --force`) to replace them, or choose "
                    "another --out"
                )
            shutil.rmtree(folder)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)


def _safe_member(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not name.startswith("/") and ".." not in parts


def gather_raw(raw: Path, want: Callable[[str], bool], tmp: Path, skip: Path | None = None) -> dict[str, Path]:
    """Finds the raw files a converter needs, in folders and inside zip archives.

    Every file below ``raw`` (recursively) whose posix path relative to ``raw`` satisfies
    ``want`` is returned as is; every ``*.zip`` below ``raw`` is searched too, and its members
    satisfying ``want`` (tested on ``<zip stem>/<member path>``) are extracted into ``tmp``.

    Args:
        raw: folder of raw downloads.
        want: predicate on a posix relative path.
        tmp: scratch folder for extracted members.
        skip: a folder to leave out of the scan (the output folder when it is inside ``raw``).

    Returns:
        relative posix path -> file path (extracted members under ``tmp``).
    """
    found: dict[str, Path] = {}
    skip = skip.resolve() if skip is not None else None
    for dirpath, dirnames, filenames in os.walk(raw):
        here = Path(dirpath)
        if skip is not None and (here.resolve() == skip or skip in here.resolve().parents):
            dirnames[:] = []
            continue
        dirnames.sort()
        for fname in sorted(filenames):
            path = here / fname
            rel = path.relative_to(raw).as_posix()
            if fname.lower().endswith(".zip"):
                found.update(_from_zip(path, want, tmp))
            elif want(rel):
                found[rel] = path
    return found


def _from_zip(path: Path, want: Callable[[str], bool], tmp: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir() or not _safe_member(info.filename):
                    continue
                rel = f"{path.stem}/{info.filename}"
                if not want(rel):
                    continue
                dst = tmp / f"{path.stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
                dst = dst / info.filename
                dst.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dst, "wb") as f:
                    shutil.copyfileobj(src, f)
                out[rel] = dst
    except zipfile.BadZipFile as err:
        raise DatasetError(
            f"{path} is not a readable zip archive ({err}); download it again or unzip it by hand next to it"
        ) from err
    return out
