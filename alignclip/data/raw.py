"""File helpers shared by the converters: atomic writes, raw-file gathering (folders and zips), staged replacement."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from alignclip.errors import DatasetError
from alignclip.io.files import atomic_write

__all__ = ["check_replaceable", "copy_file", "gather_raw", "is_skipped", "staging_folder", "swap_in", "write_rgb_png"]


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    atomic_write(path, write, overwrite=True)


def write_rgb_png(path: Path, rgb: np.ndarray) -> None:
    """Writes an image [H, W, 3] uint8 RGB as a real PNG, atomically (temp file + rename)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    _atomic(Path(path), lambda tmp: Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG"))


def copy_file(src: Path, dst: Path) -> None:
    """Copies ``src`` to ``dst`` byte for byte, atomically."""
    _atomic(Path(dst), lambda tmp: shutil.copyfile(src, tmp))


def check_replaceable(targets: Sequence[Path], force: bool, name: str) -> None:
    """Refuses, unless ``force``, to replace output entries that hold data (files or non-empty folders).

    Only checks: nothing is created, moved or deleted here (see :func:`swap_in`).

    Raises:
        DatasetError: ``force`` is False and a target is a file or a non-empty folder.
    """
    if force:
        return
    for target in targets:
        if target.is_dir() and not target.is_symlink():
            n = sum(1 for _ in target.iterdir())
            held = f"already holds {n} entries" if n else ""
        else:
            held = "already exists" if target.exists() or target.is_symlink() else ""
        if held:
            raise DatasetError(
                f"{target} {held}; pass force=True (`alignclip data prepare {name} ... --force`) "
                "to replace them, or choose another --out"
            )


def staging_folder(out: Path) -> Path:
    """Creates an empty scratch folder on the same filesystem as ``out``'s contents.

    It sits next to ``out`` (``<out>.tmp-<random>``; next to its target when ``out`` is a symlink),
    or inside it (``<out>/.alignclip-tmp-<random>``) when ``out`` is a mount point, so that
    :func:`swap_in` only needs renames.
    """
    out = Path(out).resolve()
    if out.is_dir() and os.path.ismount(out):
        path = out / f".alignclip-tmp-{uuid.uuid4().hex[:8]}"
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        path = out.parent / f"{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def swap_in(staging: Path, out: Path, rels: Sequence[str]) -> None:
    """Moves every ``staging/<rel>`` onto ``out/<rel>``, replacing what was there, by renames only.

    Each old ``out/<rel>`` is first moved aside into ``staging`` (a ``rel`` absent from ``staging``
    just removes the old entry); the old entries are deleted only once every new one is in place.
    If a rename fails, the renames done so far are undone and ``out`` is left as it was. The
    caller removes ``staging`` afterwards.

    Raises:
        DatasetError: a rename failed (``out`` was restored).
    """
    aside_root = staging / f".replaced-{uuid.uuid4().hex[:8]}"
    undo: list[tuple[Path, Path]] = []  # (moved to, moved from), in order
    try:
        for rel in rels:
            new, target = staging / rel, out / rel
            if target.exists() or target.is_symlink():
                aside = aside_root / rel
                aside.parent.mkdir(parents=True, exist_ok=True)
                os.replace(target, aside)
                undo.append((aside, target))
            if new.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(new, target)
                undo.append((target, new))
    except OSError as err:
        for moved_to, moved_from in reversed(undo):
            os.replace(moved_to, moved_from)
        raise DatasetError(
            f"could not move the converted files from {staging} into {out} ({err}); {out} is unchanged: "
            "check permissions and free space there, then run again"
        ) from err
    shutil.rmtree(aside_root, ignore_errors=True)


def is_skipped(path: Path, skip: Sequence[Path]) -> bool:
    """True when ``path`` is one of the folders ``skip`` or lies inside one."""
    here = Path(path).resolve()
    return any(s == here or s in here.parents for s in (Path(p).resolve() for p in skip))


def _safe_member(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not name.startswith("/") and ".." not in parts


def gather_raw(raw: Path, want: Callable[[str], bool], tmp: Path, skip: Sequence[Path] = ()) -> dict[str, Path]:
    """Finds the raw files a converter needs, in folders and inside zip archives.

    Every file below ``raw`` (recursively) whose posix path relative to ``raw`` satisfies
    ``want`` is returned as is; every ``*.zip`` below ``raw`` is searched too, and its members
    satisfying ``want`` (tested on ``<zip stem>/<member path>``) are extracted into ``tmp``.

    Args:
        raw: folder of raw downloads.
        want: predicate on a posix relative path.
        tmp: scratch folder for extracted members.
        skip: folders to leave out of the scan (the output and scratch folders when they lie inside ``raw``).

    Returns:
        relative posix path -> file path (extracted members under ``tmp``).
    """
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(raw):
        here = Path(dirpath)
        if is_skipped(here, skip):
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
