"""Bad inputs to the data layer: nothing lost, nothing silently wrong (one-line errors, old data kept)."""

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignclip.cli.main import main
from alignclip.data import (
    SegmentationDataset,
    check_complete,
    dataset_fingerprint,
    full_dataset_hash,
    generate_fake_dataset,
    generate_synthetic_dataset,
    load_manifest,
    open_dataset,
    prepare_dataset,
    sample_fingerprint,
    verify_dataset,
)
from alignclip.data import prepare as prepare_module
from alignclip.data import raw as raw_module
from alignclip.data import readers as readers_module
from alignclip.data.fakes import FAKE_MARKER
from alignclip.data.labels import ISPRS_PALETTE
from alignclip.data.prepare import PROVENANCE_FILE
from alignclip.errors import DatasetError, DatasetNotFoundError, InputError

ISPRS_COLOURS = {i: c for c, i in ISPRS_PALETTE.items()}


# ---- helpers ----


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: folders as ("dir",), files as (size, sha256)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = ("dir",) if p.is_dir() else (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _save(path: Path, array: np.ndarray, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def _ids(h: int, w: int, n: int, seed: int = 0) -> np.ndarray:
    blocks = np.random.default_rng(seed).integers(0, n, (h // 40 + 1, w // 40 + 1))
    return np.kron(blocks, np.ones((40, 40), np.int64))[:h, :w].astype(np.uint8)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def _potsdam_raw(raw: Path, tiles: tuple[str, ...] = ("2_13",), side: int = 600) -> Path:
    """Fake raw Potsdam download (unzipped): one RGB tile and its eroded colour label per tile."""
    lut = np.zeros((256, 3), np.uint8)
    for i, c in ISPRS_COLOURS.items():
        lut[i] = c
    for k, tile in enumerate(tiles):
        _save(raw / f"top_potsdam_{tile}_RGB.tif", _image(side, side, k), "TIFF")
        _save(raw / f"top_potsdam_{tile}_label_noBoundary.tif", lut[_ids(side, side, 7, k)], "TIFF")
    return raw


def _converted(root: Path, ids: list[str], n_classes: int = 7) -> Path:
    """A converted ISPRS-layout split with the given image ids (32 x 32 crops, raw ids 0..n_classes-1)."""
    for k, image_id in enumerate(ids):
        _save(root / "img_dir" / "val" / f"{image_id}.png", _image(32, 32, k))
        _save(root / "ann_dir" / "val" / f"{image_id}.png", _ids(32, 32, n_classes, k))
    return root


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture
def prepared(tmp_path) -> tuple[Path, Path]:
    """A working converted Potsdam (4 crops of one tile) in tmp_path/data/potsdam, and its raw folder."""
    raw = _potsdam_raw(tmp_path / "raw")
    out = tmp_path / "data" / "potsdam"
    assert prepare_dataset("potsdam", raw, out).num_images == 4
    return out, raw


# ---- 1. prepare --force replaces only after a complete, verified conversion ----


def test_wrong_raw_with_force_keeps_the_old_dataset(prepared, tmp_path):
    out, _ = prepared
    (tmp_path / "wrong").mkdir()
    before = _snapshot(out.parent)
    with pytest.raises(DatasetNotFoundError) as err:
        prepare_dataset("potsdam", tmp_path / "wrong", out, force=True)
    assert "no ISPRS Potsdam validation tiles" in _one_line(err)
    assert _snapshot(out.parent) == before  # old data intact, no scratch folder left
    with pytest.raises(DatasetNotFoundError):
        prepare_dataset("potsdam", tmp_path / "missing", out, force=True)
    assert _snapshot(out.parent) == before
    assert len(open_dataset("potsdam", out)) == 4


def test_converter_failures_keep_the_old_dataset(prepared, monkeypatch):
    out, raw = prepared
    before = _snapshot(out.parent)

    def crashes(manifest, raw, img_dir, ann_dir, tmp, skip):
        _save(img_dir / "2_13_0_0_512_512.png", _image(8, 8))  # half-written output
        raise RuntimeError("converter bug")

    monkeypatch.setitem(prepare_module.CONVERTERS, "isprs", crashes)
    with pytest.raises(RuntimeError, match="converter bug"):
        prepare_dataset("potsdam", raw, out, force=True)
    assert _snapshot(out.parent) == before

    def disk_full(manifest, raw, img_dir, ann_dir, tmp, skip):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(prepare_module.CONVERTERS, "isprs", disk_full)
    with pytest.raises(DatasetError) as err:
        prepare_dataset("potsdam", raw, out, force=True)
    assert "No space left" in _one_line(err) and f"{out} is unchanged" in str(err.value)
    assert _snapshot(out.parent) == before


def test_verification_problems_keep_the_old_dataset(prepared, monkeypatch):
    out, raw = prepared
    before = _snapshot(out.parent)

    def bad_labels(manifest, raw, img_dir, ann_dir, tmp, skip):
        label = _ids(32, 32, 7)
        label[0, 0] = 9  # not a Potsdam id
        _save(img_dir / "2_13_0_0_512_512.png", _image(32, 32))
        _save(ann_dir / "2_13_0_0_512_512.png", label)
        return 1, []

    monkeypatch.setitem(prepare_module.CONVERTERS, "isprs", bad_labels)
    with pytest.raises(DatasetError) as err:
        prepare_dataset("potsdam", raw, out, force=True)
    msg = _one_line(err)
    assert "failed verification" in msg and "2_13_0_0_512_512.png" in msg and "outside the 6 classes" in msg
    assert _snapshot(out.parent) == before


def test_a_failed_swap_is_undone(prepared, tmp_path, monkeypatch):
    out, _ = prepared
    raw2 = _potsdam_raw(tmp_path / "raw2", ("2_13", "2_14"))
    before = _snapshot(out.parent)
    real_replace, calls = os.replace, []

    def flaky(src, dst):
        calls.append(src)
        if len(calls) == 3:  # after the old image folder went aside and the new one came in
            raise OSError(18, "Invalid cross-device link")
        real_replace(src, dst)

    real_swap = raw_module.swap_in

    def swap(staging, out_, rels):
        monkeypatch.setattr(raw_module.os, "replace", flaky)
        try:
            real_swap(staging, out_, rels)
        finally:
            monkeypatch.setattr(raw_module.os, "replace", real_replace)

    monkeypatch.setattr(prepare_module, "swap_in", swap)
    with pytest.raises(DatasetError) as err:
        prepare_dataset("potsdam", raw2, out, force=True)
    assert "cross-device" in _one_line(err) and f"{out} is unchanged" in str(err.value)
    assert _snapshot(out.parent) == before


def test_good_force_run_replaces_the_split_only(prepared, tmp_path):
    out, _ = prepared
    (out / "img_dir" / "val" / "stray.png").write_bytes(b"old junk")
    (out / "README.txt").write_text("my notes\n")
    (out / FAKE_MARKER).write_text(json.dumps({"name": "potsdam", "files": []}))  # stale marker
    raw2 = _potsdam_raw(tmp_path / "raw2", ("2_13", "2_14"))
    result = prepare_dataset("potsdam", raw2, out, force=True)
    assert result.num_images == 8 and result.root == out
    names = sorted(p.name for p in (out / "img_dir" / "val").iterdir())
    assert len(names) == 8 and "stray.png" not in names
    assert (out / "README.txt").read_text() == "my notes\n"  # not part of the split: kept
    assert not (out / FAKE_MARKER).exists()  # real data now: the fake marker went with the old split
    assert json.loads((out / PROVENANCE_FILE).read_text())["num_images"] == 8
    assert sorted(p.name for p in out.parent.iterdir()) == ["potsdam"]  # no scratch or old folders left
    assert verify_dataset("potsdam", out, expected_count=8) == []
    assert not open_dataset("potsdam", out).is_fake


def test_synthetic_force_replaces_and_no_force_refuses_before_work(tmp_path, monkeypatch):
    out = tmp_path / "data" / "synthetic"
    prepare_dataset("synthetic", None, out)
    fresh = _snapshot(out)
    label = out / "ann_dir" / "val" / "synthetic_0000.png"
    Image.fromarray(np.zeros((256, 256), np.uint8), mode="L").save(label)  # user edit
    edited = _snapshot(out.parent)

    def no_work(*args, **kwargs):
        raise AssertionError("generated data before checking --force")

    with monkeypatch.context() as m:
        m.setattr(prepare_module, "generate_synthetic_dataset", no_work)
        with pytest.raises(DatasetError) as err:
            prepare_dataset("synthetic", None, out)
    assert "--force" in _one_line(err) and "already holds 8 entries" in str(err.value)
    assert _snapshot(out.parent) == edited
    prepare_dataset("synthetic", None, out, force=True)
    assert _snapshot(out) == fresh  # replaced by the same deterministic bytes


def test_raw_inside_the_replaced_split_is_refused(prepared):
    out, _ = prepared
    inner = _potsdam_raw(out / "img_dir" / "val" / "downloads")
    before = _snapshot(out.parent)
    with pytest.raises(DatasetError) as err:
        prepare_dataset("potsdam", inner, out, force=True)
    assert "which prepare replaces" in _one_line(err)
    assert _snapshot(out.parent) == before


def test_out_inside_raw_is_skipped_while_scanning(tmp_path):
    raw = _potsdam_raw(tmp_path / "raw")
    out = raw / "converted"
    assert prepare_dataset("potsdam", raw, out).num_images == 4
    assert prepare_dataset("potsdam", raw, out, force=True).num_images == 4  # old crops are not raw files
    assert sorted(p.name for p in raw.iterdir() if p.is_dir()) == ["converted"]


# ---- the CLI: exit code 2, one line on stderr, nothing changed on disk ----


@pytest.mark.parametrize("case", ["wrong raw", "missing raw", "no force"])
def test_cli_prepare_failures_change_nothing(prepared, tmp_path, capsys, case):
    out, raw = prepared
    (tmp_path / "wrong").mkdir()
    args = {
        "wrong raw": ["--raw", str(tmp_path / "wrong"), "--force"],
        "missing raw": ["--raw", str(tmp_path / "missing"), "--force"],
        "no force": ["--raw", str(raw)],
    }[case]
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(["data", "prepare", "potsdam", "--out", str(out), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert captured.out == ""
    assert _snapshot(tmp_path) == before


# ---- 2. fingerprints ----


def test_sample_fingerprint_sees_size_time_and_edges(tmp_path):
    image = tmp_path / "a.png"
    label = tmp_path / "a_label.png"
    image.write_bytes(bytes(range(256)) * 1024)  # 256 KiB: first and last 64 KiB hashed
    label.write_bytes(b"label")
    fp = sample_fingerprint(image, label)
    assert len(fp) == 16 and int(fp, 16) >= 0 and sample_fingerprint(image, label) == fp
    st = image.stat()
    data = bytearray(image.read_bytes())
    data[-1] ^= 1  # same size, same mtime, last byte changed
    image.write_bytes(bytes(data))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sample_fingerprint(image, label) != fp
    data[-1] ^= 1
    image.write_bytes(bytes(data))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sample_fingerprint(image, label) == fp
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # touched
    assert sample_fingerprint(image, label) != fp
    assert sample_fingerprint(label, image) != sample_fingerprint(image, label)
    with pytest.raises(DatasetNotFoundError) as err:
        sample_fingerprint(tmp_path / "gone.png", label)
    assert "gone.png" in _one_line(err)


def test_dataset_fingerprint_reads_no_pixels(tmp_path, monkeypatch):
    root = generate_fake_dataset("potsdam", tmp_path / "p", n_images=4, size=64)
    data = open_dataset("potsdam", root)
    fp_all = dataset_fingerprint(data)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image")

    monkeypatch.setattr(readers_module, "read_image", no_decoding)
    monkeypatch.setattr(readers_module, "read_label", no_decoding)
    assert len(fp_all) == 16 and dataset_fingerprint(data) == fp_all
    assert dataset_fingerprint(data, range(4)) == fp_all
    assert dataset_fingerprint(data, [0, 1]) not in (fp_all, dataset_fingerprint(data, [1, 0]))
    assert dataset_fingerprint(open_dataset("potsdam", root), [0, 1]) == dataset_fingerprint(data, [0, 1])
    label = data.paths(3)[1]
    label.write_bytes(label.read_bytes() + b"\0")
    assert dataset_fingerprint(data) != fp_all
    assert dataset_fingerprint(data, [0, 1]) == dataset_fingerprint(open_dataset("potsdam", root), [0, 1])


def test_full_dataset_hash_covers_every_byte(tmp_path):
    root = generate_synthetic_dataset(tmp_path / "syn", n_images=3, size=64)
    full = full_dataset_hash("synthetic", root)
    assert len(full) == 64 and full_dataset_hash("synthetic", root, split="val") == full
    assert full_dataset_hash("synthetic", generate_synthetic_dataset(tmp_path / "copy", n_images=3, size=64)) == full
    image = root / "img_dir" / "val" / "synthetic_0001.png"
    st, data = image.stat(), bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a middle byte: invisible to the cheap fingerprint, not to this
    image.write_bytes(bytes(data))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert full_dataset_hash("synthetic", root) != full
    with pytest.raises(DatasetNotFoundError) as err:
        full_dataset_hash("synthetic", tmp_path / "nowhere")
    assert "nowhere" in _one_line(err)


# ---- 3. completeness and identity ----


POTSDAM_IDS = ["2_13_0_0_512_512", "2_13_512_0_1024_512", "2_13_0_512_512_1024"]


def test_check_complete_on_a_partial_split(tmp_path):
    data = open_dataset("potsdam", _converted(tmp_path / "potsdam", POTSDAM_IDS))
    with pytest.raises(DatasetError) as err:
        check_complete(data, None, False)
    msg = _one_line(err)
    assert f"found 3 of 2016 images of potsdam under {tmp_path / 'potsdam'}" in msg and "--allow-partial" in msg
    assert "first 2" in check_complete(data, 2, False)
    assert "first 3" in check_complete(data, 3, False)
    with pytest.raises(DatasetError, match="found 3 of 2016"):
        check_complete(data, 5, False)  # asks for more than there are
    warning = check_complete(data, None, True)
    assert "3 of 2016" in warning and "\n" not in warning
    with pytest.raises(InputError, match="--limit"):
        check_complete(data, 0, True)


def test_check_complete_unknown_more_and_generated(tmp_path):
    oem = generate_fake_dataset("openearthmap", tmp_path / "oem", n_images=1, size=64)
    assert check_complete(open_dataset("openearthmap", oem), None, False) is None  # count unknown
    root = _converted(tmp_path / "potsdam", POTSDAM_IDS)
    data = SegmentationDataset(replace(load_manifest("potsdam"), num_eval_images=2), root)
    warning = check_complete(data, None, False)
    assert "found 3 images" in warning and "expects 2" in warning and "\n" not in warning
    exact = SegmentationDataset(replace(load_manifest("potsdam"), num_eval_images=3), root)
    assert check_complete(exact, None, False) is None
    assert check_complete(open_dataset("potsdam", root, split="val"), 2, False) is not None
    # generated data of any size: no count to compare with
    syn = generate_synthetic_dataset(tmp_path / "syn", n_images=2, size=64)
    assert check_complete(open_dataset("synthetic", syn), None, False) is None
    fake = open_dataset("potsdam", generate_fake_dataset("potsdam", tmp_path / "fake", n_images=2, size=64))
    assert fake.is_fake and check_complete(fake, None, False) is None


def test_fake_data_of_another_dataset_is_refused(tmp_path):
    root = generate_fake_dataset("potsdam", tmp_path / "fake_potsdam", n_images=2, size=64)
    with pytest.raises(DatasetError) as err:
        open_dataset("vaihingen", root)
    msg = _one_line(err)
    assert "FAKE potsdam" in msg and "not vaihingen" in msg
    assert any("FAKE potsdam" in p for p in verify_dataset("vaihingen", root, expected_count=2))
    (root / FAKE_MARKER).write_text("{not json")
    with pytest.raises(DatasetError) as err:
        open_dataset("potsdam", root)
    assert FAKE_MARKER in _one_line(err)


def test_potsdam_crops_opened_as_vaihingen_and_back(tmp_path):
    potsdam = _converted(tmp_path / "potsdam", POTSDAM_IDS)
    with pytest.raises(DatasetError) as err:
        open_dataset("vaihingen", potsdam)
    msg = _one_line(err)
    assert "naming of potsdam" in msg and "not of vaihingen" in msg
    assert len(open_dataset("potsdam", potsdam)) == 3
    vaihingen = _converted(tmp_path / "vaihingen", ["area2_0_0_512_512", "area2_188_0_700_512"])
    with pytest.raises(DatasetError, match="naming of vaihingen"):
        open_dataset("potsdam", vaihingen)
    other = _converted(tmp_path / "custom", ["t0", "t1"])  # neither naming: nothing to tell
    assert len(open_dataset("potsdam", other)) == 2


# ---- 4. label values name the file ----


def test_out_of_range_label_names_its_file(tmp_path):
    root = _converted(tmp_path / "potsdam", POTSDAM_IDS)
    bad = root / "ann_dir" / "val" / f"{POTSDAM_IDS[1]}.png"
    label = _ids(32, 32, 7)
    label[3, 4] = 9  # raw 9 -> 8 after reduce_zero_label: no Potsdam class
    _save(bad, label)
    data = open_dataset("potsdam", root)
    k = data.image_ids.index(POTSDAM_IDS[1])
    assert data[k - 1].label_path == data.paths(k - 1)[1]
    for read in (lambda: data[k], lambda: data.label(k)):
        with pytest.raises(DatasetError) as err:
            read()
        msg = _one_line(err)
        assert str(bad) in msg and "label values 8" in msg and "alignclip data verify potsdam" in msg


def test_force_through_a_symlinked_out_stages_beside_its_target(prepared, tmp_path):
    out, raw = prepared
    link = tmp_path / "link"
    link.symlink_to(out, target_is_directory=True)
    assert prepare_dataset("potsdam", raw, link, force=True).num_images == 4
    assert link.is_symlink() and len(open_dataset("potsdam", link)) == 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["potsdam"]
