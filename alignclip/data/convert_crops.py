"""Converters that cut large raw tiles into crops: ISPRS Potsdam/Vaihingen, iSAID and UAVid.

Crop grids follow the converters the baseline used (mmsegmentation / SegEarth-OV
``tools/dataset_converters``); see :func:`isprs_starts` and :func:`slide_starts`. Labels are
always written as single-channel mode 'L' PNGs (never palette), images as real PNGs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignclip.data.labels import ISAID_PALETTE, ISPRS_PALETTE, UAVID_PALETTE, rgb_to_index
from alignclip.data.manifest import DatasetManifest
from alignclip.data.raw import gather_raw, write_rgb_png
from alignclip.errors import ConfigError, DatasetError, DatasetNotFoundError, InputError
from alignclip.io.images import read_image, write_mask

__all__ = ["convert_isaid", "convert_isprs", "convert_uavid", "isprs_starts", "slide_starts"]


def isprs_starts(length: int, clip: int = 512, stride: int = 256) -> list[int]:
    """Crop start positions of mmseg's potsdam.py / vaihingen.py along one axis.

    n = ceil((L - clip) / stride), plus one if n * stride + clip < L; starts are k * clip for
    k = 0..n (the stride only sets n), each clamped to L - clip, duplicates removed. So crops do
    not overlap except the last, shifted back to end at the border: 6000 -> 0, 512, ..., 5120,
    5488 (12 starts).

    Args:
        length: tile side L in pixels (>= clip).
        clip: crop side.
        stride: mmseg's ``--stride_size``.

    Returns:
        sorted start positions.
    """
    if length < clip:
        raise DatasetError(
            f"a tile side of {length} px is smaller than the {clip} px crop; this converter expects full ISPRS tiles"
        )
    n = math.ceil((length - clip) / stride)
    if n * stride + clip < length:
        n += 1
    return sorted({min(k * clip, length - clip) for k in range(n + 1)})


def slide_starts(length: int, patch: int, stride: int) -> list[int]:
    """Crop starts of the iSAID/UAVid converters: range(0, L, stride), clamped to L - patch.

    ``length`` must already be padded to at least ``patch``. Duplicates are removed (the original
    script writes them twice under one name).
    """
    return sorted({min(s, length - patch) for s in range(0, length, stride)})


def _pad_to(image: np.ndarray, label: np.ndarray, patch_h: int, patch_w: int):
    """Pads image (0) and label (255) at the bottom/right up to at least patch size."""
    h, w = label.shape
    ph, pw = max(patch_h - h, 0), max(patch_w - w, 0)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0)
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=255)
    return image, label


def _load_pair(image_path: Path, label_path: Path, palette: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """Reads an image and its colour label; returns (image, ids, unknown-colour pixel count)."""
    try:
        image = read_image(image_path)[0]
        colours = read_image(label_path)[0]
    except InputError as err:
        raise DatasetError(f"cannot read raw file ({err}); download it again") from err
    if colours.shape != image.shape:
        raise DatasetError(
            f"{label_path} is {colours.shape[1]}x{colours.shape[0]} but "
            f"{image_path} is {image.shape[1]}x{image.shape[0]}; the raw pair "
            "does not match, download both again"
        )
    ids, unknown = rgb_to_index(colours, palette)
    return image, ids, unknown


def _match(found: dict[str, Path], pattern: re.Pattern) -> dict[str, Path]:
    """key (first regex group) -> path for files whose relative path matches ``pattern``."""
    out = {}
    for rel, path in sorted(found.items()):
        m = pattern.search(rel)
        if m:
            out["_".join(g for g in m.groups() if g is not None)] = path
    return out


def _write_crops(
    image: np.ndarray,
    ids: np.ndarray,
    ys: list[int],
    xs: list[int],
    ph: int,
    pw: int,
    img_dir: Path,
    ann_dir: Path,
    names: Callable[[int, int], tuple[str, str]],
) -> int:
    for y0 in ys:
        for x0 in xs:
            img_name, ann_name = names(y0, x0)
            write_rgb_png(img_dir / img_name, image[y0 : y0 + ph, x0 : x0 + pw])
            write_mask(ann_dir / ann_name, ids[y0 : y0 + ph, x0 : x0 + pw])
    return len(ys) * len(xs)


def convert_isprs(
    manifest: DatasetManifest, raw: Path, img_dir: Path, ann_dir: Path, tmp: Path, skip: Sequence[Path] = ()
) -> tuple[int, list[str]]:
    """Potsdam or Vaihingen (``params.family``): val tiles -> 512 crops, colours -> ids 0-6.

    Returns:
        ``(number of crops written, notes)``.
    """
    params = manifest.conversion.params
    family, clip, stride = params["family"], int(params["clip_size"]), int(params["stride_size"])
    val = {str(t) for t in params["val_tiles"]}
    if not all(re.fullmatch(r"\d+_\d+|area\d+", t) for t in val):
        raise ConfigError(
            f'{manifest.path}: val_tiles must be quoted strings like "2_13" or '
            "area2 (YAML reads an unquoted 2_13 as the number 213), got "
            f"{sorted(val)}"
        )
    if family == "potsdam":
        img_re = re.compile(r"(?:^|/)top_potsdam_(\d+)_(\d+)_RGB\.tif$", re.IGNORECASE)
        lab_re = re.compile(r"(?:^|/)top_potsdam_(\d+)_(\d+)_label_noBoundary\.tif$", re.I)
        full_re = re.compile(r"(?:^|/)top_potsdam_(\d+)_(\d+)_label\.tif$", re.I)
        expected = "2_Ortho_RGB.zip and 5_Labels_all_noBoundary.zip"
    else:
        img_re = re.compile(r"(?:^|/)top/top_mosaic_09cm_(area\d+)\.tif$", re.IGNORECASE)
        lab_re = re.compile(r"(?:^|/)top_mosaic_09cm_(area\d+)_noBoundary\.tif$", re.I)
        full_re = re.compile(r"(?:^|/)gts_for_participants/top_mosaic_09cm_(area\d+)\.tif$", re.I)
        expected = (
            "ISPRS_semantic_labeling_Vaihingen.zip and "
            "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip"
        )

    def key_of(rel: str) -> str | None:
        for pattern in (img_re, lab_re, full_re):
            m = pattern.search(rel)
            if m:
                return "_".join(m.groups())
        return None

    found = gather_raw(raw, lambda rel: key_of(rel) in val, tmp, skip)
    images, labels, full = _match(found, img_re), _match(found, lab_re), _match(found, full_re)
    if not images and not labels:
        raise DatasetNotFoundError(
            f"no {manifest.display_name} validation tiles found under {raw}; put {expected} there (zipped or unzipped)"
        )
    full_only = sorted((set(full) - set(labels)) & set(images))
    if full_only:
        raise DatasetError(
            f"tiles {full_only[:3]} have only the full (non-eroded) labels under "
            f"{raw}; the evaluated labels are the eroded noBoundary ones: add "
            f"{expected.split(' and ')[1]}"
        )
    half = sorted(set(images) ^ set(labels))
    if half:
        raise DatasetError(
            f"tiles {half} have an image or a label but not both under {raw}; the raw set needs {expected}"
        )
    present = sorted(set(images) & set(labels))
    notes = []
    if len(present) < len(val):
        absent = sorted(val - set(present))
        notes.append(
            f"{len(absent)} of the {len(val)} validation tiles are absent from {raw} "
            f"({', '.join(absent[:4])}...): the converted set is incomplete"
        )
    count = 0
    for key in present:
        image, ids, unknown = _load_pair(images[key], labels[key], ISPRS_PALETTE)
        if unknown:
            notes.append(f"tile {key}: {unknown} label pixels of unknown colour set to 0 (ignored), as mmseg does")
        h, w = ids.shape  # crops named <key>_<x0>_<y0>_<x1>_<y1>.png, key "2_13" or "area2"
        count += _write_crops(
            image,
            ids,
            isprs_starts(h, clip, stride),
            isprs_starts(w, clip, stride),
            clip,
            clip,
            img_dir,
            ann_dir,
            lambda y0, x0, p=key: (f"{p}_{x0}_{y0}_{x0 + clip}_{y0 + clip}.png",) * 2,
        )
    return count, notes


@dataclass(frozen=True)
class _PaletteCrops:
    """What differs between the sliding-window colour-label converters (iSAID, UAVid).

    Attributes:
        img_re: regex on a raw relative path selecting images; its groups, joined by "_", give
            the key that pairs an image with its label and prefixes its crop names.
        lab_re: the same for the colour labels.
        palette: RGB colour -> class id.
        patch: crop (height, width); smaller images are padded up to it.
        stride: crop-start step (height, width).
        label_suffix: label crop file name after ``<key>_<y0>_<y1>_<x0>_<x1>`` (images get .png).
        missing: the DatasetNotFoundError message when no image is found.
        unlabelled: (what is missing, the fix) for the DatasetError on images without a label.
        unknown: (label word, what id 0 means) for the note on colours outside the palette.
    """

    img_re: re.Pattern
    lab_re: re.Pattern
    palette: dict[tuple[int, int, int], int]
    patch: tuple[int, int]
    stride: tuple[int, int]
    label_suffix: str
    missing: str
    unlabelled: tuple[str, str]
    unknown: tuple[str, str]


def _convert_palette_crops(
    spec: _PaletteCrops, base: Path, img_dir: Path, ann_dir: Path, tmp: Path, skip: Sequence[Path]
) -> tuple[int, list[str]]:
    """Gathers image/colour-label pairs under ``base``, decodes, pads and cuts them into crops.

    Returns:
        ``(number of crops written, notes)``.
    """
    img_re, lab_re = spec.img_re, spec.lab_re
    found = gather_raw(base, lambda rel: bool(img_re.search(rel) or lab_re.search(rel)), tmp, skip)
    images, labels = _match(found, img_re), _match(found, lab_re)
    if not images:
        raise DatasetNotFoundError(spec.missing)
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        what, fix = spec.unlabelled
        raise DatasetError(f"{len(unlabelled)} {what} under {base}, e.g. {unlabelled[0]}; {fix}")
    (ph, pw), (sh, sw) = spec.patch, spec.stride
    count, notes = 0, []
    for key in sorted(images):
        image, ids, unknown = _load_pair(images[key], labels[key], spec.palette)
        if unknown:
            word, zero = spec.unknown
            notes.append(f"{key}: {unknown} {word} pixels of unknown colour set to 0 ({zero})")
        image, ids = _pad_to(image, ids, ph, pw)
        h, w = ids.shape
        count += _write_crops(
            image,
            ids,
            slide_starts(h, ph, sh),
            slide_starts(w, pw, sw),
            ph,
            pw,
            img_dir,
            ann_dir,
            lambda y0, x0, k=key: (
                f"{k}_{y0}_{y0 + ph}_{x0}_{x0 + pw}.png",
                f"{k}_{y0}_{y0 + ph}_{x0}_{x0 + pw}{spec.label_suffix}",
            ),
        )
    return count, notes


def convert_isaid(
    manifest: DatasetManifest, raw: Path, img_dir: Path, ann_dir: Path, tmp: Path, skip: Sequence[Path] = ()
) -> tuple[int, list[str]]:
    """iSAID val: 896 crops with overlap 384 (stride 512), palette colours -> ids 0-15."""
    params = manifest.conversion.params
    patch, stride = int(params["patch_size"]), int(params["patch_size"]) - int(params["overlap"])
    base = raw / manifest.split if (raw / manifest.split).is_dir() else raw
    spec = _PaletteCrops(
        img_re=re.compile(r"(?:^|/)(P\d+)\.png$"),
        lab_re=re.compile(r"(?:^|/)(P\d+)_instance_color_RGB\.png$"),
        palette=ISAID_PALETTE,
        patch=(patch, patch),
        stride=(stride, stride),
        label_suffix="_instance_color_RGB.png",
        missing=(
            f"no iSAID images P*.png found under {base}; expected {raw}/{manifest.split}/"
            f"images/part1.zip and {raw}/{manifest.split}/Semantic_masks/images.zip (or "
            "unzipped files)"
        ),
        unlabelled=(
            "iSAID images have no *_instance_color_RGB.png mask",
            "add the iSAID semantic masks (Semantic_masks/images.zip)",
        ),
        unknown=("mask", "background"),
    )
    return _convert_palette_crops(spec, base, img_dir, ann_dir, tmp, skip)


def convert_uavid(
    manifest: DatasetManifest, raw: Path, img_dir: Path, ann_dir: Path, tmp: Path, skip: Sequence[Path] = ()
) -> tuple[int, list[str]]:
    """UAVid: 1080 x 1280 (H x W) crops without overlap; colours -> ids, moving car -> car."""
    params = manifest.conversion.params
    ph, pw = int(params["patch_height"]), int(params["patch_width"])
    overlap = int(params["overlap"])
    sub = raw / params["raw_subdir"]
    base = sub if sub.is_dir() else raw
    spec = _PaletteCrops(  # keys "<seq>_<stem>"; image and label crops share one name
        img_re=re.compile(r"(?:^|/)([^/]+)/Images/([^/]+)\.png$"),
        lab_re=re.compile(r"(?:^|/)([^/]+)/Labels/([^/]+)\.png$"),
        palette=UAVID_PALETTE,
        patch=(ph, pw),
        stride=(ph - overlap, pw - overlap),
        label_suffix=".png",
        missing=(
            f"no UAVid frames found under {base}; expected {sub}/<seq>/Images/*.png with {sub}/<seq>/Labels/*.png"
        ),
        unlabelled=(
            "UAVid frames have no label (<seq>/Labels/<same name>.png)",
            "evaluate only sequences with ground truth",
        ),
        unknown=("label", "clutter"),
    )
    return _convert_palette_crops(spec, base, img_dir, ann_dir, tmp, skip)
