"""Dataset readers on the REAL fixtures (exact per-class pixel counts) and on edge cases."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignclip.data import generate_synthetic_dataset, open_dataset
from alignclip.data.labels import ISAID_PALETTE, rgb_to_index
from alignclip.errors import DatasetError, DatasetNotFoundError
from alignclip.io.images import read_image


def _counts(label: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(label, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def _mmseg_layout(tmp: Path, images: list[Path], labels: list[Path], split: str = "val") -> Path:
    for path in images:
        _link(path, tmp / "img_dir" / split / path.name)
    for path in labels:
        _link(path, tmp / "ann_dir" / split / path.name)
    return tmp


LOVEDA_RAW = {
    "0": {1: 142441, 2: 14427, 3: 19208, 4: 3888, 7: 868612},
    "1": {1: 226400, 2: 3503, 3: 2485, 4: 244616, 6: 43126, 7: 528446},
    "2": {1: 8244, 4: 29109, 6: 914057, 7: 97166},
}


def test_loveda_raw_and_reduced_ids(fixtures_dir, tmp_path):
    src = fixtures_dir / "real" / "loveda"
    root = _mmseg_layout(tmp_path, sorted((src / "img_dir").glob("*.png")), sorted((src / "ann_dir").glob("*.png")))
    ds = open_dataset("loveda", root)
    assert len(ds) == 3 and ds.image_ids == ["0", "1", "2"]
    for i, sample in enumerate(ds):
        raw = LOVEDA_RAW[sample.image_id]
        assert _counts(ds.raw_label(i)) == raw
        # reduce_zero_label: raw id r -> r - 1 (no raw 0 = no-data pixels in these tiles)
        assert _counts(sample.label) == {k - 1: v for k, v in raw.items()}
        assert sample.image.shape == (1024, 1024, 3) and sample.image.dtype == np.uint8
        assert sample.label.dtype == np.uint8


@pytest.mark.parametrize(
    "name, stem, counts",
    [
        ("potsdam", "2_10_0_0_512_512", {0: 24696, 1: 100557, 2: 64023, 3: 34357, 4: 30670, 5: 7841}),
        ("vaihingen", "area1_0_0_512_512", {0: 21283, 1: 135362, 2: 79847, 3: 16532, 4: 4908, 5: 4212}),
    ],
)
def test_isprs_converted_labels(fixtures_dir, tmp_path, name, stem, counts):
    src = fixtures_dir / "real" / name
    root = _mmseg_layout(tmp_path, [src / "img_dir" / f"{stem}.png"], [src / "ann_dir" / f"{stem}.png"])
    ds = open_dataset(name, root)
    assert _counts(ds.raw_label(0)) == counts
    # 0 (eroded boundary) -> 255 ignore, classes 1..6 -> 0..5
    expected = {(255 if k == 0 else k - 1): v for k, v in counts.items()}
    sample = ds[0]
    assert _counts(sample.label) == expected
    assert sample.image.shape == (512, 512, 3) and sample.image_id == stem


def test_openearthmap_geotiff_labels(fixtures_dir, tmp_path):
    src = fixtures_dir / "real" / "openearthmap"
    names = ["houston_16.tif", "palu_8.tif"]
    root = _mmseg_layout(tmp_path, [src / "images" / n for n in names], [src / "labels" / n for n in names])
    ds = open_dataset("openearthmap", root)
    assert ds.image_ids == ["houston_16", "palu_8"]
    assert _counts(ds[0].label) == {0: 183, 2: 202362, 3: 164042, 4: 151496, 5: 160600, 6: 155349, 8: 214544}
    assert _counts(ds[1].label) == {2: 167402, 3: 329356, 4: 31856, 5: 84048, 6: 322855, 8: 113059}
    assert ds[1].image.shape == (1024, 1024, 3)


def test_isaid_colour_masks_decode_by_palette(fixtures_dir):
    src = fixtures_dir / "real" / "isaid" / "val" / "images"
    names = {0: "background", 2: "storage tank", 8: "large vehicle", 9: "small vehicle"}
    expected = {
        "P0003": {"background": 1098554, "small vehicle": 11720, "storage tank": 403, "large vehicle": 62704},
        "P0004": {"background": 994724, "small vehicle": 12830, "large vehicle": 198782},
    }
    for pid, want in expected.items():
        ids, unknown = rgb_to_index(read_image(src / f"{pid}_instance_color_RGB.png")[0], ISAID_PALETTE)
        assert unknown == 0
        assert {names[k]: v for k, v in _counts(ids).items()} == want


def test_cityscapes_train_ids_in_nested_city_folders(fixtures_dir):
    ds = open_dataset("cityscapes", fixtures_dir / "real" / "cityscapes")
    assert ds.image_ids == ["frankfurt/frankfurt_000000_000294"]
    sample = ds[0]
    assert sample.label_path.name == "frankfurt_000000_000294_gtFine_labelTrainIds.png"
    assert _counts(sample.label) == {
        0: 9737,
        1: 2634,
        2: 12748,
        4: 43,
        5: 400,
        7: 190,
        8: 663,
        10: 579,
        11: 106,
        13: 1799,
        255: 3869,
    }
    assert sample.image.shape == (128, 256, 3)


def test_ade20k_reduce_zero_label(fixtures_dir, tmp_path):
    src = fixtures_dir / "real" / "ade20k"
    for path in sorted((src / "images").glob("*.jpg")):
        _link(path, tmp_path / "images" / "validation" / path.name)
    for path in sorted((src / "annotations").glob("*.png")):
        _link(path, tmp_path / "annotations" / "validation" / path.name)
    ds = open_dataset("ade20k", tmp_path)
    assert len(ds) == 3 and ds.split == "validation"
    raw = _counts(ds.raw_label(0))
    assert raw == {0: 3613, 1: 14538, 2: 123406, 3: 134492, 5: 8784, 7: 1755, 10: 53099, 18: 10009}
    assert _counts(ds[0].label) == {255: 3613, 0: 14538, 1: 123406, 2: 134492, 4: 8784, 6: 1755, 9: 53099, 17: 10009}
    for i in range(3):
        reduced = _counts(ds.label(i))
        assert reduced == {(255 if k == 0 else k - 1): v for k, v in _counts(ds.raw_label(i)).items()}


def test_pascal_voc_palette_indices_and_split_file(fixtures_dir, tmp_path):
    src = fixtures_dir / "real" / "pascal_voc"
    for sub in ("JPEGImages", "SegmentationClass"):
        for path in sorted((src / sub).iterdir()):
            _link(path, tmp_path / sub / path.name)
    split = tmp_path / "ImageSets" / "Segmentation" / "val.txt"
    split.parent.mkdir(parents=True)
    split.write_text("2007_000032\n2007_000033\n")
    ds = open_dataset("pascal_voc20", tmp_path)
    # palette indices: 0 background, 1 aeroplane, 15 person, 255 void
    assert _counts(ds.raw_label(0)) == {0: 129545, 1: 4734, 15: 866, 255: 5355}
    assert _counts(ds[0].label) == {255: 129545 + 5355, 0: 4734, 14: 866}
    assert _counts(ds[1].label) == {255: 143868 + 8195, 0: 30937}
    split.write_text("2007_000032\n2007_999999\n")
    with pytest.raises(DatasetError, match="2007_999999.jpg"):
        open_dataset("pascal_voc20", tmp_path)


# ---- edge cases on the synthetic dataset (no fixtures needed) ----


@pytest.fixture
def synthetic_root(tmp_path) -> Path:
    return generate_synthetic_dataset(tmp_path / "syn", n_images=4, size=64)


def test_missing_root_message_is_one_actionable_line(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        open_dataset("potsdam", tmp_path / "nowhere")
    msg = str(err.value)
    assert "\n" not in msg
    assert "potsdam.yaml" in msg and str(tmp_path / "nowhere") in msg
    assert "img_dir/val/*.png + ann_dir/val/*.png" in msg
    assert f"alignclip data prepare potsdam --raw DIR --out {tmp_path / 'nowhere'}" in msg


def test_missing_split_folder(synthetic_root):
    with pytest.raises(DatasetNotFoundError, match=r"img_dir/train does not exist"):
        open_dataset("synthetic", synthetic_root, split="train")


def test_image_without_label_is_named(synthetic_root):
    (synthetic_root / "ann_dir" / "val" / "synthetic_0002.png").unlink()
    with pytest.raises(DatasetError, match="synthetic_0002.png"):
        open_dataset("synthetic", synthetic_root)


def test_bmp_bytes_under_png_name_and_palette_label(synthetic_root):
    ds = open_dataset("synthetic", synthetic_root)
    before = ds[0]
    img_path, ann_path = ds.paths(0)
    Image.fromarray(before.image).save(img_path, format="BMP")  # mmseg's iSAID/UAVid habit
    # A palette label as VOC ships them: the reader must return indices, not colours. (Saving
    # mode 'P' WITHOUT a palette is lossy in Pillow 13: indices merge; converters never do it.)
    palette = Image.new("P", before.label.shape[::-1])
    palette.putdata(before.label.ravel().tolist())
    palette.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, 255 - i)])
    palette.save(ann_path)
    assert Image.open(ann_path).mode == "P"
    assert img_path.read_bytes()[:2] == b"BM"
    after = open_dataset("synthetic", synthetic_root)[0]
    np.testing.assert_array_equal(after.image, before.image)
    np.testing.assert_array_equal(after.label, before.label)


def test_size_mismatch_and_unreadable_files(synthetic_root):
    ds = open_dataset("synthetic", synthetic_root)
    _, ann_path = ds.paths(1)
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(ann_path)
    with pytest.raises(DatasetError, match="must never be resized"):
        ds[1]
    ann_path.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="alignclip data verify synthetic"):
        ds.label(1)


def test_sequence_protocol(synthetic_root):
    ds = open_dataset("synthetic", synthetic_root)
    assert len(ds) == 4 and ds[-1].image_id == "synthetic_0003"
    assert [s.image_id for s in ds] == ds.image_ids
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(TypeError):
        ds["0"]
    assert "4 images" in repr(ds)
