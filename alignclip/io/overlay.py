"""Colour rendering of label maps: a fixed palette, colourised masks, and overlays with a legend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from alignclip.errors import InputError
from alignclip.io.files import atomic_write

__all__ = ["colorize", "default_palette", "write_overlay"]

PathLike = str | os.PathLike


def default_palette(n_colors: int = 256) -> np.ndarray:
    """Fixed, deterministic palette of distinct colours (distinct for up to 256 classes).

    Hues step by the golden ratio so neighbouring class ids get far-apart hues; saturation and
    value cycle through four levels every 16 ids.

    Returns:
        palette [n_colors, 3] uint8 RGB.
    """
    i = np.arange(n_colors)
    hue = (i * 0.6180339887498949) % 1.0
    sat = np.array([0.85, 0.55, 1.0, 0.7])[(i // 16) % 4]
    val = np.array([0.95, 0.8, 0.65, 1.0])[(i // 64) % 4]
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6.0) % 6.0  # vectorised HSV -> RGB
    rgb = val[:, None] * (1.0 - sat[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.round(rgb * 255.0).astype(np.uint8)


def colorize(mask: np.ndarray, n_classes: int, palette: np.ndarray | None = None) -> np.ndarray:
    """Maps class indices to colours; ids outside [0, n_classes) (e.g. 255 ignore) become black.

    Args:
        mask: class indices [H, W], integer.
        n_classes: number of classes K.
        palette: colours [>= K, 3] uint8; defaults to :func:`default_palette`.

    Returns:
        colour image [H, W, 3] uint8.
    """
    palette = default_palette(max(n_classes, 1)) if palette is None else np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] < n_classes:
        raise InputError(
            f"palette of shape {palette.shape} cannot colour {n_classes} classes; "
            f"pass a [{n_classes}, 3] uint8 array or None for the default"
        )
    lut = np.zeros((n_classes + 1, 3), np.uint8)
    lut[:n_classes] = palette[:n_classes]
    mask = np.asarray(mask).astype(np.int64)
    return lut[np.where((mask >= 0) & (mask < n_classes), mask, n_classes)]


def write_overlay(
    path: PathLike,
    image_rgb: np.ndarray,
    mask: np.ndarray,
    class_names: Sequence[str],
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
    overwrite: bool = False,
) -> None:
    """Writes the image blended with the coloured mask, with a legend panel on the right.

    The legend lists every class when there are at most 12, otherwise only the classes present.
    Pixels with ids outside the classes (e.g. 255 ignore) keep the image colour. Written
    atomically; the format follows the suffix (PNG recommended).

    Args:
        path: output image file.
        image_rgb: image [H, W, 3] uint8 RGB.
        mask: class indices [H, W].
        class_names: K class names, index i naming class id i.
        alpha: mask opacity in [0, 1].
        palette: colours [>= K, 3] uint8; defaults to :func:`default_palette`.
        overwrite: replace an existing file.
    """
    image_rgb, mask, k = np.asarray(image_rgb), np.asarray(mask), len(class_names)
    if (
        image_rgb.dtype != np.uint8
        or image_rgb.ndim != 3
        or image_rgb.shape[2] != 3
        or mask.shape != image_rgb.shape[:2]
    ):
        raise InputError(
            f"overlay {path}: image {image_rgb.shape} {image_rgb.dtype} and mask "
            f"{mask.shape} must be [H, W, 3] uint8 and [H, W] of the same size"
        )
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"overlay alpha={alpha} must be in [0, 1]")
    colours = colorize(mask, k, palette)
    valid = ((mask >= 0) & (mask < k))[..., None]
    blend = image_rgb * (1.0 - alpha) + colours * alpha
    out = np.where(valid, np.round(blend), image_rgb).astype(np.uint8)

    h, w = mask.shape
    ids = list(range(k)) if k <= 12 else [int(c) for c in np.unique(mask) if 0 <= c < k]
    size = max(14, round(min(h, w) / 40))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    pad, row = size // 2, round(size * 1.5)
    text_w = max((font.getbbox(str(class_names[c]))[2] for c in ids), default=0)
    panel_w = 3 * pad + size + text_w if ids else 0
    canvas = Image.new("RGB", (w + panel_w, max(h, 2 * pad + row * len(ids))), "white")
    canvas.paste(Image.fromarray(out), (0, 0))
    draw = ImageDraw.Draw(canvas)
    lut = colorize(np.arange(k), k, palette)
    for j, c in enumerate(ids):
        x, y = w + pad, pad + j * row
        draw.rectangle([x, y, x + size, y + size], fill=tuple(int(v) for v in lut[c]), outline="black")
        draw.text((x + size + pad, y), str(class_names[c]), fill="black", font=font)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    atomic_write(path, lambda tmp: canvas.save(tmp, format=fmt), overwrite)
