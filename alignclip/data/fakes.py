"""FAKE datasets in the converted on-disk layout of every real dataset (smoke runs, reader tests).

``generate_fake_dataset("potsdam", Path("fake/potsdam"))`` writes a few generated scenes exactly
where and how the converted Potsdam would hold them (``img_dir/val/*.png`` RGB and
``ann_dir/val/*.png`` ids 0-6 with 0 = eroded boundary), so that ``open_dataset`` decodes them
through the same code path as the real data. Each dataset keeps its own folders, split name,
suffixes, file formats (JPEG for the natural datasets and the drone sets, GeoTIFF for
OpenEarthMap, a plain TIFF when the optional rasterio is missing, palette PNG labels for PASCAL
VOC) and RAW label encoding (``reduce_zero_label``
datasets store class id + 1 with 0 = ignore/no-data).

Scene content comes from :func:`alignclip.data.synthetic.synthetic_scene`, whose six regions
(background/bare soil, building, road, water, tree, grass) are mapped to the dataset's classes
by name in :data:`FAKE_REGION_CLASSES` (a water region becomes the dataset's water-like class
when it has one). The data is NOT real: ``<out>/alignclip_fake.json`` says so and lists the
files written; results on it mean nothing beyond "the pipeline runs".
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from alignclip.data.manifest import DatasetManifest, load_manifest
from alignclip.data.raw import write_rgb_png
from alignclip.data.synthetic import generate_synthetic_dataset, synthetic_scene
from alignclip.errors import ConfigError, DatasetError, InputError
from alignclip.io.images import write_mask

__all__ = ["FAKE_MARKER", "FAKE_REGION_CLASSES", "generate_fake_dataset"]

#: Name of the marker file written at the root of every fake dataset.
FAKE_MARKER = "alignclip_fake.json"

#: Dataset -> class (first synonym, as ``DatasetManifest.class_names``) given to each synthetic
#: region, in region order (background/bare soil, building, road, water, tree, grass). None means
#: the dataset's raw "unlabelled" value (PASCAL VOC background, ignored after decoding).
FAKE_REGION_CLASSES: dict[str, tuple[str | None, ...]] = {
    "openearthmap": ("bareland", "building", "road", "water", "tree", "grass"),
    "loveda": ("background", "building", "road", "water", "forest", "agricultural"),
    # iSAID has no land-cover classes: buildings -> large vehicle, grass -> soccer ball field.
    "isaid": ("background", "large vehicle", "bridge", "swimming pool", "background", "soccer ball field"),
    # ISPRS labels water as clutter.
    "potsdam": ("clutter", "building", "road", "clutter", "tree", "low vegetation"),
    "vaihingen": ("clutter", "building", "impervious surface", "clutter", "tree", "low vegetation"),
    "uavid": ("background", "building", "road", "background", "tree", "vegetation"),
    "udd5": ("background", "building", "road", "background", "vegetation", "vegetation"),
    "vdd": ("background", "roof", "road", "water", "vegetation", "vegetation"),
    "cityscapes": ("sidewalk", "building", "road", "sky", "vegetation", "terrain"),
    "ade20k": ("earth", "building", "road", "water", "tree", "grass"),
    "coco_stuff171": ("dirt", "building-other", "road", "water-other", "tree", "grass"),
    "pascal_context59": ("ground", "building", "road", "water", "tree", "grass"),
    # Objects only: regions become plausible objects; background is raw 0 (ignored).
    "pascal_voc20": (None, "bus", "car", "ship", "pottedplant", "sheep"),
}

#: Raw value written for ignored pixels (the synthetic scenes' 255 border). Datasets absent here
#: have no ignore value in their raw encoding: their ignored pixels get the class ``bg_idx``.
_RAW_IGNORE = {
    "loveda": 0,
    "potsdam": 0,
    "vaihingen": 0,
    "ade20k": 0,
    "pascal_context59": 0,  # 0 -> 255
    "pascal_voc20": 255,  # void (boundary) index
    "isaid": 255,
    "cityscapes": 255,
    "coco_stuff171": 255,
}
_PALETTE_LABELS = {"pascal_voc20"}  # labels stored as palette ('P') PNGs, indices = ids
_FAKE_ORIGIN = (0.0, 0.0)  # GeoTIFF top-left (lon, lat): "null island", obviously not real
_FAKE_PIXEL_DEG = 4.5e-6  # about 0.5 m per pixel at the equator
_JPEG_QUALITY = 95


def _stems(name: str, n_images: int) -> list[str]:
    """Relative image ids (no suffix); Cityscapes gets two city sub-folders (recursive layout)."""
    if name == "cityscapes":
        return [f"fakecity{i % 2}/fakecity{i % 2}_000000_{i:06d}" for i in range(n_images)]
    return [f"fake_{i:04d}" for i in range(n_images)]


def _region_lut(manifest: DatasetManifest) -> np.ndarray:
    """Look-up table [256] uint8: synthetic label value (regions 0-5, 255) -> RAW label value."""
    names = FAKE_REGION_CLASSES.get(manifest.name)
    if names is None:
        raise ConfigError(
            f"no fake-data class mapping for dataset {manifest.name!r}; add it to "
            f"FAKE_REGION_CLASSES in {__file__} (known: "
            f"{', '.join(sorted(FAKE_REGION_CLASSES))})"
        )
    shift = 1 if manifest.reduce_zero_label else 0
    ids = []
    for cls in names:
        if cls is None:
            ids.append(None)
        elif cls in manifest.class_names:
            ids.append(manifest.class_names.index(cls))
        else:
            raise ConfigError(
                f"FAKE_REGION_CLASSES[{manifest.name!r}] names class {cls!r}, "
                f"which {manifest.path} does not list; use one of "
                f"{', '.join(manifest.class_names)}"
            )
    lut = np.zeros(256, np.uint8)  # raw 0 for None regions (unlabelled)
    for region, cid in enumerate(ids):
        if cid is not None:
            lut[region] = cid + shift
    lut[255] = _RAW_IGNORE.get(manifest.name, manifest.bg_idx + shift)
    return lut


def _voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bits of the index spread over R, G, B), flat [768] list."""
    idx = np.arange(256)
    rgb = np.zeros((256, 3), np.int64)
    for bit in range(8):  # 8 bit planes, not pixels
        for ch in range(3):
            rgb[:, ch] |= ((idx >> (3 * bit + ch)) & 1) << (7 - bit)
    return rgb.astype(np.uint8).ravel().tolist()


def _has_rasterio() -> bool:
    """True when rasterio (the optional 'geo' extra) is importable: GeoTIFFs get georeferencing."""
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def _geo() -> dict:
    """Fake georeferencing (WGS 84 at lon/lat 0, 0) in read_image's ``meta["geo"]`` form."""
    from affine import Affine
    from rasterio.crs import CRS

    return {
        "crs": CRS.from_epsg(4326),
        "transform": Affine(_FAKE_PIXEL_DEG, 0.0, _FAKE_ORIGIN[0], 0.0, -_FAKE_PIXEL_DEG, _FAKE_ORIGIN[1]),
    }


def _write_image(path: Path, image: np.ndarray) -> None:
    """Writes [H, W, 3] uint8 RGB in the format the suffix names (PNG, JPEG or GeoTIFF)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".png":
        write_rgb_png(path, image)
    elif suffix in (".jpg", ".jpeg"):
        Image.fromarray(image).save(path, format="JPEG", quality=_JPEG_QUALITY)
    elif suffix in (".tif", ".tiff") and _has_rasterio():
        import rasterio

        h, w = image.shape[:2]
        with rasterio.open(
            path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", photometric="RGB", **_geo()
        ) as dst:
            dst.write(np.moveaxis(image, -1, 0))
    elif suffix in (".tif", ".tiff"):  # optional 'geo' extra missing: plain TIFF, no georef
        Image.fromarray(image).save(path, format="TIFF")
    else:
        raise ConfigError(f"fake images cannot be written as {suffix!r} ({path}); supported: .png, .jpg, .tif")


def _write_label(path: Path, raw: np.ndarray, palette: bool) -> None:
    """Writes raw ids [H, W] uint8: mode 'L' PNG, palette PNG or single-band GeoTIFF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:
        img = Image.frombytes("P", (raw.shape[1], raw.shape[0]), raw.tobytes())  # raw indices
        img.putpalette(_voc_palette())
        img.save(path, format="PNG")
    elif path.suffix.lower() in (".tif", ".tiff") and _has_rasterio():
        h, w = raw.shape
        write_mask(path, raw, meta={"geo": {**_geo(), "width": w, "height": h}}, overwrite=True)
    else:
        write_mask(path, raw, overwrite=True)


def _prepare_out(out: Path) -> None:
    """Refuses a folder holding non-fake data; removes the files of a previous fake generation."""
    marker = out / FAKE_MARKER
    if marker.is_file():
        try:
            old = json.loads(marker.read_text(encoding="utf-8")).get("files", [])
        except (json.JSONDecodeError, AttributeError) as err:
            raise DatasetError(
                f"{marker} is not a valid fake-data marker ({err}); delete {out} and generate again"
            ) from err
        for rel in old:
            (out / rel).unlink(missing_ok=True)
    elif out.is_dir() and any(out.iterdir()):
        raise DatasetError(
            f"refusing to write fake data into {out}: it holds files and no "
            f"{FAKE_MARKER} (it may be a real dataset); choose an empty or new "
            "folder"
        )


_MAX_SCENE = 1024  # scenes are drawn at most this large and resized up (a 4000x3000 fake stays cheap to make)


def _fake_scene(seed: int, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic scene of ``height x width``: a square scene of the long side (drawn at most :data:`_MAX_SCENE`
    and resized up, labels by nearest neighbour), cropped; a square size up to that is the scene itself."""
    side = max(height, width)
    image, label = synthetic_scene(seed, index, min(side, _MAX_SCENE))
    if side > _MAX_SCENE:
        image = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (side, side), interpolation=cv2.INTER_NEAREST)
    return image[:height, :width], label[:height, :width]


def generate_fake_dataset(
    name: str, out: Path, n_images: int = 4, size: int | tuple[int, int] = 128, seed: int = 0
) -> Path:
    """Writes a small FAKE dataset in the converted layout and raw label encoding of ``name``.

    Images [size, size, 3] uint8 RGB are written in the manifest's split, folders, suffixes and
    format; labels hold the manifest's RAW ids (e.g. Potsdam 1-6 with 0 = boundary, iSAID 0-15
    with 255 padding, PASCAL VOC palette indices), so that ``open_dataset(name, out)`` decodes
    them to ids 0..K-1 or 255. The synthetic regions map to classes by
    :data:`FAKE_REGION_CLASSES`; the 3-pixel border of every fourth image is ignored (the raw
    ignore value, or class ``bg_idx`` where the raw encoding has none). ``out/alignclip_fake.json``
    marks the folder as fake and lists its files; regenerating into a fake folder first removes
    the files listed there. Same arguments, same bytes. ``"synthetic"`` delegates to
    :func:`generate_synthetic_dataset`.

    Args:
        name: dataset name (see :func:`alignclip.data.list_datasets`).
        out: root folder to write (new, empty, or a previous fake dataset).
        n_images: number of images (>= 1).
        size: side of the square images in pixels (>= 64), or ``(height, width)`` (e.g. the manifest's
            ``image_size``: the real size of the dataset's images).
        seed: random seed (>= 0); the dataset name is mixed in, so datasets differ.

    Returns:
        ``out``, ready for ``open_dataset(name, out)``.

    Raises:
        ConfigError: unknown dataset name (the message lists the valid ones).
        InputError: ``n_images``, ``size`` or ``seed`` out of range.
        DatasetError: ``out`` holds files but no fake-data marker.
    """
    manifest = load_manifest(name)
    height, width = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(v) for v in size)
    if int(n_images) < 1 or min(height, width) < 64 or int(seed) < 0:
        raise InputError(
            f"generate_fake_dataset needs n_images >= 1, size >= 64 and seed >= 0, "
            f"got n_images={n_images}, size={size}, seed={seed}"
        )
    n_images, seed, out = int(n_images), int(seed), Path(out)
    size = height if height == width else [height, width]
    _prepare_out(out)
    lay, split = manifest.layout, manifest.split
    files: list[str] = []
    if manifest.name == "synthetic":
        if height != width:
            raise InputError(f"the synthetic dataset is square: pass one size, not {height}x{width}")
        generate_synthetic_dataset(out, n_images=n_images, size=size, seed=seed, split=split)
        stems = [f"synthetic_{i:04d}" for i in range(n_images)]
        scene_seed = seed
    else:
        lut = _region_lut(manifest)
        stems = _stems(manifest.name, n_images)
        scene_seed = seed * 2**32 + zlib.crc32(manifest.name.encode())
        palette = manifest.name in _PALETTE_LABELS
        for i, stem in enumerate(stems):
            image, label = _fake_scene(scene_seed, i, height, width)
            _write_image(lay.image_folder(out, split) / (stem + lay.img_suffix), image)
            _write_label(lay.label_folder(out, split) / (stem + lay.seg_suffix), lut[label], palette)
    for stem in stems:
        for folder, suffix in (
            (lay.image_folder(out, split), lay.img_suffix),
            (lay.label_folder(out, split), lay.seg_suffix),
        ):
            files.append((folder / (stem + suffix)).relative_to(out).as_posix())
    split_path = lay.split_path(out, split)
    if split_path is not None:
        split_path.parent.mkdir(parents=True, exist_ok=True)
        split_path.write_text("".join(f"{stem}\n" for stem in stems), encoding="utf-8")
        files.append(split_path.relative_to(out).as_posix())
    marker = {
        "fake": True,
        "warning": "FAKE DATA generated by alignclip.data.generate_fake_dataset; not the real "
        f"{manifest.display_name}: scores on it mean nothing",
        "name": manifest.name,
        "n_images": n_images,
        "size": size,
        "seed": seed,
        "scene_seed": scene_seed,
        "split": split,
        "files": files,
    }
    (out / FAKE_MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return out
