"""Converters on small FAKE raw datasets in the real raw layouts, then verify_dataset."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignclip.data import open_dataset, prepare_dataset, verify_dataset
from alignclip.data.convert_crops import isprs_starts, slide_starts
from alignclip.data.labels import ISAID_PALETTE, ISPRS_PALETTE, UAVID_PALETTE, rgb_to_index
from alignclip.errors import ConfigError, DatasetError, DatasetNotFoundError

ISPRS_COLOURS = {i: c for c, i in ISPRS_PALETTE.items()}


def _ids(h: int, w: int, n: int, seed: int = 0) -> np.ndarray:
    """Blocky class-id map [h, w] with ids 0..n-1 (blocks of 40 px, random per block)."""
    blocks = np.random.default_rng(seed).integers(0, n, (h // 40 + 1, w // 40 + 1))
    return np.kron(blocks, np.ones((40, 40), np.int64))[:h, :w].astype(np.uint8)


def _image(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(yy // 3) % 256, (xx // 3) % 256, ((yy + xx) // 5) % 256], -1).astype(np.uint8)


def _colour(ids: np.ndarray, colours: dict[int, tuple]) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    for i, c in colours.items():
        lut[i] = c
    return lut[ids]


def _save(path: Path, array: np.ndarray, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def _zip(zip_path: Path, files: dict[str, Path]) -> None:
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w") as zf:
        for arcname, path in files.items():
            zf.write(path, arcname)


def test_crop_grids_follow_the_original_converters():
    assert isprs_starts(6000) == list(range(0, 5121, 512)) + [5488]  # 12 -> 144 crops per tile
    assert isprs_starts(1100) == [0, 512, 588]
    assert isprs_starts(512) == [0]
    assert slide_starts(1147, 896, 512) == [0, 251]
    assert slide_starts(3840, 1280, 1280) == [0, 1280, 2560]
    assert slide_starts(4096, 1280, 1280) == [0, 1280, 2560, 2816]


def test_rgb_to_index_counts_unknown_colours():
    rgb = np.array([[[255, 255, 255], [0, 0, 255], [1, 2, 3]]], np.uint8)
    ids, unknown = rgb_to_index(rgb, ISPRS_PALETTE)
    assert ids.tolist() == [[1, 2, 0]] and unknown == 1
    ids, _ = rgb_to_index(np.array([[[64, 0, 128]]], np.uint8), UAVID_PALETTE)
    assert ids.tolist() == [[3]]  # moving car merged into car


def test_potsdam_from_zips(tmp_path):
    ids = _ids(1100, 1100, 7)
    staging = tmp_path / "staging"
    img = _save(staging / "top_potsdam_2_13_RGB.tif", _image(1100, 1100), "TIFF")
    lab = _save(staging / "top_potsdam_2_13_label_noBoundary.tif", _colour(ids, ISPRS_COLOURS), "TIFF")
    train = _save(staging / "top_potsdam_2_10_RGB.tif", _image(600, 600), "TIFF")
    irrg = _save(staging / "top_potsdam_2_13_IRRG.tif", _image(1100, 1100)[..., ::-1], "TIFF")
    raw = tmp_path / "raw"
    _zip(
        raw / "2_Ortho_RGB.zip",
        {"2_Ortho_RGB/top_potsdam_2_13_RGB.tif": img, "2_Ortho_RGB/top_potsdam_2_10_RGB.tif": train},
    )
    _zip(raw / "3_Ortho_IRRG.zip", {"top_potsdam_2_13_IRRG.tif": irrg})
    _zip(raw / "5_Labels_all_noBoundary.zip", {"top_potsdam_2_13_label_noBoundary.tif": lab})
    out = tmp_path / "potsdam"
    result = prepare_dataset("potsdam", raw, out)
    assert result.num_images == 9 and "13 of the 14 validation tiles are absent" in str(result)
    ds = open_dataset("potsdam", out)
    assert "2_13_588_512_1100_1024" in ds.image_ids
    k = ds.image_ids.index("2_13_512_0_1024_512")  # <i>_<j>_<x0>_<y0>_<x1>_<y1>
    np.testing.assert_array_equal(ds.raw_label(k), ids[0:512, 512:1024])
    np.testing.assert_array_equal(ds[k].image, _image(1100, 1100)[0:512, 512:1024])
    with Image.open(ds.paths(k)[1]) as label:
        assert label.mode == "L"
    assert verify_dataset("potsdam", out, expected_count=9) == []
    record = json.loads((out / "alignclip_prepared.json").read_text())
    assert record["num_images"] == 9 and len(record["manifest_sha256"]) == 64
    assert not any(p.name.startswith(".alignclip-extract") for p in out.iterdir())
    with pytest.raises(DatasetError, match="--force"):
        prepare_dataset("potsdam", raw, out)
    assert prepare_dataset("potsdam", raw, out, force=True).num_images == 9


def test_potsdam_full_labels_are_refused(tmp_path):
    raw = tmp_path / "raw"
    _save(raw / "top_potsdam_2_13_RGB.tif", _image(600, 600), "TIFF")
    _save(raw / "top_potsdam_2_13_label.tif", _colour(_ids(600, 600, 7), ISPRS_COLOURS), "TIFF")
    with pytest.raises(DatasetError, match="noBoundary"):
        prepare_dataset("potsdam", raw, tmp_path / "out")


def test_vaihingen_from_folders_uses_top_and_eroded_labels(tmp_path):
    raw = tmp_path / "raw"
    ids = _ids(600, 700, 7, seed=1)
    _save(raw / "ISPRS_semantic_labeling_Vaihingen" / "top" / "top_mosaic_09cm_area2.tif", _image(600, 700), "TIFF")
    _save(
        raw / "ISPRS_semantic_labeling_Vaihingen" / "top" / "top_mosaic_09cm_area1.tif", _image(600, 700), "TIFF"
    )  # a training area: skipped
    _save(
        raw / "ISPRS_semantic_labeling_Vaihingen" / "gts_for_participants" / "top_mosaic_09cm_area2.tif",
        np.zeros((600, 700, 3), np.uint8),
        "TIFF",
    )
    _save(raw / "eroded" / "top_mosaic_09cm_area2_noBoundary.tif", _colour(ids, ISPRS_COLOURS), "TIFF")
    out = tmp_path / "vaihingen"
    assert prepare_dataset("vaihingen", raw, out).num_images == 4
    ds = open_dataset("vaihingen", out)
    assert ds.image_ids == ["area2_0_0_512_512", "area2_0_88_512_600", "area2_188_0_700_512", "area2_188_88_700_600"]
    np.testing.assert_array_equal(ds.raw_label(3), ids[88:600, 188:700])
    assert verify_dataset("vaihingen", out, expected_count=4) == []
    assert "398" in verify_dataset("vaihingen", out)[0]  # the manifest's count is enforced


def test_isaid_from_zips_pads_with_ignore(tmp_path):
    colours = {i: c for c, i in ISAID_PALETTE.items()}
    ids = _ids(700, 1000, 16, seed=2)
    staging = tmp_path / "staging"
    img = _save(staging / "P0001.png", _image(700, 1000))
    lab = _save(staging / "P0001_instance_color_RGB.png", _colour(ids, colours))
    raw = tmp_path / "raw"
    _zip(raw / "val" / "images" / "part1.zip", {"images/P0001.png": img})
    _zip(raw / "val" / "Semantic_masks" / "images.zip", {"images/P0001_instance_color_RGB.png": lab})
    out = tmp_path / "iSAID"
    assert prepare_dataset("isaid", raw, out).num_images == 2
    ds = open_dataset("isaid", out)
    assert ds.image_ids == ["P0001_0_896_0_896", "P0001_0_896_104_1000"]
    assert ds.paths(0)[1].name == "P0001_0_896_0_896_instance_color_RGB.png"
    label, image = ds.label(1), ds[1].image
    np.testing.assert_array_equal(label[:700], ids[:, 104:1000])
    assert (label[700:] == 255).all() and (image[700:] == 0).all()
    assert verify_dataset("isaid", out, expected_count=2) == []


def test_isaid_real_fixture_crops(fixtures_dir, tmp_path):
    raw = fixtures_dir / "real" / "isaid"  # val/images/P0003.png + P0003_instance_color_RGB.png
    out = tmp_path / "iSAID"
    assert prepare_dataset("isaid", raw, out).num_images == 7  # P0003: 2 x 2, P0004: 3 x 1
    ds = open_dataset("isaid", out)
    assert ds.image_ids == [
        "P0003_0_896_0_896",
        "P0003_0_896_251_1147",
        "P0003_127_1023_0_896",
        "P0003_127_1023_251_1147",
        "P0004_0_896_0_896",
        "P0004_512_1408_0_896",
        "P0004_568_1464_0_896",
    ]
    from alignclip.io.images import read_image

    full, _ = rgb_to_index(read_image(raw / "val" / "images" / "P0004_instance_color_RGB.png")[0], ISAID_PALETTE)
    crop = ds.label(6)  # P0004 is 824 wide: padded to 896 with 255
    np.testing.assert_array_equal(crop[:, :824], full[568:1464])
    assert (crop[:, 824:] == 255).all()
    assert verify_dataset("isaid", out, expected_count=7) == []


def test_uavid_merges_moving_car_and_crops_1080x1280(tmp_path):
    ids = _ids(1080, 1500, 8, seed=3)
    raw = tmp_path / "raw"
    _save(raw / "test_gt" / "seq1" / "Images" / "000000.png", _image(1080, 1500))
    _save(
        raw / "test_gt" / "seq1" / "Labels" / "000000.png",
        _colour(ids, {i: c for c, i in UAVID_PALETTE.items() if i != 3} | {3: (192, 0, 192), 7: (64, 0, 128)}),
    )
    out = tmp_path / "UAVid"
    assert prepare_dataset("uavid", raw, out).num_images == 2
    ds = open_dataset("uavid", out)
    assert ds.image_ids == ["seq1_000000_0_1080_0_1280", "seq1_000000_0_1080_220_1500"]
    expected = np.where(ids == 7, 3, ids)[:, 220:1500]
    np.testing.assert_array_equal(ds.label(1), expected)
    assert 7 not in np.unique(ds.label(0))


def test_loveda_merges_rural_and_urban_from_val_zip(tmp_path):
    staging = tmp_path / "staging"
    files = {}
    for domain, name, seed in (("Rural", "10.png", 4), ("Urban", "20.png", 5)):
        files[f"Val/{domain}/images_png/{name}"] = _save(staging / domain / "i" / name, _image(64, 64))
        files[f"Val/{domain}/masks_png/{name}"] = _save(staging / domain / "m" / name, _ids(64, 64, 8, seed))
    raw = tmp_path / "raw"
    _zip(raw / "Val.zip", files)
    out = tmp_path / "LoveDA"
    result = prepare_dataset("loveda", raw, out)
    assert result.num_images == 2 and "'Rural': 1, 'Urban': 1" in str(result)
    ds = open_dataset("loveda", out)
    raw_ids = _ids(64, 64, 8, 5)
    np.testing.assert_array_equal(ds.raw_label(1), raw_ids)
    np.testing.assert_array_equal(ds.label(1), np.where(raw_ids == 0, 255, raw_ids - 1))
    assert verify_dataset("loveda", out, expected_count=2) == []


def test_openearthmap_uses_val_list_and_skips_xbd(tmp_path):
    raw = tmp_path / "OpenEarthMap_wo_xBD"
    for region, name in (("aachen", "aachen_1.tif"), ("aachen", "aachen_2.tif"), ("houston", "houston_1.tif")):
        _save(raw / region / "images" / name, _image(64, 64), "TIFF")
        _save(raw / region / "labels" / name, _ids(64, 64, 9), "TIFF")
    (raw / "val.txt").write_text("aachen_1.tif\nhouston_1.tif\nchiclayo_3.tif\n")
    out = tmp_path / "OpenEarthMap"
    result = prepare_dataset("openearthmap", raw, out)
    assert result.num_images == 1
    assert "1 xBD tiles skipped (houston_1.tif" in str(result) and "chiclayo_3.tif" in str(result)
    ds = open_dataset("openearthmap", out)
    assert ds.image_ids == ["aachen_1"]
    np.testing.assert_array_equal(ds.label(0), _ids(64, 64, 9))
    assert verify_dataset("openearthmap", out) == []  # count unknown in the manifest: not checked


def test_udd5_copy_maps_colour_labels(tmp_path):
    raw = tmp_path / "UDD" / "UDD5"
    ids = _ids(48, 64, 5, seed=6)
    _save(raw / "val" / "src" / "a.JPG", _image(48, 64), "JPEG")
    _save(raw / "val" / "gt" / "a.png", ids)
    _save(raw / "val" / "src" / "b.JPG", _image(48, 64), "JPEG")
    palette = [(107, 142, 35), (102, 102, 156), (128, 64, 128), (0, 0, 142), (0, 0, 0)]
    _save(raw / "val" / "gt" / "b.png", _colour(ids, dict(enumerate(palette))))
    out = tmp_path / "UDD5"
    assert prepare_dataset("udd5", tmp_path / "UDD", out).num_images == 2
    ds = open_dataset("udd5", out)
    np.testing.assert_array_equal(ds.label(0), ids)
    np.testing.assert_array_equal(ds.label(1), ids)
    assert verify_dataset("udd5", out) == []


def test_prepare_errors(tmp_path):
    with pytest.raises(ConfigError, match="no converter in alignclip.*can prepare: isaid"):
        prepare_dataset("cityscapes", tmp_path, tmp_path / "out")
    with pytest.raises(DatasetNotFoundError, match="how_to_obtain"):
        prepare_dataset("potsdam", tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="5_Labels_all_noBoundary.zip"):
        prepare_dataset("potsdam", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(DatasetError, match="raw folder"):
        prepare_dataset("potsdam", tmp_path / "empty", tmp_path / "empty")


# ---- verify_dataset reports problems ----


@pytest.fixture
def potsdam_like(tmp_path) -> Path:
    """A tiny converted Potsdam-layout dataset (3 images of 32 x 32, ids 0-6)."""
    root = tmp_path / "potsdam"
    for i in range(3):
        _save(root / "img_dir" / "val" / f"t{i}.png", _image(32, 32))
        _save(root / "ann_dir" / "val" / f"t{i}.png", _ids(32, 32, 7, i))  # mode 'L'
    assert verify_dataset("potsdam", root, expected_count=3) == []
    return root


def test_verify_reports_wrong_count(potsdam_like):
    problems = verify_dataset("potsdam", potsdam_like)
    assert len(problems) == 1 and "3 images found" in problems[0] and "expected 2016" in problems[0]
    assert "expected 5" in verify_dataset("potsdam", potsdam_like, expected_count=5)[0]


def test_verify_reports_corrupt_label(potsdam_like):
    bad = potsdam_like / "ann_dir" / "val" / "t1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    problems = verify_dataset("potsdam", potsdam_like, expected_count=3)
    assert len(problems) == 1 and str(bad) in problems[0] and "unreadable label" in problems[0]


def test_verify_reports_out_of_range_values_and_sizes(potsdam_like):
    label = _ids(32, 32, 7)
    label[0, 0] = 9  # -> 8 after reduce_zero_label: not one of the 6 classes
    _save(potsdam_like / "ann_dir" / "val" / "t0.png", label)
    _save(potsdam_like / "ann_dir" / "val" / "t2.png", _ids(16, 32, 7))
    problems = verify_dataset("potsdam", potsdam_like, expected_count=3)
    assert len(problems) == 2
    assert "t0.png: label values 8 are outside the 6 classes" in problems[0]
    assert "t2.png: label is 32x16 but its image is 32x32" in problems[1]


def test_verify_reports_orphans_missing_labels_and_missing_root(potsdam_like, tmp_path):
    _save(potsdam_like / "ann_dir" / "val" / "extra.png", _ids(32, 32, 7))
    assert "1 label files have no image" in verify_dataset("potsdam", potsdam_like, None, 3)[0]
    (potsdam_like / "ann_dir" / "val" / "t0.png").unlink()
    assert "have no label" in verify_dataset("potsdam", potsdam_like, expected_count=3)[0]
    (missing,) = verify_dataset("potsdam", tmp_path / "nothing")
    assert "not found" in missing and "alignclip data prepare potsdam" in missing
