"""Colour rendering of label maps: a fixed palette, colourised masks, and overlays with a legend.

Legend text is drawn with fonts that cover the class names' characters, each character with the first of
:func:`legend_fonts` that has it: DejaVu Sans (shipped by matplotlib: Latin, Greek, Cyrillic, Arabic, Hebrew, ...),
Noto Sans CJK when the optional package ``noto-cjk-sans-otc`` is installed (``pip install 'alignclip[fonts]'``:
Chinese, Japanese, Korean), then any system font fontconfig finds for the characters left. Characters no font has are
drawn as boxes, with a warning naming them.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from alignclip.errors import InputError
from alignclip.io.files import atomic_write
from alignclip.io.images import check_output_path

__all__ = ["OVERLAY_SUFFIXES", "check_overlay_path", "colorize", "default_palette", "legend_fonts", "write_overlay"]

PathLike = str | os.PathLike
OVERLAY_SUFFIXES = (".png",)  # what the CLI writes (lossless); write_overlay itself follows any Pillow suffix
FontFace = tuple[str, int]  # (font file, face index in a collection)


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


def check_overlay_path(path: PathLike, overwrite: bool = False, name: str = "overlay") -> Path:
    """:func:`~alignclip.io.images.check_output_path` for an overlay PNG: call it before computing the mask."""
    return check_output_path(path, OVERLAY_SUFFIXES, overwrite, name)


@functools.cache
def _codepoints(face: FontFace) -> frozenset[int]:
    """Characters a font face has (empty when it cannot be read)."""
    try:
        from fontTools.ttLib import TTFont  # a dependency of matplotlib

        with TTFont(face[0], fontNumber=face[1], lazy=True) as font:
            return frozenset(font.getBestCmap() or ())
    except Exception:  # a missing or unreadable font file only means fewer glyphs
        return frozenset()


def _packaged_faces() -> list[FontFace]:
    faces = []
    try:
        import matplotlib

        faces.append((str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), 0))
    except ImportError:
        pass
    try:
        import noto_cjk_sans_otc  # optional: pip install 'alignclip[fonts]'

        faces.append((str(noto_cjk_sans_otc.FONT_PATH), 2))  # face 2 of the collection: Noto Sans CJK SC
    except ImportError:
        pass
    return [f for f in faces if Path(f[0]).is_file()]


@functools.cache
def _system_faces(chars: frozenset[str]) -> tuple[FontFace, ...]:
    """System font faces fontconfig finds with any of ``chars`` (none without fontconfig)."""
    if shutil.which("fc-list") is None:
        return ()
    found: dict[FontFace, None] = {}
    for ch in sorted(chars):
        try:
            out = subprocess.run(
                ["fc-list", "--format", "%{file}\t%{index}\n", f":charset={ord(ch):x}"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return tuple(found)
        for line in sorted(out.splitlines()):
            file, _, index = line.partition("\t")
            if file.lower().endswith((".ttf", ".otf", ".ttc", ".otc")):
                found[(file, int(index) if index.isdigit() else 0)] = None
    return tuple(found)


def legend_fonts(texts: Sequence[str]) -> tuple[list[FontFace], set[str]]:
    """The font faces to draw ``texts`` with, in order of preference, and the characters none of them has."""
    chars = {ch for t in texts for ch in t if not ch.isspace()}
    faces = _packaged_faces()
    missing = {ch for ch in chars if not any(ord(ch) in _codepoints(f) for f in faces)}
    if missing:
        faces += [f for f in _system_faces(frozenset(missing)) if f not in faces]
        missing = {ch for ch in missing if not any(ord(ch) in _codepoints(f) for f in faces)}
    return faces, missing


class _LegendText:
    """Draws text with per-character font fallback (:func:`legend_fonts`) on a common baseline."""

    def __init__(self, texts: Sequence[str], size: int):
        faces, self.missing = legend_fonts(texts)
        self.fonts: list = []
        self.cmaps: list[frozenset[int]] = []
        for face in faces:
            try:
                self.fonts.append(ImageFont.truetype(face[0], size, index=face[1]))
            except OSError:
                continue
            self.cmaps.append(_codepoints(face))
        if not self.fonts:  # no font file at all: Pillow's own font (Latin only)
            try:
                self.fonts, self.cmaps = [ImageFont.load_default(size=size)], [frozenset()]
            except TypeError:  # Pillow < 10.1: fixed-size bitmap font
                self.fonts, self.cmaps = [ImageFont.load_default()], [frozenset()]

    def runs(self, text: str) -> list[tuple[str, object]]:
        """``text`` split into runs of characters drawn with one font each."""
        out: list[tuple[str, object]] = []
        for ch in text:
            pick = next((i for i, cmap in enumerate(self.cmaps) if ord(ch) in cmap), 0)
            if out and (ch.isspace() or out[-1][1] is self.fonts[pick]):
                out[-1] = (out[-1][0] + ch, out[-1][1])
            else:
                out.append((ch, self.fonts[pick]))
        return out

    def width(self, text: str) -> int:
        return int(np.ceil(sum(font.getlength(run) for run, font in self.runs(text))))

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str) -> None:
        x, y = xy
        primary = self.fonts[0]
        if not isinstance(primary, ImageFont.FreeTypeFont):
            draw.text((x, y), text, fill="black", font=primary)
            return
        baseline = y + primary.getmetrics()[0]
        for run, font in self.runs(text):
            draw.text((x, baseline), run, fill="black", font=font, anchor="ls")
            x += font.getlength(run)


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
    labels = [str(class_names[c]) for c in ids]
    text = _LegendText(labels, size)
    if text.missing:
        warnings.warn(
            f"overlay {path}: no font has the character(s) {''.join(sorted(text.missing))!r} of the class names; "
            "they are drawn as boxes (pip install 'alignclip[fonts]' for Chinese, Japanese and Korean, or install a "
            "system font that has them)",
            UserWarning,
            stacklevel=2,
        )
    pad, row = size // 2, round(size * 1.5)
    text_w = max((text.width(label) for label in labels), default=0)
    panel_w = 3 * pad + size + text_w if ids else 0
    canvas = Image.new("RGB", (w + panel_w, max(h, 2 * pad + row * len(ids))), "white")
    canvas.paste(Image.fromarray(out), (0, 0))
    draw = ImageDraw.Draw(canvas)
    lut = colorize(np.arange(k), k, palette)
    for j, (c, label) in enumerate(zip(ids, labels, strict=True)):
        x, y = w + pad, pad + j * row
        draw.rectangle([x, y, x + size, y + size], fill=tuple(int(v) for v in lut[c]), outline="black")
        text.draw(draw, (x + size + pad, y), label)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    atomic_write(path, lambda tmp: canvas.save(tmp, format=fmt), overwrite)
