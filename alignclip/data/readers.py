"""Readers for converted datasets (mmsegmentation's on-disk layout, as SegEarth-OV uses it).

``open_dataset(name, root)`` pairs every image with its label following the manifest's layout
(``img_dir/<split>`` + ``ann_dir/<split>`` for the remote-sensing sets; the released layouts of
Cityscapes, ADE20K, COCO-Stuff and PASCAL), and returns a sequence of :class:`Sample`. Image
formats are detected from content (some converters write BMP bytes under ``.png`` names); palette
PNG labels give their indices; ``reduce_zero_label`` is applied when the manifest says so, and
decoded values outside the classes (and ignore) raise naming the label file.

Opening checks the folder is the dataset asked for (:func:`check_identity`: a fake-data marker
naming another dataset, or ISPRS crops named as the other ISPRS set); :func:`check_complete`
compares the number of images with the manifest's before an evaluation.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignclip.data.fakes import FAKE_MARKER
from alignclip.data.labels import reduce_zero_label
from alignclip.data.manifest import DatasetManifest, list_datasets, load_manifest
from alignclip.errors import DatasetError, DatasetNotFoundError, InputError
from alignclip.io.images import read_image, read_label

__all__ = [
    "Dataset",
    "Sample",
    "SegmentationDataset",
    "check_complete",
    "check_identity",
    "not_found_error",
    "open_dataset",
    "read_fake_marker",
    "scan_pairs",
]


@dataclass(frozen=True)
class Sample:
    """One evaluation image with its ground truth.

    Attributes:
        image_id: path of the image relative to the image folder, without the image suffix
            (e.g. ``"2_13_0_0_512_512"`` or ``"frankfurt/frankfurt_000000_000294"``).
        image: [H, W, 3] uint8 RGB.
        label: [H, W] uint8 evaluation ids 0..K-1, 255 = ignore (reduce_zero_label applied).
        image_path: the image file.
        label_path: the label file.
    """

    image_id: str
    image: np.ndarray
    label: np.ndarray
    image_path: Path
    label_path: Path


def _remake(manifest: DatasetManifest, root: Path, force: bool = False) -> str:
    """How to (re)create the converted dataset at ``root``: our converter, or the manifest's recipe."""
    if manifest.conversion.converter is not None:
        flag = " --force" if force else ""
        return f"create it with `alignclip data prepare {manifest.name} --raw DIR --out {root}{flag}`"
    return (
        f"download and convert it as listed under how_to_obtain in {manifest.path} "
        f"(`alignclip data prepare {manifest.name}` has no converter for it)"
    )


def not_found_error(manifest: DatasetManifest, root: Path, looked: Path, split: str) -> DatasetNotFoundError:
    """Builds the one-line 'dataset missing' error: what, where, expected layout, the fix."""
    fix = _remake(manifest, root)
    return DatasetNotFoundError(
        f"{manifest.display_name} ({manifest.name}, split {split!r}) not found: {looked} does "
        f"not exist; expected layout under {root}: {manifest.layout.describe(split)} (from "
        f"{manifest.path}); {fix}"
    )


def _list_images(folder: Path, suffix: str, recursive: bool, skip_suffix: str) -> list[str]:
    """Relative posix paths of the images in ``folder`` (suffix matched case-insensitively)."""
    low, skip_low = suffix.lower(), skip_suffix.lower()
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        if not recursive:
            dirnames[:] = []
        for fname in filenames:
            name_low = fname.lower()
            if fname.startswith(".") or not name_low.endswith(low):
                continue
            if skip_low != low and name_low.endswith(skip_low):
                continue  # a label stored beside the images (iSAID's raw layout)
            found.append((Path(dirpath) / fname).relative_to(folder).as_posix())
    return sorted(found)


def scan_pairs(manifest: DatasetManifest, root: Path | str, split: str | None = None) -> list[tuple[str, Path, Path]]:
    """Lists ``(image_id, image_path, label_path)`` of a split, sorted by image path.

    Raises:
        DatasetNotFoundError: the root, image folder, label folder or split list is missing, or
            the image folder holds no image with the expected suffix.
        DatasetError: images without a label file (the message names them).
    """
    root = Path(root)
    split = manifest.split if split is None else split
    lay = manifest.layout
    img_folder, ann_folder = lay.image_folder(root, split), lay.label_folder(root, split)
    for folder in (root, img_folder, ann_folder):
        if not folder.is_dir():
            raise not_found_error(manifest, root, folder, split)
    split_path = lay.split_path(root, split)
    if split_path is not None:
        if not split_path.is_file():
            raise not_found_error(manifest, root, split_path, split)
        stems = [s.strip() for s in split_path.read_text().splitlines() if s.strip()]
        rels = [stem + lay.img_suffix for stem in stems]
        missing_imgs = [r for r in rels if not (img_folder / r).is_file()]
        if missing_imgs:
            raise DatasetError(
                f"{len(missing_imgs)} image(s) listed in {split_path} are missing from "
                f"{img_folder}, e.g. {img_folder / missing_imgs[0]}; re-download the images or "
                "fix the split list"
            )
    else:
        rels = _list_images(img_folder, lay.img_suffix, lay.recursive, lay.seg_suffix)
    if not rels:
        raise not_found_error(manifest, root, img_folder / f"*{lay.img_suffix}", split)
    pairs, missing = [], []
    for rel in rels:
        image_id = rel[: len(rel) - len(lay.img_suffix)]
        label_path = ann_folder / (image_id + lay.seg_suffix)
        if not label_path.is_file():
            missing.append((img_folder / rel, label_path))
        pairs.append((image_id, img_folder / rel, label_path))
    if missing:
        image, label = missing[0]
        raise DatasetError(
            f"{len(missing)} image(s) have no label: {image} has no {label}; re-run "
            f"`alignclip data prepare {manifest.name} --raw DIR --out {root} --force` or remove "
            "the unlabelled images"
        )
    return pairs


def read_fake_marker(root: Path | str) -> dict | None:
    """The fake-data marker (``alignclip_fake.json``) of ``root`` as a dict, or None when absent.

    Raises:
        DatasetError: the marker exists but is not a JSON object naming a dataset.
    """
    path = Path(root) / FAKE_MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        marker, reason = None, str(err)
    else:
        reason = "no 'name' of a dataset"
    if not isinstance(marker, dict) or not isinstance(marker.get("name"), str):
        raise DatasetError(
            f"{path} is not a valid fake-data marker ({reason}); the folder holds generated data: "
            "regenerate it with generate_fake_dataset, or point to the real dataset's root"
        )
    return marker


def _crop_names(manifest: DatasetManifest) -> re.Pattern | None:
    """Regex of the image ids our ISPRS converter (and mmseg's) writes, from the manifest's tile names.

    Potsdam's tiles ``2_13`` give ``<i>_<j>_<x0>_<y0>_<x1>_<y1>``, Vaihingen's ``area2`` give
    ``area<N>_<x0>_<y0>_<x1>_<y1>``. None for other converters (no naming to tell them apart).
    """
    if manifest.conversion.converter != "isprs":
        return None
    tiles = manifest.conversion.params.get("val_tiles") or []
    shapes = sorted({re.sub(r"\d+", r"\\d+", re.escape(str(t))) for t in tiles})
    return re.compile(rf"(?:{'|'.join(shapes)})_\d+_\d+_\d+_\d+") if shapes else None


def check_identity(manifest: DatasetManifest, root: Path | str, image_ids: Sequence[str]) -> None:
    """Raises when ``root`` holds another dataset than ``manifest``'s.

    Two tells: a fake-data marker naming another dataset; or, for ISPRS Potsdam and Vaihingen
    (the same layout), image ids that all follow the other set's crop naming and none this one's.
    Other real datasets of the same layout cannot be told apart here (verify the counts).

    Raises:
        DatasetError: one line naming both datasets and the fix.
    """
    marker = read_fake_marker(root)
    if marker is not None:
        other = marker["name"]
        if other != manifest.name:
            raise DatasetError(
                f"{Path(root) / FAKE_MARKER} says {root} holds FAKE {other} data, not {manifest.name}; "
                f"open it as {other!r} (--dataset {other}) or point to a {manifest.display_name} root"
            )
        return
    own = _crop_names(manifest)
    if own is None or not image_ids or any(own.fullmatch(i) for i in image_ids):
        return
    for other in list_datasets():
        theirs = _crop_names(load_manifest(other)) if other != manifest.name else None
        if theirs is not None and all(theirs.fullmatch(i) for i in image_ids):
            raise DatasetError(
                f"{root} holds crops named like {image_ids[0]!r}, the naming of {other}, not of "
                f"{manifest.name} ({own.pattern}); open it as {other!r} (--dataset {other}) or point to "
                f"the {manifest.display_name} root"
            )


class SegmentationDataset(Sequence):
    """A converted evaluation split: a sequence of :class:`Sample` (read lazily, in order).

    Attributes:
        manifest: the dataset's manifest.
        root: dataset root folder.
        split: split name (the manifest's by default).
        is_fake: the root holds generated data (a fake-data marker naming this dataset).

    Raises:
        DatasetNotFoundError: see :func:`scan_pairs`.
        DatasetError: unlabelled images, or the folder holds another dataset (:func:`check_identity`).
    """

    def __init__(self, manifest: DatasetManifest, root: Path | str, split: str | None = None):
        self.manifest = manifest
        self.root = Path(root)
        self.split = manifest.split if split is None else split
        self._pairs = scan_pairs(manifest, self.root, self.split)
        check_identity(manifest, self.root, [p[0] for p in self._pairs])
        self.is_fake = read_fake_marker(self.root) is not None

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        image_id, image_path, label_path = self._pairs[self._index(index)]
        image = self._read(read_image, image_path)[0]
        label = self._decode(self._read(read_label, label_path), label_path)
        if label.shape != image.shape[:2]:
            raise DatasetError(
                f"{label_path} is {label.shape[1]}x{label.shape[0]} but its image {image_path} "
                f"is {image.shape[1]}x{image.shape[0]} (W x H); re-run `alignclip data prepare "
                f"{self.manifest.name} ... --force` (labels must never be resized)"
            )
        return Sample(image_id, image, label, image_path, label_path)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset({self.manifest.name!r}, root={str(self.root)!r}, "
            f"split={self.split!r}, {len(self)} images)"
        )

    @property
    def image_ids(self) -> list[str]:
        """Image ids in dataset order."""
        return [p[0] for p in self._pairs]

    @property
    def classes(self) -> tuple[str, ...]:
        """Class synonym strings, one per evaluation id."""
        return self.manifest.classes

    @property
    def num_classes(self) -> int:
        """Number of evaluation classes K."""
        return self.manifest.num_classes

    def paths(self, index: int) -> tuple[Path, Path]:
        """``(image_path, label_path)`` of sample ``index`` without reading them."""
        _, image_path, label_path = self._pairs[self._index(index)]
        return image_path, label_path

    def raw_label(self, index: int) -> np.ndarray:
        """Label of sample ``index`` exactly as stored: [H, W] uint8 (uint16 if stored so)."""
        return self._read(read_label, self._pairs[self._index(index)][2])

    def label(self, index: int) -> np.ndarray:
        """Evaluation label [H, W] uint8 of sample ``index`` (no image read)."""
        label_path = self._pairs[self._index(index)][2]
        return self._decode(self._read(read_label, label_path), label_path)

    def _index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset indices must be integers, got {type(index).__name__}")
        n = len(self._pairs)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        return int(index) % n

    def _read(self, reader, path: Path):
        try:
            return reader(path)
        except InputError as err:
            raise DatasetError(
                f"cannot read {path} ({err}); check it with `alignclip data verify "
                f"{self.manifest.name} --root {self.root}` and re-run prepare with --force"
            ) from err

    def _decode(self, label: np.ndarray, path: Path) -> np.ndarray:
        if label.size and int(label.max()) > 255:
            raise DatasetError(
                f"{path} holds values up to {int(label.max())}; labels must be "
                "uint8 ids (0-255): re-run the dataset's converter"
            )
        label = label.astype(np.uint8, copy=False)
        label = reduce_zero_label(label) if self.manifest.reduce_zero_label else label
        k, ignore = self.manifest.num_classes, self.manifest.ignore_index
        over = label >= k
        if over.any():
            values = np.unique(label[over])
            bad = values[values != ignore]
            if bad.size:
                shown = ", ".join(str(int(v)) for v in bad[:8])
                raise DatasetError(
                    f"{path}: label values {shown} are outside the {k} classes (0..{k - 1}) and ignore "
                    f"{ignore} after decoding (reduce_zero_label={self.manifest.reduce_zero_label}); the file "
                    f"is corrupted or from another dataset: check it with `alignclip data verify "
                    f"{self.manifest.name} --root {self.root}` and re-run prepare with --force"
                )
        return label


#: Short alias used in signatures and docs.
Dataset = SegmentationDataset


def open_dataset(name: str, root: Path | str, split: str | None = None) -> SegmentationDataset:
    """Opens a converted dataset split.

    Args:
        name: dataset name (see :func:`alignclip.data.list_datasets`), e.g. ``"potsdam"``.
        root: dataset root, e.g. ``data/potsdam`` (holding ``img_dir/`` and ``ann_dir/``).
        split: split name; defaults to the one the paper evaluated (manifest ``split``).

    Returns:
        A sequence of :class:`Sample` with images [H, W, 3] uint8 RGB and labels [H, W] uint8.

    Raises:
        ConfigError: unknown dataset name.
        DatasetNotFoundError: root or split folder missing (the message says how to create it).
        DatasetError: an image without label, or unreadable/mismatched files when read.
    """
    return SegmentationDataset(load_manifest(name), root, split)


def check_complete(data: SegmentationDataset, limit: int | None, allow_partial: bool) -> str | None:
    """Compares the images found with the manifest's ``num_eval_images`` before an evaluation.

    No check (None) when the count is unknown (null in the manifest), when another split than the
    manifest's is evaluated, or on generated data of any size: fake data
    (:attr:`SegmentationDataset.is_fake`) and the ``synthetic`` converter's dataset. Fewer images than expected is an error unless the run asks for a subset:
    ``limit`` (at most the images found) or ``allow_partial`` turn it into a warning. More images
    than expected is a warning (another split or dataset mixed in?).

    Args:
        data: the opened split.
        limit: the evaluation's ``--limit`` (first N images), or None for all.
        allow_partial: the evaluation's ``--allow-partial``: evaluate an incomplete split anyway.

    Returns:
        A one-line warning for the caller to print, or None when the count is as expected.

    Raises:
        InputError: ``limit`` below 1.
        DatasetError: fewer images than expected, no ``limit`` within them and no ``allow_partial``.
    """
    if limit is not None and int(limit) < 1:
        raise InputError(f"--limit must be at least 1 (images to evaluate), got {limit}")
    manifest = data.manifest
    expected, found = manifest.num_eval_images, len(data)
    generated = data.is_fake or manifest.conversion.converter == "synthetic"
    if expected is None or data.split != manifest.split or generated or found == expected:
        return None
    where = f"{manifest.name} under {data.root}"
    if found > expected:
        return (
            f"warning: found {found} images of {where} but {manifest.path.name} expects {expected}; all "
            f"{found} are evaluated: check `alignclip data verify {manifest.name} --root {data.root}`"
        )
    if limit is not None and int(limit) <= found:
        return (
            f"warning: found {found} of {expected} images of {where}; --limit {limit} evaluates the first "
            f"{limit} of them: not comparable with the paper's {expected}-image scores"
        )
    if allow_partial:
        return (
            f"warning: found {found} of {expected} images of {where}; --allow-partial evaluates these "
            f"{found}: not comparable with the paper's {expected}-image scores"
        )
    raise DatasetError(
        f"found {found} of {expected} images of {where}; pass --allow-partial to evaluate a subset, or fix "
        f"the data ({_remake(manifest, data.root, force=True)} from the complete download)"
    )
