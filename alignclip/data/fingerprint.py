"""Fingerprints of dataset files: cheap ones an evaluation records and checks, a full one to verify.

:func:`sample_fingerprint` and :func:`dataset_fingerprint` read no pixels: each file contributes
its size, modification time (ns) and a BLAKE2b hash of its first and last 64 KiB, so a changed,
replaced, truncated or re-converted file changes the fingerprint at the cost of a ``stat`` and at
most 128 KiB read per file (copying a dataset elsewhere changes it too: the times differ).
:func:`full_dataset_hash` hashes every byte of the split, for ``alignclip data verify`` to print
and users to record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from alignclip.data.manifest import load_manifest
from alignclip.data.readers import SegmentationDataset, scan_pairs
from alignclip.errors import DatasetNotFoundError

__all__ = ["EDGE_BYTES", "dataset_fingerprint", "full_dataset_hash", "sample_fingerprint"]

#: Bytes read at each end of a file by :func:`sample_fingerprint` (64 KiB).
EDGE_BYTES = 64 * 1024
_CHUNK = 1 << 20  # read size of full_dataset_hash


def _file_part(path: Path, digest: hashlib.blake2b) -> None:
    """Feeds ``size, mtime_ns, blake2b(first 64 KiB + last 64 KiB)`` of ``path`` into ``digest``."""
    try:
        st = path.stat()
        edges = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            edges.update(f.read(EDGE_BYTES))
            if st.st_size > EDGE_BYTES:
                f.seek(max(EDGE_BYTES, st.st_size - EDGE_BYTES))
                edges.update(f.read(EDGE_BYTES))
    except OSError as err:
        raise DatasetNotFoundError(
            f"cannot read {path} to fingerprint it ({err.strerror or err}); the dataset changed while in use: "
            "restore the file or re-run `alignclip data prepare ... --force`"
        ) from err
    digest.update(f"{st.st_size}:{st.st_mtime_ns}:{edges.hexdigest()};".encode())


def sample_fingerprint(image_path: Path, label_path: Path) -> str:
    """Cheap fingerprint of one image/label pair (no decoding).

    Args:
        image_path: the image file.
        label_path: its label file.

    Returns:
        16 hex digits over each file's size, mtime_ns and a hash of its first and last 64 KiB.

    Raises:
        DatasetNotFoundError: a file is missing or unreadable.
    """
    digest = hashlib.blake2b(digest_size=8)
    _file_part(Path(image_path), digest)
    _file_part(Path(label_path), digest)
    return digest.hexdigest()


def dataset_fingerprint(data: SegmentationDataset, indices: Sequence[int] | None = None) -> str:
    """Cheap fingerprint of (a subset of) a dataset split, computed without decoding any image.

    Args:
        data: the opened split.
        indices: the samples to cover, in the order given (all, in dataset order, when None).

    Returns:
        16 hex digits over the manifest name, the split and every ``(image id,
        sample_fingerprint)`` of ``indices``.

    Raises:
        DatasetNotFoundError: a file is missing or unreadable.
        IndexError: an index out of range.
    """
    ids = data.image_ids
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{data.manifest.name}\0{data.split}\0".encode())
    for i in range(len(data)) if indices is None else indices:
        image_path, label_path = data.paths(i)
        digest.update(f"{ids[int(i)]}\0{sample_fingerprint(image_path, label_path)}\0".encode())
    return digest.hexdigest()


def full_dataset_hash(name: str, root: Path | str, split: str | None = None) -> str:
    """SHA-256 of every byte of a converted split, to record beside results.

    Covers every image and label file (and the split list, if the layout has one), sorted by
    their paths relative to ``root``; each contributes its relative path, its size and its bytes,
    so renaming, adding or removing a file changes the hash too. Moving the whole root does not.

    Args:
        name: dataset name.
        root: converted dataset root.
        split: split (the manifest's by default).

    Returns:
        64 hex digits.

    Raises:
        DatasetNotFoundError: the split is missing or a file cannot be read.
        DatasetError: images without a label.
    """
    manifest = load_manifest(name)
    root = Path(root)
    split = manifest.split if split is None else split
    files = {p for _, image, label in scan_pairs(manifest, root, split) for p in (image, label)}
    split_path = manifest.layout.split_path(root, split)
    if split_path is not None:
        files.add(split_path)
    digest = hashlib.sha256()
    for rel, path in sorted((p.relative_to(root).as_posix(), p) for p in files):
        try:
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                f.seek(0)
                digest.update(f"{rel}\0{size}\0".encode())
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
        except OSError as err:
            raise DatasetNotFoundError(
                f"cannot read {path} ({err.strerror or err}); restore it or re-run "
                f"`alignclip data prepare {manifest.name} ... --force`"
            ) from err
    return digest.hexdigest()
