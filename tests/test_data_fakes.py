"""Fake datasets in every manifest's converted layout, read back through the real readers."""

import hashlib
import json
import time

import numpy as np
import pytest
from PIL import Image

from alignclip.data import (
    fakes,
    generate_fake_dataset,
    list_datasets,
    load_manifest,
    open_dataset,
    verify_dataset,
)
from alignclip.data.fakes import FAKE_MARKER, FAKE_REGION_CLASSES
from alignclip.data.synthetic import synthetic_scene
from alignclip.errors import ConfigError, DatasetError, InputError
from alignclip.io.images import read_image

N, SIZE = 4, 96
ALL = list_datasets()
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".tif": "TIFF"}


def _digests(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_every_real_dataset_has_a_region_mapping():
    assert sorted(FAKE_REGION_CLASSES) == [n for n in ALL if n != "synthetic"]
    assert all(len(regions) == 6 for regions in FAKE_REGION_CLASSES.values())


@pytest.mark.parametrize("name", ALL)
def test_fake_dataset_reads_and_verifies(tmp_path, name):
    manifest = load_manifest(name)
    k = manifest.num_classes
    root = generate_fake_dataset(name, tmp_path / name, n_images=N, size=SIZE, seed=0)
    assert root == tmp_path / name
    ds = open_dataset(name, root)
    assert len(ds) == N
    used = set()
    for i, sample in enumerate(ds):
        assert sample.image.shape == (SIZE, SIZE, 3) and sample.image.dtype == np.uint8
        assert sample.label.shape == (SIZE, SIZE) and sample.label.dtype == np.uint8
        values = np.unique(sample.label)
        assert np.all((values < k) | (values == 255)), values
        used |= {int(v) for v in values if v != 255}
        # files sit where the layout says, in the format the suffix names
        lay = manifest.layout
        assert sample.image_path.name.endswith(lay.img_suffix)
        assert sample.label_path.name.endswith(lay.seg_suffix)
        assert lay.image_folder(root, manifest.split) in sample.image_path.parents
        fmt = FORMATS[lay.img_suffix.lower()[-4:]]
        assert read_image(sample.image_path)[1]["format"] == fmt
        # raw encoding decodes as the manifest says
        raw = ds.raw_label(i)
        if manifest.reduce_zero_label:
            expect = np.where((raw == 0) | (raw == 255), 255, raw.astype(np.int32) - 1)
        else:
            expect = raw
        np.testing.assert_array_equal(sample.label, expect)
    assert len(used) >= min(k, 4), used
    assert verify_dataset(name, root, expected_count=N) == []
    marker = json.loads((root / FAKE_MARKER).read_text())
    assert marker["fake"] is True and marker["name"] == name
    assert (marker["n_images"], marker["seed"], marker["size"]) == (N, 0, SIZE)
    assert sorted(marker["files"]) == sorted(p for p in _digests(root) if p != FAKE_MARKER)


@pytest.mark.parametrize("name", ALL)
def test_same_arguments_same_bytes(tmp_path, name):
    a = _digests(generate_fake_dataset(name, tmp_path / "a", n_images=2, size=64, seed=3))
    b = _digests(generate_fake_dataset(name, tmp_path / "b", n_images=2, size=64, seed=3))
    c = _digests(generate_fake_dataset(name, tmp_path / "c", n_images=2, size=64, seed=4))
    assert a == b and len(a) >= 5  # 2 images + 2 labels + marker (+ split list)
    assert a[FAKE_MARKER] != c[FAKE_MARKER]
    images = [p for p in a if p != FAKE_MARKER and not p.endswith(".txt")]
    assert any(a[p] != c[p] for p in images)


@pytest.mark.parametrize(
    "name, regions, raw_values",
    [
        # region order: background, building, road, water, tree, grass; 255 = ignore border
        ("loveda", {0: 0, 1: 1, 2: 2, 3: 3, 4: 5, 5: 6}, {0, 1, 2, 3, 4, 6, 7}),
        ("potsdam", {0: 5, 1: 1, 2: 0, 3: 5, 4: 3, 5: 2}, {0, 1, 2, 3, 4, 6}),
        ("isaid", {0: 0, 1: 8, 2: 7, 3: 11, 4: 0, 5: 13}, {0, 7, 8, 11, 13, 255}),
        ("udd5", {0: 4, 1: 1, 2: 2, 3: 4, 4: 0, 5: 0}, {0, 1, 2, 4}),
    ],
)
def test_regions_map_to_documented_classes(tmp_path, name, regions, raw_values):
    root = generate_fake_dataset(name, tmp_path / name, n_images=N, size=SIZE, seed=0)
    scene_seed = json.loads((root / FAKE_MARKER).read_text())["scene_seed"]
    ds = open_dataset(name, root)
    raw_seen = set()
    for i, sample in enumerate(ds):
        _, scene = synthetic_scene(scene_seed, i, SIZE)
        bg = load_manifest(name).bg_idx
        ignore = 255 if name in ("loveda", "potsdam", "isaid") else bg  # UDD5: no raw ignore
        expect = np.full(scene.shape, ignore, np.uint8)
        for region, cls in regions.items():
            expect[scene == region] = cls
        np.testing.assert_array_equal(sample.label, expect)
        raw_seen |= set(np.unique(ds.raw_label(i)).tolist())
    assert raw_seen == raw_values


def test_layout_details(tmp_path):
    city = generate_fake_dataset("cityscapes", tmp_path / "city", n_images=N, size=64)
    ds = open_dataset("cityscapes", city)
    assert ds.image_ids[:2] == ["fakecity0/fakecity0_000000_000000", "fakecity0/fakecity0_000000_000002"]
    assert (city / "gtFine/val/fakecity1/fakecity1_000000_000001_gtFine_labelTrainIds.png").is_file()
    voc = generate_fake_dataset("pascal_voc20", tmp_path / "voc", n_images=N, size=64)
    assert (voc / "ImageSets/Segmentation/val.txt").read_text().split() == [f"fake_{i:04d}" for i in range(N)]
    with Image.open(voc / "SegmentationClass/fake_0003.png") as label:
        assert label.mode == "P"
        assert set(np.unique(np.asarray(label)).tolist()) >= {0, 255}  # background, void
    oem = generate_fake_dataset("openearthmap", tmp_path / "oem", n_images=1, size=64)
    image, meta = read_image(oem / "img_dir/val/fake_0000.tif")
    assert meta["format"] == "TIFF" and meta["geo"] is not None and image.shape == (64, 64, 3)
    udd = generate_fake_dataset("udd5", tmp_path / "udd", n_images=1, size=64)
    assert (udd / "val/src/fake_0000.JPG").is_file() and (udd / "val/gt/fake_0000.png").is_file()


def test_openearthmap_without_rasterio_writes_plain_tiffs(tmp_path, monkeypatch):
    monkeypatch.setattr(fakes, "_has_rasterio", lambda: False)
    root = generate_fake_dataset("openearthmap", tmp_path / "oem", n_images=2, size=64)
    image, meta = read_image(root / "img_dir/val/fake_0000.tif")
    assert meta["format"] == "TIFF" and meta["geo"] is None and image.shape == (64, 64, 3)
    assert verify_dataset("openearthmap", root, expected_count=2) == []


def test_regenerating_replaces_the_previous_fake_files(tmp_path):
    root = generate_fake_dataset("potsdam", tmp_path / "p", n_images=4, size=64)
    generate_fake_dataset("potsdam", root, n_images=2, size=64)
    assert len(open_dataset("potsdam", root)) == 2
    assert verify_dataset("potsdam", root, expected_count=2) == []
    generate_fake_dataset("loveda", root, n_images=1, size=64)  # another dataset, same folder
    assert sorted(p.name for p in (root / "img_dir" / "val").iterdir()) == ["fake_0000.png"]


def test_refuses_folders_without_the_fake_marker(tmp_path):
    real = tmp_path / "real"
    (real / "img_dir" / "val").mkdir(parents=True)
    (real / "img_dir" / "val" / "2_13_0_0_512_512.png").write_bytes(b"real data")
    with pytest.raises(DatasetError, match="alignclip_fake.json"):
        generate_fake_dataset("potsdam", real)
    assert (real / "img_dir" / "val" / "2_13_0_0_512_512.png").read_bytes() == b"real data"


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="valid names: ade20k"):
        generate_fake_dataset("potsdamm", tmp_path / "x")
    for kwargs in ({"n_images": 0}, {"size": 32}, {"seed": -1}):
        with pytest.raises(InputError, match="generate_fake_dataset needs"):
            generate_fake_dataset("potsdam", tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_fast(tmp_path):
    generate_fake_dataset("openearthmap", tmp_path / "warm", n_images=1, size=64)  # imports
    for name in ("potsdam", "openearthmap", "ade20k"):
        start = time.perf_counter()
        generate_fake_dataset(name, tmp_path / name, n_images=4, size=128)
        assert time.perf_counter() - start < 1.0, name
