"""A small generated remote-sensing-like dataset for tests, demos and CI (no downloads).

Each scene is a Voronoi partition into background, water, tree and grass cells, with rectangular
buildings and straight roads drawn on top; every class has its own colour and texture (pixel
noise, smooth blobs, stripes). Output follows the converted layout of the real datasets
(``img_dir/<split>/*.png`` RGB, ``ann_dir/<split>/*.png`` mode 'L'), described by
``data_manifests/synthetic.yaml``. Generation is deterministic: the same arguments give the same
bytes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from alignclip.data.raw import write_rgb_png
from alignclip.errors import InputError
from alignclip.io.images import write_mask

__all__ = ["SYNTHETIC_CLASSES", "generate_synthetic_dataset", "synthetic_scene"]

#: Class synonym strings, index = label id (same as data_manifests/synthetic.yaml).
SYNTHETIC_CLASSES = ("background", "building,roof", "road", "water,river", "tree,forest", "grass")
_BACKGROUND, _BUILDING, _ROAD, _WATER, _TREE, _GRASS = range(6)
_BASE_RGB = np.array(
    [[150, 138, 118], [196, 92, 72], [92, 92, 98], [38, 78, 148], [34, 98, 42], [124, 172, 74]],
    dtype=np.float32,
)
_BORDER = 3  # ignore border width (pixels) on every fourth image


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise [size, size] float32 (cubic upsampling of a cells x cells grid)."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _scene_label(rng: np.random.Generator, size: int) -> np.ndarray:
    """Label [size, size] uint8 with all six classes (Voronoi cells, buildings, roads)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    n_cells = 10
    seeds = rng.uniform(0, size, (n_cells, 2)).astype(np.float32)
    natural = np.array([_BACKGROUND, _WATER, _TREE, _GRASS])
    cell_class = np.concatenate([natural, rng.choice(natural, n_cells - len(natural))])
    dist = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    label = cell_class[dist.argmin(-1)].astype(np.uint8)
    for _ in range(int(rng.integers(3, 7))):  # buildings (a handful of rectangles)
        low = max(4, size // 18)  # 14..50 px at size 256
        h, w = rng.integers(low, max(low + 1, size // 5), 2)
        y0, x0 = rng.integers(0, size - h), rng.integers(0, size - w)
        label[y0 : y0 + h, x0 : x0 + w] = _BUILDING
    for _ in range(int(rng.integers(1, 3))):  # straight roads, drawn last
        theta = rng.uniform(0.0, np.pi)
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        half_width = rng.uniform(2.5, 5.0)
        across = np.abs((xx - cx) * np.sin(theta) - (yy - cy) * np.cos(theta))
        label[across < half_width] = _ROAD
    return label


def _scene_image(rng: np.random.Generator, label: np.ndarray) -> np.ndarray:
    """Image [H, W, 3] uint8 RGB with a colour and texture per class of ``label``."""
    size = label.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = _BASE_RGB + rng.normal(0.0, 8.0, _BASE_RGB.shape).astype(np.float32)
    pixel = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    blobs = _smooth_noise(rng, size, 24)
    waves = _smooth_noise(rng, size, 6)
    phi = rng.uniform(0.0, np.pi)
    rows = np.sin(2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / 7.0)
    roof = np.sin(2 * np.pi * xx / 5.0)
    texture = np.stack(
        [
            9.0 * pixel + 10.0 * waves,  # background: bare soil, mottled
            5.0 * pixel + 9.0 * roof,  # building: roof ridges
            4.0 * pixel,  # road: smooth asphalt
            2.5 * pixel + 7.0 * waves,  # water: slow shading
            9.0 * pixel + 22.0 * blobs,  # tree: crowns
            5.0 * pixel + 12.0 * rows,  # grass: field rows
        ]
    )  # [6, H, W]
    idx = np.minimum(label, 5).astype(np.intp)  # ignore pixels (255) keep their class below
    shade = np.take_along_axis(texture, idx[None], axis=0)[0]
    img = base[idx] + shade[..., None]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def synthetic_scene(seed: int, index: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Generates scene ``index`` of the dataset with ``seed``.

    Returns:
        ``(image [size, size, 3] uint8 RGB, label [size, size] uint8 ids 0-5, 255 = ignore)``.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    label = _scene_label(rng, size)
    image = _scene_image(rng, label)
    if index % 4 == 3:  # exercise ignore handling: thin border of 255
        label[:_BORDER], label[-_BORDER:] = 255, 255
        label[:, :_BORDER], label[:, -_BORDER:] = 255, 255
    return image, label


def generate_synthetic_dataset(
    out: Path, n_images: int = 8, size: int = 256, seed: int = 0, split: str = "val"
) -> Path:
    """Writes the synthetic dataset in the converted layout.

    Files: ``out/img_dir/<split>/synthetic_<i>.png`` (RGB) and ``out/ann_dir/<split>/
    synthetic_<i>.png`` (mode 'L', ids 0-5 = SYNTHETIC_CLASSES, 255 on a 3-pixel border of every
    fourth image). Existing files of the same names are replaced; the same arguments always give
    identical bytes.

    Args:
        out: dataset root to write.
        n_images: number of scenes.
        size: side of the square scenes in pixels (>= 64).
        seed: random seed.
        split: split folder name.

    Returns:
        ``out`` (the dataset root, ready for ``open_dataset("synthetic", out)``).
    """
    if int(n_images) < 1 or int(size) < 64:
        raise InputError(
            f"generate_synthetic_dataset needs n_images >= 1 and size >= 64, got n_images={n_images}, size={size}"
        )
    out = Path(out)
    img_dir, ann_dir = out / "img_dir" / split, out / "ann_dir" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for i in range(int(n_images)):
        image, label = synthetic_scene(seed, i, int(size))
        name = f"synthetic_{i:04d}.png"
        write_rgb_png(img_dir / name, image)
        write_mask(ann_dir / name, label, overwrite=True)
    return out
