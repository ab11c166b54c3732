"""Tests for alignclip.io.images: content-sniffed reading, conversions, mask writing, resizing."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, features

from alignclip.errors import InputError
from alignclip.io import images as imageio
from alignclip.io.images import (
    read_image,
    read_label,
    resize_long_side,
    stretch_to_uint8,
    write_mask,
)
from alignclip.io.overlay import colorize, default_palette, write_overlay

rasterio = pytest.importorskip("rasterio")
from affine import Affine  # noqa: E402  (installed with rasterio)
from rasterio.crs import CRS  # noqa: E402
from rasterio.enums import ColorInterp  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
RNG = np.random.default_rng(0)


def _rgb(h: int = 20, w: int = 30) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_tiff(path, bands_first, transform=None, crs=None, colorinterp=None, **options):
    """Writes a [C, H, W] array as a TIFF with rasterio."""
    c, h, w = bands_first.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=w,
            height=h,
            count=c,
            dtype=bands_first.dtype,
            transform=transform,
            crs=crs,
            **options,
        ) as dst:
            dst.write(bands_first)
            if colorinterp is not None:
                dst.colorinterp = colorinterp
    return path


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_lossless_round_trip(tmp_path, fmt, suffix):
    image = _rgb()
    path = tmp_path / f"a{suffix}"
    Image.fromarray(image).save(path, format=fmt)
    out, meta = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, image)
    assert meta["format"] == fmt and meta["orig_dtype"] == "uint8" and meta["orig_bands"] == 3
    assert meta["notes"] == [] and meta["geo"] is None and meta["path"] == str(path)


def test_cmyk_jpeg_converted(tmp_path):
    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    image, meta = read_image(tmp_path / "c.jpg")
    assert image[0, 0].tolist() == [255, 0, 0] and meta["notes"] == ["CMYK converted to RGB"]


def test_jpeg_round_trip(tmp_path):
    image = np.full((16, 24, 3), (200, 100, 50), np.uint8)
    path = tmp_path / "a.jpg"
    Image.fromarray(image).save(path, quality=95)
    out, meta = read_image(path)
    assert meta["format"] == "JPEG" and out.shape == image.shape
    assert np.abs(out.astype(int) - image).max() <= 3


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_lossless_round_trip(tmp_path):
    image = _rgb()
    path = tmp_path / "a.webp"
    Image.fromarray(image).save(path, lossless=True)
    out, meta = read_image(path)
    assert meta["format"] == "WEBP"
    np.testing.assert_array_equal(out, image)


def test_bmp_bytes_under_png_name(tmp_path):
    image = _rgb()
    path = tmp_path / "looks_like.png"
    Image.fromarray(image).save(path, format="BMP")
    assert path.read_bytes()[:2] == b"BM"
    out, meta = read_image(path)
    assert meta["format"] == "BMP"
    np.testing.assert_array_equal(out, image)
    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(label).save(tmp_path / "label.png", format="BMP")
    np.testing.assert_array_equal(read_label(tmp_path / "label.png"), label)


def test_grayscale_replicated_with_warning(tmp_path):
    gray = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    with pytest.warns(UserWarning, match="gray.png.*grayscale"):
        out, meta = read_image(path)
    assert out.shape == (10, 12, 3) and meta["orig_bands"] == 1
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)
    assert any("grayscale" in note for note in meta["notes"])


def test_rgba_and_gray_alpha_drop_alpha(tmp_path):
    rgba = RNG.integers(0, 256, (8, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    with pytest.warns(UserWarning, match="alpha"):
        out, meta = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(out, rgba[..., :3])
    assert meta["orig_bands"] == 4 and "alpha band dropped" in meta["notes"]
    la = RNG.integers(0, 256, (8, 9, 2), dtype=np.uint8)
    Image.fromarray(la).save(tmp_path / "la.png")
    with pytest.warns(UserWarning):
        out, _ = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(out, np.repeat(la[..., :1], 3, axis=-1))


def test_stretch_rule_hand_checked():
    band = np.arange(101, dtype=np.uint16)[None, :, None] * 100  # 0..10000, p2=200, p98=9800
    out = stretch_to_uint8(band)[0, :, 0]
    assert out[:3].tolist() == [0, 0, 0] and out[-3:].tolist() == [255, 255, 255]
    assert out[50] == round((5000 - 200) / 9600 * 255)  # 127.5 rounds half to even: 128
    assert out[26] == round((2600 - 200) / 9600 * 255) == 64
    assert np.all(np.diff(out.astype(int)) >= 0)
    flat = np.full((2, 2, 1), 7.0)
    assert stretch_to_uint8(flat).ravel().tolist() == [7, 7, 7, 7]
    with_nan = np.array([[[np.nan], [0.0], [1.0]]])
    assert stretch_to_uint8(with_nan).ravel().tolist() == [0, 0, 255]


def test_uint16_png_and_float_tiff_stretched(tmp_path):
    data = RNG.integers(0, 4096, (12, 14, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a16.png"), data[..., ::-1])  # OpenCV writes BGR
    out, meta = read_image(tmp_path / "a16.png")
    assert meta["orig_dtype"] == "uint16" and out.dtype == np.uint8
    np.testing.assert_array_equal(out, stretch_to_uint8(data))
    assert any("percentile" in note for note in meta["notes"])
    floats = RNG.random((3, 12, 14)).astype(np.float32)
    _write_tiff(tmp_path / "f.tif", floats)
    out, meta = read_image(tmp_path / "f.tif")
    assert meta["orig_dtype"] == "float32"
    np.testing.assert_array_equal(out, stretch_to_uint8(np.moveaxis(floats, 0, -1)))


def test_multiband_refused_without_bands(tmp_path):
    data = RNG.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    _write_tiff(tmp_path / "five.tif", data)
    with pytest.raises(InputError, match=r"five\.tif has 5 bands; pass --bands R G B \(1-based\)"):
        read_image(tmp_path / "five.tif")
    out, meta = read_image(tmp_path / "five.tif", bands=(3, 2, 1))
    np.testing.assert_array_equal(out, np.moveaxis(data[[2, 1, 0]], 0, -1))
    assert meta["orig_bands"] == 5
    for bad in [(0, 1, 2), (1, 2, 6), (1, 2)]:
        with pytest.raises(InputError, match="1-based"):
            read_image(tmp_path / "five.tif", bands=bad)


def test_four_band_tiff_alpha_only_when_marked(tmp_path):
    data = RNG.integers(0, 256, (4, 6, 7), dtype=np.uint8)
    _write_tiff(tmp_path / "rgbn.tif", data, photometric="MINISBLACK")  # RGB + NIR
    with pytest.raises(InputError, match="has 4 bands; pass --bands"):
        read_image(tmp_path / "rgbn.tif")
    _write_tiff(tmp_path / "rgbx.tif", data, photometric="RGB", alpha="UNSPECIFIED")
    with pytest.raises(InputError, match="has 4 bands; pass --bands"):
        read_image(tmp_path / "rgbx.tif")
    out, _ = read_image(tmp_path / "rgbx.tif", bands=(4, 1, 2))
    np.testing.assert_array_equal(out, np.moveaxis(data[[3, 0, 1]], 0, -1))
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    _write_tiff(tmp_path / "rgba.tif", data, colorinterp=interp)
    with pytest.warns(UserWarning, match="alpha"):
        out, _ = read_image(tmp_path / "rgba.tif")
    np.testing.assert_array_equal(out, np.moveaxis(data[:3], 0, -1))


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_corrupt_file_raises_input_error(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"cannot read image .*broken\.png: .*expected PNG, JPEG"):
        read_image(path)
    with pytest.raises(InputError, match="cannot read image"):
        read_label(path)


def test_truncated_png_raises_input_error(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read image"):
        read_image(tmp_path / "cut.png")


def test_missing_file_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="image not found: .*nope.png"):
        read_image(tmp_path / "nope.png")


def test_geotiff_meta_and_mask_keep_crs_and_transform(tmp_path):
    transform = Affine(0.5, 0.0, 346000.0, 0.0, -0.5, 5648000.0)
    crs = CRS.from_epsg(25832)
    _write_tiff(tmp_path / "geo.tif", RNG.integers(0, 256, (3, 8, 10), dtype=np.uint8), transform=transform, crs=crs)
    image, meta = read_image(tmp_path / "geo.tif")
    assert image.shape == (8, 10, 3) and meta["format"] == "TIFF"
    assert meta["geo"]["crs"] == crs and meta["geo"]["transform"] == transform
    mask = RNG.integers(0, 6, (8, 10)).astype(np.uint8)
    write_mask(tmp_path / "pred.tif", mask, meta)
    with rasterio.open(tmp_path / "pred.tif") as ds:
        assert ds.count == 1 and ds.dtypes[0] == "uint8"
        assert ds.crs == crs and ds.transform == transform
        np.testing.assert_array_equal(ds.read(1), mask)
    half = mask[::2, ::2]  # a mask at half resolution gets a transform with twice the pixel size
    write_mask(tmp_path / "half.tif", half, meta)
    with rasterio.open(tmp_path / "half.tif") as ds:
        assert ds.transform == Affine(1.0, 0.0, 346000.0, 0.0, -1.0, 5648000.0)


def test_plain_tiff_has_no_geo_and_pillow_fallback(tmp_path, monkeypatch):
    image = _rgb()
    _write_tiff(tmp_path / "plain.tif", np.moveaxis(image, -1, 0))
    assert read_image(tmp_path / "plain.tif")[1]["geo"] is None
    monkeypatch.setattr(imageio, "_rasterio", lambda: None)
    out, meta = read_image(tmp_path / "plain.tif")
    np.testing.assert_array_equal(out, image)
    assert meta["geo"] is None and any("Pillow" in note for note in meta["notes"])


def test_write_mask_mode_l_refuses_overwrite_and_cleans_up(tmp_path):
    mask = np.zeros((6, 7), np.int64)
    mask[2:, 3:] = 1
    mask[5, 6] = 200
    path = tmp_path / "sub" / "mask.png"
    write_mask(path, mask)
    with Image.open(path) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), mask)
    assert np.unique(read_label(path)).tolist() == [0, 1, 200]
    with pytest.raises(InputError, match=r"mask\.png exists; pass --force \(overwrite=True\)"):
        write_mask(path, mask)
    write_mask(path, mask * 0 + 3, overwrite=True)
    assert np.unique(read_label(path)).tolist() == [3]
    assert os.listdir(path.parent) == ["mask.png"]  # no temp file left behind


def test_write_mask_rejects_bad_masks(tmp_path):
    with pytest.raises(InputError, match="0-255"):
        write_mask(tmp_path / "m.png", np.array([[0, 256]]))
    with pytest.raises(InputError, match="0-255"):
        write_mask(tmp_path / "m.png", np.array([[-1, 2]]))
    with pytest.raises(InputError, match=r"\[H, W\] integer"):
        write_mask(tmp_path / "m.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(InputError, match=r"\[H, W\] integer"):
        write_mask(tmp_path / "m.png", np.zeros((2, 2), np.float32))
    with pytest.raises(InputError, match=".png, .tif or .tiff"):
        write_mask(tmp_path / "m.jpg", np.zeros((2, 2), np.uint8))
    assert os.listdir(tmp_path) == []


def test_read_label_palette_gray_rgb_and_colour(tmp_path):
    indices = np.array([[0, 1, 2], [255, 2, 1]], np.uint8)
    palette_img = Image.fromarray(indices)  # putpalette makes it mode P
    palette_img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255, 255, 255] * 253)
    assert palette_img.mode == "P"
    palette_img.save(tmp_path / "p.png")
    label = read_label(tmp_path / "p.png")
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, indices)
    image, meta = read_image(tmp_path / "p.png")  # as an image, a palette PNG gives its colours
    assert image[0, 1].tolist() == [128, 0, 0] and "palette image expanded to RGB" in meta["notes"]
    Image.fromarray(np.repeat(indices[..., None], 3, -1)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(read_label(tmp_path / "grey_rgb.png"), indices)
    colour = np.zeros((2, 3, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="RGB colour label.*converter"):
        read_label(tmp_path / "colour.png")
    big = np.array([[0, 300], [65535, 7]], np.uint16)
    Image.fromarray(big).save(tmp_path / "big.png")
    label = read_label(tmp_path / "big.png")
    assert label.dtype == np.uint16
    np.testing.assert_array_equal(label, big)


def test_palette_tiff_label_gives_indices(tmp_path):
    indices = np.array([[[0, 1], [2, 1]]], np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(
            tmp_path / "p.tif", "w", driver="GTiff", width=2, height=2, count=1, dtype="uint8", photometric="palette"
        ) as dst:
            dst.write(indices)
            dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 0, 255, 255)})
    np.testing.assert_array_equal(read_label(tmp_path / "p.tif"), indices[0])
    image, _ = read_image(tmp_path / "p.tif")
    assert image[0, 1].tolist() == [255, 0, 0] and image[1, 0].tolist() == [0, 0, 255]


def test_default_palette_and_colorize():
    palette = default_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert len(np.unique(palette, axis=0)) == 256
    np.testing.assert_array_equal(palette, default_palette())  # deterministic
    mask = np.array([[0, 1], [2, 255]])
    out = colorize(mask, 3)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], palette[0])
    np.testing.assert_array_equal(out[1, 0], palette[2])
    assert out[1, 1].tolist() == [0, 0, 0]  # ignore index drawn black
    custom = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.uint8)
    assert colorize(mask, 3, custom)[0, 1].tolist() == [4, 5, 6]
    with pytest.raises(InputError, match="palette"):
        colorize(mask, 4, custom)


def test_write_overlay_png_with_legend(tmp_path):
    image = _rgb(64, 80)
    mask = np.zeros((64, 80), np.uint8)
    mask[:, 40:] = 2
    mask[0, 0] = 255
    path = tmp_path / "overlay.png"
    write_overlay(path, image, mask, ["background", "road", "building"], alpha=0.5)
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 80 and img.height >= 64
        out = np.asarray(img.convert("RGB"))
    colour = default_palette(3)[2]
    expected = np.round(image[10, 50] * 0.5 + colour * 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[10, 50], expected)
    np.testing.assert_array_equal(out[0, 0], image[0, 0])  # ignored pixel untouched
    with pytest.raises(InputError, match="exists"):
        write_overlay(path, image, mask, ["a", "b", "c"])
    with pytest.raises(InputError, match="same size"):
        write_overlay(tmp_path / "o2.png", image, mask[:10], ["a", "b", "c"])
    many = [f"class {i}" for i in range(30)]  # > 12 classes: legend lists present ones only
    write_overlay(tmp_path / "o3.png", image, mask, many)
    with Image.open(tmp_path / "o3.png") as img:
        assert img.size[1] == 64 and img.size[0] > 80


def test_resize_long_side_matches_baseline_rule():
    image = RNG.integers(0, 256, (824, 1464, 3), dtype=np.uint8)
    out = resize_long_side(image, 448)
    assert out.shape == (252, 448, 3) and out.dtype == np.uint8
    expected = cv2.resize(image, (448, 252), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out, expected)
    same = _rgb(448, 300)
    np.testing.assert_array_equal(resize_long_side(same), same)
    assert resize_long_side(_rgb(100, 224)).shape == (200, 448, 3)  # small images enlarged
    with pytest.raises(InputError, match="uint8"):
        resize_long_side(image.astype(np.float32))


def _fixture(relative: str) -> Path:
    path = FIXTURES / relative
    if not path.exists():
        pytest.skip(f"real fixture absent: {path}")
    return path


def test_real_openearthmap_geotiff_and_label():
    image, meta = read_image(_fixture("real/openearthmap/images/houston_16.tif"))
    assert image.shape == (1024, 1024, 3) and image.dtype == np.uint8
    assert meta["format"] == "TIFF" and meta["notes"] == []
    assert meta["geo"]["crs"].to_epsg() == 4326 and meta["geo"]["width"] == 1024
    label = read_label(_fixture("real/openearthmap/labels/houston_16.tif"))
    assert label.shape == (1024, 1024) and label.dtype == np.uint8
    values, counts = np.unique(label, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {
        0: 183,
        2: 202362,
        3: 164042,
        4: 151496,
        5: 160600,
        6: 155349,
        8: 214544,
    }


def test_real_isaid_png():
    image, meta = read_image(_fixture("real/isaid/val/images/P0003.png"))
    assert image.shape == (1023, 1147, 3) and image.dtype == np.uint8
    assert meta["format"] == "PNG" and meta["geo"] is None and meta["notes"] == []
    assert image.std() > 10  # real content, not a blank decode
