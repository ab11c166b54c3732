"""Dataset manifests: every YAML loads, and the baseline's per-dataset settings are recorded."""

from pathlib import Path

import pytest
import yaml

from alignclip.data import list_datasets, load_manifest, manifest_sha256
from alignclip.data.manifest import MANIFEST_DIR, _parse
from alignclip.data.prepare import CONVERTERS
from alignclip.errors import ConfigError

ALL = [
    "ade20k",
    "cityscapes",
    "coco_stuff171",
    "isaid",
    "loveda",
    "openearthmap",
    "pascal_context59",
    "pascal_voc20",
    "potsdam",
    "synthetic",
    "uavid",
    "udd5",
    "vaihingen",
    "vdd",
]

# SegEarth-OV configs (reference-facts table): split, reduce_zero_label, prob_thd, bg_idx, classes.
SEGEARTH = {
    "openearthmap": (
        "val",
        False,
        0.1,
        0,
        "background;bareland,barren;grass;pavement;road;tree,forest;water,river;cropland;building,roof,house",
    ),
    "loveda": ("val", True, 0.3, 0, "background;building,roof,house;road;water;barren;forest;agricultural"),
    "isaid": (
        "val",
        False,
        0.4,
        0,
        "background;ship;store tank;baseball diamond;tennis court;"
        "basketball court;ground track field;bridge;large vehicle;small vehicle;helicopter;"
        "swimming pool;roundabout;soccer ball field;plane;harbor",
    ),
    "potsdam": ("val", True, 0.1, 5, "road,parking lot;building;low vegetation;tree;car;clutter,background"),
    "vaihingen": ("val", True, 0.1, 5, "impervious surface;building;low vegetation;tree;car;clutter"),
    "uavid": ("test", False, 0.3, 0, "background;building;road;car;tree;vegetation;human"),
    "udd5": ("val", False, 0.4, 4, "vegetation;building;road;vehicle;background"),
    "vdd": ("test", False, 0.3, 0, "background;facade;road;vegetation;vehicle;roof;water"),
}

NATURAL = {  # name: (num classes, num images, reduce_zero_label)
    "cityscapes": (19, 500, False),
    "ade20k": (150, 2000, True),
    "coco_stuff171": (171, 5000, False),
    "pascal_context59": (59, 5104, True),
    "pascal_voc20": (20, 1449, True),
}


def test_every_manifest_loads_and_is_listed():
    assert list_datasets() == ALL
    for name in ALL:
        m = load_manifest(name)
        assert m.name == name and m.path == MANIFEST_DIR / f"{name}.yaml"
        assert m.ignore_index == 255
        assert m.how_to_obtain and m.notes and m.citation and m.licence and m.source
        assert all(r.sha256 is not None or r.note for r in m.raw_files)
        assert m.conversion.converter is None or m.conversion.converter in CONVERTERS
        assert "{split}" in m.layout.img_dir or m.layout.split_file is not None


@pytest.mark.parametrize("name", sorted(SEGEARTH))
def test_remote_sensing_settings_match_segearth_ov(name):
    split, reduce, thd, bg, classes = SEGEARTH[name]
    m = load_manifest(name)
    assert (m.split, m.reduce_zero_label, m.prob_thd, m.bg_idx) == (split, reduce, thd, bg)
    assert m.classes == tuple(classes.split(";"))


@pytest.mark.parametrize("name", sorted(NATURAL))
def test_natural_image_settings(name):
    k, n, reduce = NATURAL[name]
    m = load_manifest(name)
    assert (m.num_classes, m.num_eval_images, m.reduce_zero_label) == (k, n, reduce)


def test_counts_and_layouts_of_converted_sets():
    assert load_manifest("isaid").num_eval_images == 11644
    assert load_manifest("potsdam").num_eval_images == 2016
    assert load_manifest("vaihingen").num_eval_images == 398
    assert load_manifest("isaid").layout.seg_suffix == "_instance_color_RGB.png"
    city = load_manifest("cityscapes").layout
    assert (city.img_suffix, city.seg_suffix, city.recursive) == ("_leftImg8bit.png", "_gtFine_labelTrainIds.png", True)
    assert load_manifest("ade20k").layout.image_folder(Path("r"), "validation") == Path("r/images/validation")
    assert load_manifest("potsdam").conversion.params["val_tiles"] == [
        "2_13",
        "2_14",
        "3_13",
        "3_14",
        "4_13",
        "4_14",
        "4_15",
        "5_13",
        "5_14",
        "5_15",
        "6_13",
        "6_14",
        "6_15",
        "7_13",
    ]
    assert len(load_manifest("vaihingen").conversion.params["val_tiles"]) == 17


def test_voc20_synonyms_keep_spaces_after_commas():
    person = load_manifest("pascal_voc20").classes[14]
    assert person.split(",")[:2] == ["person", " person in shirt"]
    assert load_manifest("pascal_voc20").class_names[14] == "person"


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid names: ade20k, cityscapes"):
        load_manifest("potsdamm")
    assert load_manifest(" Potsdam ").name == "potsdam"  # case and spaces tolerated


def test_manifest_sha256_is_the_file_digest():
    import hashlib

    digest = manifest_sha256("potsdam")
    assert digest == hashlib.sha256((MANIFEST_DIR / "potsdam.yaml").read_bytes()).hexdigest()
    assert len(digest) == 64


def test_invalid_manifests_are_rejected(tmp_path):
    data = yaml.safe_load((MANIFEST_DIR / "loveda.yaml").read_text())
    path = tmp_path / "loveda.yaml"
    bad_cases = [
        ("bg_idx", 7, "bg_idx"),
        ("ignore_index", 0, "ignore_index"),
        ("num_eval_images", -3, "num_eval_images"),
        ("classes", ["a", "a"], "duplicates"),
        ("prob_thd", 2.0, "prob_thd"),
        ("name", "other", "'name'"),
    ]
    for key, value, match in bad_cases:
        broken = dict(data, **{key: value})
        with pytest.raises(ConfigError, match=match):
            _parse(broken, path)
    with pytest.raises(ConfigError, match="missing keys"):
        _parse({k: v for k, v in data.items() if k != "layout"}, path)
    with pytest.raises(ConfigError, match="unknown keys"):
        _parse(dict(data, extra=1), path)
    assert _parse(data, path).num_classes == 7
