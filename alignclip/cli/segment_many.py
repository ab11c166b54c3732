"""``alignclip segment`` on many images: files, folders and globs in, one mask per input in ``--out-dir``.

Every input and output name is checked before any model is built (one-line errors). The models and the text
embeddings are built once; the next image is read in a background thread while the device segments the current one.
An image that fails (unreadable, too small, a bad band count) is reported on stderr and the others go on; outputs
that exist are skipped unless ``--force``; each mask is written atomically. A summary line gives the counts.
"""

from __future__ import annotations

import glob
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from alignclip.errors import AlignCLIPError, InputError

__all__ = ["IMAGE_SUFFIXES", "Job", "Summary", "collect_inputs", "plan_jobs", "run_jobs"]

#: Suffixes a folder's images are found by (the formats :func:`alignclip.io.images.read_image` reads).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Job:
    """One input image and the files it becomes."""

    image: Path
    mask: Path
    overlay: Path | None = None


@dataclass
class Summary:
    """What a batch did: counts and the failures (``(image, reason)``), with the segmentation time."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the loop (reading, segmenting, writing), models excluded

    def line(self) -> str:
        per = f", {self.seconds / self.done:.2f} s per image" if self.done else ""
        skip = " (outputs exist; --force to redo them)" if self.skipped else ""
        return f"segmented {self.done}, skipped {self.skipped}{skip}, failed {len(self.failed)}{per}"


def is_batch(inputs: Sequence[str], out_dir: str | None) -> bool:
    """Whether the inputs ask for the many-images mode (several, a folder, a glob, or ``--out-dir``)."""
    return out_dir is not None or len(inputs) > 1 or any(Path(i).is_dir() or _GLOB_CHARS & set(i) for i in inputs)


def collect_inputs(inputs: Sequence[str]) -> list[Path]:
    """The image files named by ``inputs`` (files, folders: their images, non-recursively; globs), in order, each
    once. Raises a one-line :class:`InputError` for a missing file, or a folder or glob with no image."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise InputError(f"folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)}); name another folder")
            found.extend(images)
        elif _GLOB_CHARS & set(item) and not path.exists():
            images = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
            if not images:
                raise InputError(f"no file matches {item!r}; check the pattern (quote it so that alignclip expands it)")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"input {path} does not exist; give image files, folders or globs")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return [Path(p) for p in unique]


def plan_jobs(images: Sequence[Path], out_dir: str, overlays: bool) -> list[Job]:
    """One :class:`Job` per image: ``OUT_DIR/<stem>.tif`` for a TIFF input (its georeferencing is kept), else
    ``OUT_DIR/<stem>.png``; with ``overlays`` also ``OUT_DIR/<stem>_overlay.png``. Raises a one-line
    :class:`InputError` when the folder is missing or two inputs would write the same file."""
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"--out-dir {out} is not a folder; create it (mkdir -p {out}) or choose another")
    jobs, owners = [], {}
    for image in images:
        suffix = ".tif" if image.suffix.lower() in (".tif", ".tiff") else ".png"
        mask = out / f"{image.stem}{suffix}"
        if mask in owners:
            raise InputError(
                f"{owners[mask]} and {image} would both write {mask}; segment them into different --out-dir folders"
            )
        owners[mask] = image
        jobs.append(Job(image, mask, out / f"{image.stem}_overlay.png" if overlays else None))
    return jobs


def _read_ahead(jobs: Sequence[Job], read: Callable[[Path], Any]) -> Iterator[tuple[Job, Future]]:
    """Each job with the future of its image, the next one read in a background thread meanwhile."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(read, jobs[0].image) if jobs else None
        for i, job in enumerate(jobs):
            current = pending
            pending = pool.submit(read, jobs[i + 1].image) if i + 1 < len(jobs) else None
            yield job, current


def run_jobs(
    jobs: Sequence[Job],
    segment: Callable[[np.ndarray], np.ndarray],
    read: Callable[[Path], tuple[np.ndarray, dict]],
    write_mask: Callable[[Job, np.ndarray, dict], None],
    write_overlay: Callable[[Job, np.ndarray, np.ndarray], None] | None = None,
    force: bool = False,
) -> Summary:
    """Segment every job's image (see the module docstring); returns the :class:`Summary`.

    Args:
        segment: image ``[H, W, 3]`` uint8 → labels ``[H, W]``.
        read: path → ``(image, meta)`` (:func:`alignclip.io.images.read_image`).
        write_mask, write_overlay: write one job's outputs (atomically, replacing only with ``force``).
        force: redo jobs whose outputs exist (else they are skipped without being read).
    """
    summary = Summary()
    todo = [j for j in jobs if force or not (j.mask.exists() and (j.overlay is None or j.overlay.exists()))]
    summary.skipped = len(jobs) - len(todo)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="segment", unit="image", disable=None, file=sys.stderr)
    for job, future in _read_ahead(todo, read):
        try:
            image, meta = future.result()
            labels = segment(image)
            write_mask(job, labels, meta)
            if write_overlay is not None and job.overlay is not None:
                write_overlay(job, image, labels)
            summary.done += 1
        except Exception as err:  # noqa: BLE001 - one image's failure is reported, the others go on
            text = " ".join(str(err).splitlines())
            reason = text if isinstance(err, AlignCLIPError) else f"{type(err).__name__}: {text}"
            summary.failed.append((job.image, reason))
            tqdm.write(f"failed: {job.image}: {reason}", file=sys.stderr)
        bar.update(1)
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary
