"""``alignclip segment`` on many images: files, folders and globs into --out-dir, skips, failures, read-ahead."""

import threading

import numpy as np
import pytest
from PIL import Image

from alignclip.cli.main import main
from alignclip.cli.segment_many import Job, collect_inputs, plan_jobs, run_jobs
from alignclip.errors import InputError

SMOKE = ["--classes", "road", "tree", "--smoke", "--set", "long_side=224"]


def _png(path, seed=0, size=(64, 96)):
    Image.fromarray((np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        _png(d / f"tile_{i}.png", seed=i)
    (d / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    return d


def test_folder_into_out_dir_then_skipped_then_forced(tmp_path, folder, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["segment", str(folder), "--out-dir", str(out), "--overlays", *SMOKE]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"tile_{i}{s}" for i in range(3) for s in (".png", "_overlay.png")]
    mask = np.asarray(Image.open(out / "tile_0.png"))
    assert mask.shape == (64, 96) and mask.max() <= 1
    assert "segmented 3, skipped 0, failed 0" in capsys.readouterr().out
    before = (out / "tile_0.png").stat().st_mtime_ns
    assert main(["segment", str(folder), "--out-dir", str(out), "--overlays", *SMOKE]) == 0
    assert "segmented 0, skipped 3" in capsys.readouterr().out and (out / "tile_0.png").stat().st_mtime_ns == before
    assert main(["segment", str(folder), "--out-dir", str(out), "--overlays", "--force", *SMOKE]) == 0
    assert "segmented 3, skipped 0" in capsys.readouterr().out


def test_a_failing_image_is_reported_and_the_others_go_on(tmp_path, folder, capsys):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _png(folder / "thin.png", size=(4, 300))  # too thin for the windows
    out = tmp_path / "out"
    out.mkdir()
    assert main(["segment", str(folder), "--out-dir", str(out), *SMOKE]) == 1
    captured = capsys.readouterr()
    assert "segmented 3, skipped 0, failed 2" in captured.out
    assert "failed: " in captured.err and "broken.png" in captured.err and "thin.png" in captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["tile_0.png", "tile_1.png", "tile_2.png"]


def test_files_and_globs_in_order_each_once(tmp_path, folder):
    found = collect_inputs([str(folder / "tile_2.png"), str(folder / "tile_*.png"), str(folder)])
    assert [p.name for p in found] == ["tile_2.png", "tile_0.png", "tile_1.png"]


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d: [str(d / "missing.png")], "does not exist"),
        (lambda d: [str(d / "nothing_*.png")], "no file matches"),
        (lambda d: [str((d / "empty").mkdir() or d / "empty")], "holds no image"),
    ],
)
def test_bad_inputs_one_line(tmp_path, folder, make, needle):
    with pytest.raises(InputError, match=needle):
        collect_inputs(make(tmp_path))


def test_bad_outputs_before_any_model(tmp_path, folder, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _png(a / "x.png"), _png(b / "x.tif.png"), _png(b / "x.png", seed=3)
    with pytest.raises(InputError, match="would both write"):
        plan_jobs(collect_inputs([str(a), str(b)]), str(tmp_path), overlays=False)
    with pytest.raises(InputError, match="not a folder"):
        plan_jobs(collect_inputs([str(a)]), str(tmp_path / "nowhere"), overlays=False)
    assert main(["segment", str(a / "x.png"), str(b / "x.png"), *SMOKE]) == 2
    assert "need --out-dir" in capsys.readouterr().err
    assert main(["segment", str(folder), "--out-dir", str(tmp_path), "--out", "m.png", *SMOKE]) == 2
    assert "--out and --overlay name one file" in capsys.readouterr().err
    assert main(["segment", str(a / "x.png"), "--overlays", *SMOKE]) == 2
    assert "--overlays goes with --out-dir" in capsys.readouterr().err


def test_tiff_input_gives_a_georeferenced_tiff_mask(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    d = tmp_path / "in"
    d.mkdir()
    data = (np.random.default_rng(1).random((3, 64, 80)) * 255).astype(np.uint8)
    profile = dict(driver="GTiff", width=80, height=64, count=3, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(d / "tile.tif", "w", transform=from_origin(500000, 4600000, 0.5, 0.5), **profile) as ds:
        ds.write(data)
    _png(d / "photo.png")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["segment", str(d), "--out-dir", str(out), *SMOKE]) == 0
    with rasterio.open(out / "tile.tif") as ds:
        assert ds.count == 1 and ds.crs.to_epsg() == 32633 and ds.transform.c == 500000
    assert (out / "photo.png").is_file()


def test_next_image_is_read_in_a_background_thread(tmp_path):
    jobs = [Job(tmp_path / f"{i}.png", tmp_path / f"{i}_mask.png") for i in range(4)]
    readers, written = [], []

    def read(path):
        readers.append(threading.current_thread().name)
        return np.zeros((8, 8, 3), np.uint8), {}

    summary = run_jobs(
        jobs,
        segment=lambda image: np.zeros(image.shape[:2], np.uint8),
        read=read,
        write_mask=lambda job, labels, meta: written.append(job.mask.name),
    )
    assert summary.done == 4 and not summary.failed
    assert written == ["0_mask.png", "1_mask.png", "2_mask.png", "3_mask.png"]  # in order
    assert all(name.startswith("read-ahead") for name in readers)
