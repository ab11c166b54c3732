"""`alignclip segment` end to end on the tiny model, and its one-line errors."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alignclip.cli.main import main

SMOKE = ["--smoke", "--set", "long_side=224"]


@pytest.fixture
def image_png(tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((120, 200, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_segment_writes_mask_and_overlay(tmp_path, image_png, capsys):
    mask, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    rc = main(
        [
            "segment",
            str(image_png),
            "--classes",
            "background",
            "building,roof",
            "road",
            "--out",
            str(mask),
            "--overlay",
            str(overlay),
            *SMOKE,
        ]
    )
    assert rc == 0
    m = Image.open(mask)
    assert m.mode == "L" and m.size == (200, 120)
    assert np.asarray(m).max() <= 2
    assert Image.open(overlay).size[1] >= 120
    assert "PIPELINE CHECK" in capsys.readouterr().err
    # refuses to overwrite without --force
    assert main(["segment", str(image_png), "--classes", "a", "b", "--out", str(mask), *SMOKE]) == 2
    assert main(["segment", str(image_png), "--classes", "a", "b", "--out", str(mask), "--force", *SMOKE]) == 0


def test_classes_file_and_set(tmp_path, image_png, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("# my classes\nwater,river\nroad\n\ngrass\n")
    rc = main(
        [
            "segment",
            str(image_png),
            "--classes-file",
            str(classes),
            "--set",
            "alpha=0.5",
            "--set",
            "prob_thd=0.0",
            *SMOKE,
        ]
    )
    assert rc == 0
    assert "pixels_per_class" in capsys.readouterr().out


def test_geotiff_mask_keeps_georeferencing(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    src = tmp_path / "tile.tif"
    data = (np.random.default_rng(1).random((3, 64, 80)) * 255).astype(np.uint8)
    with rasterio.open(
        src,
        "w",
        driver="GTiff",
        width=80,
        height=64,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500000, 4600000, 0.5, 0.5),
    ) as ds:
        ds.write(data)
    out = tmp_path / "mask.tif"
    assert main(["segment", str(src), "--classes", "a", "b", "--out", str(out), *SMOKE]) == 0
    with rasterio.open(out) as ds:
        assert ds.count == 1 and ds.crs.to_epsg() == 32633 and ds.transform.c == 500000
        assert (ds.height, ds.width) == (64, 80)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--preset", "nope"], "unknown preset"),
        (["--backbone", "ViT-Nope"], "unknown CLIP backbone"),
        (["--set", "alpha=1.5"], "alpha"),
        (["--set", "beta=-1"], "beta"),
        (["--set", "n_clusters=10000"], "K_c"),
        (["--set", "bogus=1"], "unknown config field"),
    ],
)
def test_bad_model_flags_one_line(image_png, capsys, args, needle):
    rc = main(["segment", str(image_png), "--classes", "a", "b", *SMOKE, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len([ln for ln in err if ln.startswith("error:")]) == 1 and needle in err[-1]


@pytest.mark.parametrize("classes,needle", [(["a", ""], "empty"), (["road", "road"], "duplicate")])
def test_bad_classes(image_png, capsys, classes, needle):
    assert main(["segment", str(image_png), "--classes", *classes, *SMOKE]) == 2
    assert needle in capsys.readouterr().err


def test_unreadable_image(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    assert main(["segment", str(bad), "--classes", "a", "b", *SMOKE]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "missing.png"), "--classes", "a", "b", *SMOKE]) == 2


@pytest.mark.parametrize("kind", ["gray", "rgba", "uint16"])
def test_grayscale_rgba_16bit_handled(tmp_path, kind):
    rng = np.random.default_rng(2)
    path = tmp_path / f"{kind}.png"
    if kind == "gray":
        Image.fromarray((rng.random((50, 70)) * 255).astype(np.uint8), "L").save(path)
    elif kind == "rgba":
        Image.fromarray((rng.random((50, 70, 4)) * 255).astype(np.uint8), "RGBA").save(path)
    else:
        Image.fromarray((rng.random((50, 70)) * 65535).astype(np.uint16)).save(path)
    out = tmp_path / f"{kind}_mask.png"
    with pytest.warns(UserWarning):
        assert main(["segment", str(path), "--classes", "a", "b", "--out", str(out), *SMOKE]) == 0
    assert Image.open(out).size == (70, 50)


def test_multiband_refused_then_bands_accepted(tmp_path, capsys):
    rasterio = pytest.importorskip("rasterio")
    path = tmp_path / "ms.tif"
    with rasterio.open(path, "w", driver="GTiff", width=40, height=30, count=5, dtype="uint8") as ds:
        ds.write((np.random.default_rng(3).random((5, 30, 40)) * 255).astype(np.uint8))
    assert main(["segment", str(path), "--classes", "a", "b", *SMOKE]) == 2
    assert "--bands" in capsys.readouterr().err
    assert main(["segment", str(path), "--classes", "a", "b", "--bands", "3", "2", "1", *SMOKE]) == 0


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "alignclip.cli.main", "segment", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--classes-file" in out and "--upsampler-ckpt" in out and "--set" in out


def test_model_config_json_plus_local_state_dict(tmp_path, image_png):
    import json

    import torch

    from alignclip.models.clip import CONFIG_DIR, create_clip

    cfg = tmp_path / "my-tiny-clip.json"
    cfg.write_text((CONFIG_DIR / "tiny.json").read_text())
    weights = tmp_path / "state.pt"
    torch.save(create_clip("tiny", "none").model.state_dict(), weights)
    out = tmp_path / "mask.png"
    rc = main(
        [
            "segment",
            str(image_png),
            "--classes",
            "a",
            "b",
            "--backbone",
            str(cfg),
            "--pretrained",
            str(weights),
            "--preset",
            "segearth-ov",
            "--upsampler-ckpt",
            "none",
            "--set",
            "long_side=224",
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and Image.open(out).size == (200, 120)
    assert json.loads(cfg.read_text())["embed_dim"] == 32


def test_build_segmentor_one_call():
    from alignclip.pipeline.segmentor import build_segmentor

    seg = build_segmentor("alignclip-d", dataset="potsdam", smoke=True, long_side=224)
    assert seg.classes.num_classes == 6 and seg.config.alpha == 0.3 and seg.config.bg_idx == 5
    seg = build_segmentor("segearth-ov", classes=["road", "tree,forest"], smoke=True, prob_thd=0.2)
    assert seg.classes.queries == ("road", "tree", "forest") and seg.config.prob_thd == 0.2


def test_vfm_resolution_flag():
    from alignclip.cli.args import config_from_args
    from alignclip.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["segment", "x.png", "--classes", "a", "b", "--preset", "alignclip-s", "--smoke", "--vfm-resolution", "native"]
    )
    config = config_from_args(args)
    assert config.vfm == "tiny_sam" and config.vfm_resolution == "native"
    assert config_from_args(parser.parse_args(["segment", "x.png", "--classes", "a"])).vfm_resolution == "window"
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "x.png", "--classes", "a", "--vfm-resolution", "1024"])
