"""Image, label and mask I/O for the CLI and the datasets.

Formats are detected from the file CONTENT (magic bytes), never from the extension: some dataset
converters write BMP bytes under ``.png`` names. Supported: PNG, JPEG, BMP, TIFF/GeoTIFF (rasterio
when importable, else Pillow) and WebP (when Pillow has it). Pixels are returned as stored; EXIF
orientation is ignored so that images stay aligned with their label files.

Conversions done by :func:`read_image` (each one is recorded in ``meta["notes"]``):

* 1 band (grayscale) -> replicated to 3 channels, with a warning naming the file.
* RGBA, or 2-band gray + alpha -> alpha dropped, with a warning. A 4-band TIFF counts as RGBA only
  when the TIFF marks its 4th band as alpha; otherwise (e.g. RGB + NIR) it is refused like any
  image with more than 4 bands unless ``bands=(r, g, b)`` (1-based) picks the RGB bands.
* Not uint8 (uint16, other integers, floats) -> per-band 2nd-98th percentile linear stretch to
  uint8 (see :func:`stretch_to_uint8`), like common remote-sensing viewers; deterministic.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from alignclip.errors import AlignCLIPError, InputError
from alignclip.io.files import atomic_write

__all__ = [
    "MASK_MAX_CLASSES",
    "MASK_SUFFIXES",
    "check_mask_path",
    "check_output_path",
    "read_image",
    "read_label",
    "resize_long_side",
    "resized_size",
    "stretch_to_uint8",
    "write_mask",
]

PathLike = str | os.PathLike
MASK_SUFFIXES = (".png", ".tif", ".tiff")  # lossless formats of :func:`write_mask`
MASK_MAX_CLASSES = 256  # a mask is uint8 (PNG mode 'L', GeoTIFF uint8): class ids 0-255
_EXPECTED = "expected PNG, JPEG, BMP or (Geo)TIFF"
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)


def _rasterio() -> Any | None:
    """Returns the rasterio module, or None when it is not installed (TIFF falls back to Pillow)."""
    try:
        import rasterio
    except ImportError:
        return None
    return rasterio


def _sniff(path: PathLike) -> tuple[Path, str, bytes]:
    """Checks that ``path`` is a readable image file; returns (path, format name, first 32 bytes)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"image not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError as err:
        raise InputError(f"cannot read image {path}: {err}; {_EXPECTED}") from err
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return path, fmt, head
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return path, "WEBP", head
    shown = head[:8].hex(" ") if head else "empty file"
    raise InputError(f"cannot read image {path}: unrecognised content ({shown}); {_EXPECTED}")


def _read_tiff_rasterio(rio: Any, path: Path, keep_palette: bool) -> tuple[np.ndarray, bool, dict | None, list[str]]:
    """Reads a TIFF with rasterio; returns ([H, W, C] array, last band is alpha, geo, notes)."""
    from rasterio.enums import ColorInterp
    from rasterio.errors import NotGeoreferencedWarning

    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rio.open(path) as ds:
            arr = np.moveaxis(ds.read(), 0, -1)  # [C, H, W] -> [H, W, C]
            interp = ds.colorinterp
            georeferenced = ds.crs is not None or not ds.transform.is_identity
            geo = None
            if georeferenced:
                geo = {"crs": ds.crs, "transform": ds.transform, "width": ds.width, "height": ds.height}
            if ds.count == 1 and interp[0] == ColorInterp.palette and not keep_palette:
                cmap = ds.colormap(1)
                lut = np.zeros((max(cmap) + 1, 3), np.uint8)
                for index, rgba in cmap.items():
                    lut[index] = rgba[:3]
                arr = lut[arr[..., 0]]
                notes.append("palette TIFF expanded to RGB with its colour map")
    alpha_last = arr.shape[-1] in (2, 4) and interp[-1] == ColorInterp.alpha
    return arr, alpha_last, geo, notes


def _read_pil(path: Path, fmt: str, keep_palette: bool) -> tuple[np.ndarray, bool, list[str]]:
    """Reads with Pillow; returns ([H, W, C] array, last band is alpha, notes)."""
    notes: list[str] = []
    with Image.open(path) as img:
        img.load()
        mode = img.mode
        if mode in ("P", "PA") and not keep_palette:
            has_alpha = mode == "PA" or "transparency" in img.info
            img = img.convert("RGBA" if has_alpha else "RGB")
            notes.append("palette image expanded to RGB")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGB")
            notes.append(f"{mode} converted to RGB")
        elif mode in ("RGBa", "La"):
            img = img.convert(mode[0:-1] + "A")
        arr = np.asarray(img)
        mode = img.mode
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    # Only TIFF can hold 4 non-alpha bands ("RGBX"); PNG/BMP/WebP 4-band data is RGBA.
    alpha_last = mode in ("RGBA", "LA", "PA") or (fmt != "TIFF" and arr.shape[-1] in (2, 4))
    return arr, alpha_last, notes


def _read_raw(
    path: Path, fmt: str, head: bytes, keep_palette: bool = False
) -> tuple[np.ndarray, bool, dict | None, list[str]]:
    """Reads any supported file into ([H, W, C] array, alpha_last, geo or None, notes)."""
    try:
        if fmt == "TIFF" and (rio := _rasterio()) is not None:
            return _read_tiff_rasterio(rio, path, keep_palette)
        if fmt == "PNG" and len(head) > 25 and head[24] == 16 and head[25] in (2, 6):
            # 16-bit RGB(A) PNG: Pillow would truncate it to 8 bits, OpenCV keeps 16 bits.
            arr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise ValueError("OpenCV could not decode the 16-bit PNG")
            arr = arr[..., [2, 1, 0, 3][: arr.shape[-1]]]  # BGR(A) -> RGB(A)
            return arr, arr.shape[-1] == 4, None, []
        arr, alpha_last, notes = _read_pil(path, fmt, keep_palette)
        if fmt == "TIFF":
            notes.append("TIFF read with Pillow (rasterio not installed): georeferencing lost")
        return arr, alpha_last, None, notes
    except InputError:
        raise
    except Exception as err:  # decoder errors come in many types (OSError, ValueError, ...)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read image {path}: {reason}; {_EXPECTED}") from err


def stretch_to_uint8(bands: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Per-band percentile stretch to uint8, the rule used for 16-bit and float images.

    For each band, ``lo`` and ``hi`` are its ``low``-th and ``high``-th percentiles over finite
    values (numpy's default linear interpolation); output = round(clip((x - lo) / (hi - lo), 0, 1)
    * 255). Non-finite values become 0. A flat band (hi <= lo) is clipped to [0, 255] instead.

    Args:
        bands: image [H, W, C] of any real dtype.
        low: lower percentile in [0, 100].
        high: upper percentile in [0, 100], above ``low``.

    Returns:
        uint8 image [H, W, C].
    """
    out = np.zeros(bands.shape, np.uint8)
    for c in range(bands.shape[-1]):  # loop over bands, not pixels
        band = bands[..., c].astype(np.float64)
        finite = np.isfinite(band)
        if not finite.any():
            continue
        lo, hi = np.percentile(band[finite], [low, high])
        if hi > lo:
            scaled = np.clip((band - lo) / (hi - lo), 0.0, 1.0) * 255.0
        else:
            scaled = np.clip(band, 0.0, 255.0)
        out[..., c] = np.where(finite, np.round(scaled), 0).astype(np.uint8)
    return out


def read_image(path: PathLike, bands: Sequence[int] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Reads an image as RGB uint8, converting explicitly (see the module docstring).

    Args:
        path: image file; the format is detected from its content.
        bands: three 1-based band indices (r, g, b) to use; required for images with more than
            4 bands and for 4-band TIFFs whose 4th band is not marked as alpha.

    Returns:
        ``(image [H, W, 3] uint8 RGB, meta)`` with meta keys ``path``, ``format`` ("PNG", "JPEG",
        "BMP", "TIFF" or "WEBP"), ``orig_dtype``, ``orig_bands``, ``notes`` (list of conversions
        done) and ``geo`` (GeoTIFF only: dict with ``crs``, ``transform``, ``width``, ``height``;
        None otherwise).

    Raises:
        InputError: file missing, unreadable, not an image, or bands missing or invalid.
    """
    path, fmt, head = _sniff(path)
    arr, alpha_last, geo, notes = _read_raw(path, fmt, head)
    n_bands = arr.shape[-1]
    meta = {
        "path": str(path),
        "format": fmt,
        "orig_dtype": str(arr.dtype),
        "orig_bands": n_bands,
        "notes": notes,
        "geo": geo,
    }
    if bands is not None:
        picked = tuple(int(b) for b in bands)
        if len(picked) != 3 or not all(1 <= b <= n_bands for b in picked):
            raise InputError(
                f"bands={tuple(bands)} is invalid for {path} ({n_bands} bands); pass three "
                f"1-based band indices between 1 and {n_bands}, e.g. --bands 1 2 3"
            )
        arr = arr[..., [b - 1 for b in picked]]
        notes.append(f"bands {picked} (1-based) used as RGB")
    else:
        if alpha_last:
            arr = arr[..., :-1]
            notes.append("alpha band dropped")
            warnings.warn(
                f"{path}: alpha band dropped (if band {n_bands} is not alpha, pass --bands R G B to choose bands)",
                UserWarning,
                stacklevel=2,
            )
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
            notes.append("grayscale replicated to RGB")
            warnings.warn(f"{path}: grayscale (1 band) replicated to RGB", UserWarning, stacklevel=2)
        if arr.shape[-1] != 3:
            raise InputError(f"{path} has {n_bands} bands; pass --bands R G B (1-based) to choose the RGB bands")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
        notes.append("1-bit image scaled to 0/255")
    elif arr.dtype != np.uint8:
        notes.append(f"{arr.dtype} stretched to uint8 (per-band 2nd-98th percentile)")
        arr = stretch_to_uint8(arr)
    return np.ascontiguousarray(arr), meta


def _integer_label(label: np.ndarray, path: Path) -> np.ndarray:
    """Casts integer-valued labels to uint8 (values <= 255) or uint16 (<= 65535)."""
    if label.dtype == np.bool_:
        return label.astype(np.uint8)
    if label.dtype in (np.uint8, np.uint16):
        return label
    valid = np.isfinite(label).all() and (label == np.round(label)).all() if label.size else True
    lo, hi = (label.min(), label.max()) if label.size else (0, 0)
    if not valid or lo < 0 or hi > 65535:
        raise InputError(
            f"label {path} has {label.dtype} values in [{lo}, {hi}]; labels must be integer class "
            "indices in 0-65535: convert it with the dataset's converter"
        )
    return label.astype(np.uint8 if hi <= 255 else np.uint16)


def read_label(path: PathLike) -> np.ndarray:
    """Reads a single-channel label of class indices (format detected from content).

    A palette ('P') PNG gives its INDICES, not its colours; an RGB file with R == G == B gives one
    channel; a genuine RGB colour label is refused.

    Args:
        path: label file.

    Returns:
        label [H, W] uint8 (or uint16 when values exceed 255).

    Raises:
        InputError: file missing or unreadable, an RGB colour label, or non-integer values.
    """
    path, fmt, head = _sniff(path)
    arr, _, _, _ = _read_raw(path, fmt, head, keep_palette=True)
    if arr.shape[-1] >= 3:
        r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
        if not (np.array_equal(r, g) and np.array_equal(g, b)):
            raise InputError(
                f"label {path} is an RGB colour label, not class indices; convert it to "
                "single-channel indices with the dataset's converter first"
            )
    elif arr.shape[-1] == 2 and fmt == "TIFF":
        raise InputError(f"label {path} has 2 bands; a label must have one band of class indices")
    return _integer_label(np.ascontiguousarray(arr[..., 0]), path)


def check_output_path(
    path: PathLike, suffixes: Sequence[str] | None = None, overwrite: bool = False, name: str = "output"
) -> Path:
    """Checks, before any work, that a file can be written at ``path`` as asked (nothing is created).

    Args:
        path: the file to be written.
        suffixes: the allowed suffixes (lower case, e.g. ``(".png",)``); None: any.
        overwrite: an existing file may be replaced (``--force``).
        name: how the message names the output (a flag such as ``--out``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: wrong suffix, a folder at ``path``, an existing file without ``overwrite``, a parent folder that
            is missing, not a folder or not writable (one line each, with the fix).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(
            f"{name} {path} is a folder; give a file path such as {path / ('out' + (suffixes or ('',))[0])}"
        )
    if suffixes is not None and path.suffix.lower() not in suffixes:
        allowed = f"{', '.join(suffixes[:-1])} or {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]
        raise InputError(f"{name} {path} must end in {allowed}; choose a file name with that suffix")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise InputError(f"{name} {path} exists; pass --force to replace it or choose another path")
    parent = path.parent
    if not parent.exists():
        raise InputError(
            f"{name} {path}: folder {parent} does not exist; create it (mkdir -p {parent}) or choose another"
        )
    if not parent.is_dir():
        raise InputError(f"{name} {path}: {parent} is a file, not a folder; choose a path inside a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{name} {path}: folder {parent} is not writable; choose a folder you can write to")
    return path


def check_mask_path(path: PathLike, num_classes: int, overwrite: bool = False, name: str = "mask") -> Path:
    """:func:`check_output_path` for :func:`write_mask` (``.png``, ``.tif``, ``.tiff``), and that ``num_classes``
    fit its uint8 ids (at most :data:`MASK_MAX_CLASSES`): call it before computing the mask."""
    path = check_output_path(path, MASK_SUFFIXES, overwrite, name)
    if num_classes > MASK_MAX_CLASSES:
        raise InputError(
            f"{name} {path}: {num_classes} classes do not fit a mask (uint8 class ids 0-{MASK_MAX_CLASSES - 1}); "
            f"use at most {MASK_MAX_CLASSES} classes (synonyms of one class go on one line, comma-separated)"
        )
    return path


def write_mask(path: PathLike, mask: np.ndarray, meta: dict | None = None, overwrite: bool = False) -> None:
    """Writes a class-index mask as a single-channel uint8 PNG (mode 'L', never 'P') or GeoTIFF.

    With a ``.tif``/``.tiff`` path and ``meta["geo"]`` (from :func:`read_image`), a single-band
    uint8 GeoTIFF with the same CRS is written; its transform is rescaled when the mask size
    differs from the source raster's. The file is written to a temp file in the same folder,
    read back and compared, then renamed into place.

    Args:
        path: output file ending in ``.png``, ``.tif`` or ``.tiff``.
        mask: class indices [H, W], integer (or bool) with values in 0-255.
        meta: optional metadata from :func:`read_image`.
        overwrite: replace an existing file.

    Raises:
        InputError: bad mask shape, dtype or values, unsupported suffix, or the file exists.
    """
    mask = np.asarray(mask)
    suffix = Path(path).suffix.lower()
    if mask.ndim != 2 or not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise InputError(
            f"mask for {path} must be a [H, W] integer array, got shape {mask.shape} of "
            f"{mask.dtype}; pass class indices (e.g. logits.argmax(0))"
        )
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) > MASK_MAX_CLASSES - 1):
        raise InputError(
            f"mask for {path} has values in [{mask.min()}, {mask.max()}]; a uint8 mask holds "
            "0-255: remap class ids (and the ignore index) into 0-255"
        )
    if suffix not in MASK_SUFFIXES:
        raise InputError(f"mask path {path} must end in .png, .tif or .tiff (lossless formats)")
    mask = mask.astype(np.uint8)
    geo = (meta or {}).get("geo")

    def write(tmp: Path) -> None:
        if suffix != ".png" and geo is not None:
            rio = _rasterio()
            if rio is None:
                raise InputError(
                    f"writing GeoTIFF {path} needs rasterio: pip install 'alignclip[geo]', or write a .png mask"
                )
            from affine import Affine

            h, w = mask.shape
            transform = geo["transform"] @ Affine.scale(geo["width"] / w, geo["height"] / h)
            with rio.open(
                tmp,
                "w",
                driver="GTiff",
                width=w,
                height=h,
                count=1,
                dtype="uint8",
                crs=geo["crs"],
                transform=transform,
                compress="deflate",
            ) as dst:
                dst.write(mask, 1)
        else:
            Image.fromarray(mask).save(tmp, format="PNG" if suffix == ".png" else "TIFF")
            with Image.open(tmp) as check:
                if check.mode != "L":
                    raise AlignCLIPError(f"{tmp} was written in mode {check.mode}, not 'L'")
        back = read_label(tmp)
        if not np.array_equal(np.unique(back), np.unique(mask)) or not np.array_equal(back, mask):
            raise AlignCLIPError(f"mask written to {tmp} reads back differently; file not saved")

    atomic_write(path, write, overwrite)


def resized_size(height: int, width: int, long_side: int = 448) -> tuple[int, int]:
    """``(H', W')`` that :func:`resize_long_side` gives an image of ``height`` x ``width`` (no pixels needed).

    scale = min(long_side / max(h, w), long_side / min(h, w)); each new side is int(side * scale + 0.5).
    """
    if int(long_side) < 1:
        raise InputError(f"long_side={long_side} must be a positive integer, e.g. 448")
    if min(height, width) < 1:
        raise InputError(f"an image of {height}x{width} pixels has no pixels to resize; give a non-empty image")
    scale = min(long_side / max(height, width), long_side / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_long_side(image: np.ndarray, long_side: int = 448) -> np.ndarray:
    """Resizes keeping the aspect ratio, exactly as the SegEarth-OV baseline (mmcv Resize).

    scale = min(long_side / max(h, w), long_side / min(h, w)); each new side is
    int(side * scale + 0.5); then ``cv2.resize(..., INTER_LINEAR)`` on uint8 (no antialiasing),
    e.g. 1464x824 (w x h) -> 448x252. Small images are enlarged the same way.

    Args:
        image: image [H, W, 3] (or [H, W]) uint8.
        long_side: target length of the longer side.

    Returns:
        resized image [H', W', 3] uint8 (a copy when the size is already right).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise InputError(
            f"resize_long_side expects a [H, W, 3] uint8 image, got shape "
            f"{image.shape} of {image.dtype}; read it with read_image first"
        )
    h, w = image.shape[:2]
    new_h, new_w = resized_size(h, w, long_side)
    if (new_h, new_w) == (h, w):
        return image.copy()
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
