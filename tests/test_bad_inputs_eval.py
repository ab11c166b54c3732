"""`alignclip evaluate` / `stats` on bad inputs: one-line refusals that change nothing on disk, and no work lost.

Every case goes through the CLI (``main([...])``) with the tiny random models on generated data; a refusal must exit
2 with one ``error:`` line and leave the tree (sizes and hashes of every file, and every folder) as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignclip.cli.main import main
from alignclip.data import dataset_fingerprint, generate_fake_dataset, generate_synthetic_dataset, open_dataset
from alignclip.data.fakes import FAKE_MARKER
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.evaluation.evaluate import cached_result, evaluate, run_fingerprint
from alignclip.pipeline.config import build_config
from alignclip.pipeline.segmentor import Segmentor

N = 8  # the synthetic manifest's num_eval_images: complete data, so no warning line on stderr
SIZE = 64
MODEL = ["--smoke", "--set", "long_side=64", "--no-progress"]


def evaluate_args(
    root: Path, out: Path, *extra: str, preset: str = "segearth-ov", dataset: str = "synthetic"
) -> list[str]:
    cmd = ["evaluate", "--dataset", dataset, "--data-root", str(root), "--out", str(out), "--preset", preset]
    return cmd + MODEL + list(extra)


def snapshot(top: Path) -> dict[str, tuple[int, str]]:
    """Every file (size, sha256) and folder under ``top``."""
    out = {}
    for p in sorted(top.rglob("*")):
        rel = p.relative_to(top).as_posix()
        out[rel] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) if p.is_file() else (-1, "dir")
    return out


def refused(argv: list[str], capsys, top: Path, *needles: str) -> str:
    """Run ``main(argv)``: exit 2, one ``error:`` line holding every needle, nothing changed under ``top``."""
    before = snapshot(top)
    rc = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert snapshot(top) == before
    return lines[0]


@pytest.fixture
def data(tmp_path) -> Path:
    return generate_synthetic_dataset(tmp_path / "data", n_images=N, size=SIZE, seed=1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted run on the same (identical bytes) data."""
    tmp = tmp_path_factory.mktemp("ref")
    root = generate_synthetic_dataset(tmp / "data", n_images=N, size=SIZE, seed=1)
    assert main(evaluate_args(root, tmp / "ref.json")) == 0
    return json.loads((tmp / "ref.json").read_text())


def interrupt_at(monkeypatch, call: int, how: str = "raise") -> dict:
    """Make the ``call``-th ``Segmentor.segment`` stop the run: KeyboardInterrupt, or a real SIGINT/SIGTERM."""
    calls = {"n": 0}
    original = Segmentor.segment

    def segment(self, image, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            if how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT if how == "SIGINT" else signal.SIGTERM)
            time.sleep(5)  # the signal arrives before this ends
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(Segmentor, "segment", segment)
    return calls


def saved_images(partial: Path) -> int:
    return len(ConfusionAccumulator.load_npz(partial / "rank0.npz"))


# ---------------------------------------------------------------- 1. --save-predictions never overwrites silently
def test_predictions_into_the_dataset_are_refused_even_with_force(data, tmp_path, capsys):
    labels = data / "ann_dir" / "val"
    for extra in ([], ["--force"]):
        refused(
            evaluate_args(data, tmp_path / "r.json", "--save-predictions", str(labels), *extra),
            capsys,
            tmp_path,
            "inside the dataset root",
        )
    refused(evaluate_args(data, tmp_path / "r.json", "--save-predictions", str(data)), capsys, tmp_path, "dataset")


def test_predictions_folder_with_files_to_overwrite_is_refused(data, tmp_path, capsys):
    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "synthetic_0003.png").write_bytes(b"someone else's mask")
    (preds / "notes.txt").write_text("kept")
    refused(
        evaluate_args(data, tmp_path / "r.json", "--save-predictions", str(preds)),
        capsys,
        tmp_path,
        "synthetic_0003.png",
        "--force",
    )
    assert main(evaluate_args(data, tmp_path / "r.json", "--save-predictions", str(preds), "--force")) == 0
    capsys.readouterr()
    assert len(list(preds.glob("synthetic_*.png"))) == N and (preds / "notes.txt").read_text() == "kept"
    assert np.asarray(Image.open(preds / "synthetic_0003.png")).ndim == 2  # replaced by the run's mask


def test_predictions_folder_of_another_run_is_refused_and_own_is_reused(data, tmp_path, capsys):
    preds = tmp_path / "preds"
    assert main(evaluate_args(data, tmp_path / "a.json", "--save-predictions", str(preds))) == 0
    capsys.readouterr()
    masks = {name: v for name, v in snapshot(preds).items() if name.endswith(".png")}
    assert len(masks) == N
    # the same configuration again (other --out): its own masks, rewritten with the same bytes
    assert main(evaluate_args(data, tmp_path / "b.json", "--save-predictions", str(preds))) == 0
    capsys.readouterr()
    assert {name: v for name, v in snapshot(preds).items() if name.endswith(".png")} == masks
    refused(
        evaluate_args(data, tmp_path / "c.json", "--save-predictions", str(preds), preset="segearth-ov+sga"),
        capsys,
        tmp_path,
        "another run",
        "--force",
    )


def test_resume_rewrites_only_its_own_predictions(data, tmp_path, capsys, monkeypatch, reference):
    preds = tmp_path / "preds"
    argv = evaluate_args(data, tmp_path / "r.json", "--save-predictions", str(preds))
    interrupt_at(monkeypatch, 4)
    assert main(argv) == 130
    capsys.readouterr()
    monkeypatch.undo()
    assert main(argv) == 0
    capsys.readouterr()
    assert len(list(preds.glob("*.png"))) == N
    assert json.loads((tmp_path / "r.json").read_text())["confusion_matrix"] == reference["confusion_matrix"]


# ---------------------------------------------------------------- 2. one evaluation at a time per --out
def _write_lock(partial: Path, **owner) -> Path:
    partial.mkdir(parents=True, exist_ok=True)
    lock = partial / "lock.json"
    lock.write_text(json.dumps(dict({"job": "another", "started": "2024-01-01T00:00:00+00:00"}, **owner)))
    return lock


def test_second_evaluation_on_the_same_out_is_refused(data, tmp_path, capsys, monkeypatch, reference):
    out = tmp_path / "r.json"
    nested = {}
    original = Segmentor.segment

    def segment(self, image, *args, **kwargs):
        if not nested:  # while the first evaluation runs, a second one on the same --out
            before = snapshot(tmp_path)
            nested["rc"] = main(evaluate_args(data, out, "--force"))
            nested["err"] = capsys.readouterr().err
            nested["unchanged"] = snapshot(tmp_path) == before
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(Segmentor, "segment", segment)
    assert main(evaluate_args(data, out)) == 0
    assert nested["rc"] == 2 and nested["unchanged"]
    line = nested["err"].strip()
    assert "\n" not in line and "in use by another evaluation" in line and f"pid {os.getpid()}" in line
    assert json.loads(out.read_text())["confusion_matrix"] == reference["confusion_matrix"]
    assert not (tmp_path / "r.json.partial").exists()


def test_live_lock_is_refused_naming_its_owner(data, tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path / "r.json.partial", pid=sleeper.pid, host=socket.gethostname())
        refused(evaluate_args(data, tmp_path / "r.json"), capsys, tmp_path, f"pid {sleeper.pid}", "lock.json")
        refused(evaluate_args(data, tmp_path / "r.json", "--force"), capsys, tmp_path, "in use")
        # another host's lock refreshed recently: its owner may run
        _write_lock(tmp_path / "r.json.partial", pid=1, host="elsewhere.example")
        refused(evaluate_args(data, tmp_path / "r.json"), capsys, tmp_path, "elsewhere.example")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_locks_are_taken_over_with_a_warning(data, tmp_path, capsys, reference):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write_lock(tmp_path / "a.json.partial", pid=int(gone.stdout), host=socket.gethostname())
    assert main(evaluate_args(data, tmp_path / "a.json")) == 0
    err = capsys.readouterr().err
    assert "warning: taking over the stale lock" in err and "no longer runs" in err
    lock = _write_lock(tmp_path / "b.json.partial", pid=1, host="elsewhere.example")
    old = time.time() - 7 * 3600
    os.utime(lock, (old, old))
    assert main(evaluate_args(data, tmp_path / "b.json")) == 0
    assert "has not refreshed it" in capsys.readouterr().err
    for name in ("a.json", "b.json"):
        assert json.loads((tmp_path / name).read_text())["confusion_matrix"] == reference["confusion_matrix"]


# ---------------------------------------------------------------- 3. shards carry their fingerprint
def _partial_run(data: Path, out: Path, monkeypatch, capsys, call: int = 4, preset: str = "segearth-ov") -> Path:
    interrupt_at(monkeypatch, call)
    assert main(evaluate_args(data, out, preset=preset)) == 130
    capsys.readouterr()
    monkeypatch.undo()
    partial = out.with_name(out.name + ".partial")
    assert saved_images(partial) == call - 1 and not out.exists()
    return partial


def test_other_preset_never_adopts_a_partial_state(data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    partial = _partial_run(data, out, monkeypatch, capsys)
    argv_b = evaluate_args(data, out, preset="segearth-ov+sga")
    refused(argv_b, capsys, tmp_path, "different configuration", "--force")  # meta.json says so
    (partial / "meta.json").unlink()
    refused(argv_b, capsys, tmp_path, "rank0.npz", "fingerprint", "--force")  # meta.json missing
    cfg_b = build_config("segearth-ov+sga", dataset="synthetic", smoke=True, long_side=64)
    classes = open_dataset("synthetic", data).classes
    (partial / "meta.json").write_text(
        json.dumps({"fingerprint": run_fingerprint(cfg_b, "synthetic", None, None, classes)})
    )
    refused(argv_b, capsys, tmp_path, "rank0.npz", "fingerprint")  # meta.json rewritten for B
    (partial / "rank0.json").unlink()
    refused(argv_b, capsys, tmp_path, "rank0.npz", "no fingerprint")  # a shard without its sidecar
    assert main(argv_b + ["--force"]) == 0  # --force starts over
    capsys.readouterr()
    assert json.loads(out.read_text())["num_images"] == N


# ---------------------------------------------------------------- 4. resume checks the data
def test_resume_refuses_a_changed_image(data, tmp_path, capsys, monkeypatch, reference):
    out = tmp_path / "r.json"
    _partial_run(data, out, monkeypatch, capsys)
    label = data / "ann_dir" / "val" / "synthetic_0001.png"  # saved before the interruption
    pixels = np.asarray(Image.open(label)).copy()
    pixels[:8, :8] = (pixels[:8, :8] + 1) % 6
    Image.fromarray(pixels).save(label)
    refused(evaluate_args(data, out), capsys, tmp_path, "synthetic_0001.png", "changed", "--force")
    assert main(evaluate_args(data, out, "--force")) == 0
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["num_images"] == N and result["confusion_matrix"] != reference["confusion_matrix"]
    assert result["provenance"]["data_fingerprint"] == dataset_fingerprint(open_dataset("synthetic", data))


def test_result_records_the_data_fingerprint(reference, tmp_path):
    data_fp = reference["provenance"]["data_fingerprint"]
    assert isinstance(data_fp, str) and len(data_fp) == 16
    out = tmp_path / "r.json"
    out.write_text(json.dumps(reference))
    fingerprint = reference["provenance"]["fingerprint"]
    assert cached_result(out, fingerprint) == reference
    assert cached_result(out, fingerprint, data_fingerprint=data_fp) == reference
    assert cached_result(out, fingerprint, data_fingerprint="0123456789abcdef") is None  # other data: not reused


# ---------------------------------------------------------------- 5. complete data, sane --limit, labels named
def test_incomplete_dataset_needs_allow_partial(tmp_path, capsys):
    # 3 of LoveDA's 1669 images, not marked as fake data (generated data is never counted)
    root = generate_fake_dataset("loveda", tmp_path / "data", n_images=3, size=SIZE, seed=1)
    (root / FAKE_MARKER).unlink()
    argv = evaluate_args(root, tmp_path / "r.json", dataset="loveda")
    refused(argv, capsys, tmp_path, "3 of 1669", "--allow-partial")
    assert main(argv + ["--allow-partial"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    warnings = [line for line in err if line.startswith("warning: ")]  # besides the progress lines (loading, text)
    assert len(warnings) == 1 and "3 of 1669" in warnings[0]
    assert all(line.startswith(("warning: ", "loading ", "encoding ", "text embeddings ")) for line in err)
    assert json.loads((tmp_path / "r.json").read_text())["num_images"] == 3


@pytest.mark.parametrize("limit", ["0", "-2"])
def test_limit_below_one_is_refused_before_any_work(data, tmp_path, capsys, limit):
    refused(evaluate_args(data, tmp_path / "r.json", "--limit", limit), capsys, tmp_path, "--limit", limit)
    assert main(evaluate_args(data, tmp_path / "r.json", "--limit", "2")) == 0  # nothing blocks the rerun
    capsys.readouterr()


def test_out_of_range_label_names_its_file_and_keeps_the_work_before(data, tmp_path, capsys, monkeypatch, reference):
    folder = data / "ann_dir" / "val"
    good = {name: (folder / name).read_bytes() for name in ("synthetic_0000.png", "synthetic_0002.png")}

    def spoil(name: str) -> Path:
        pixels = np.asarray(Image.open(folder / name)).copy()
        pixels[0, 0] = 9  # 6 classes: 0..5, 255 = ignore
        Image.fromarray(pixels).save(folder / name)
        return folder / name

    out = tmp_path / "r.json"
    line = refused(evaluate_args(data, out), capsys, tmp_path, str(spoil("synthetic_0000.png")))
    assert "9" in line and not (tmp_path / "r.json.partial").exists()  # nothing was done: nothing left
    (folder / "synthetic_0000.png").write_bytes(good["synthetic_0000.png"])
    # the same error on the third image: the two before it are saved, the rerun after the fix does the rest
    bad = spoil("synthetic_0002.png")
    assert main(evaluate_args(data, out)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err
    assert saved_images(tmp_path / "r.json.partial") == 2
    bad.write_bytes(good["synthetic_0002.png"])
    calls = interrupt_at(monkeypatch, call=-1)  # counts only
    assert main(evaluate_args(data, out)) == 0
    capsys.readouterr()
    assert calls["n"] == N - 2
    assert json.loads(out.read_text())["confusion_matrix"] == reference["confusion_matrix"]


# ---------------------------------------------------------------- 6. interruptions lose (almost) nothing
@pytest.mark.parametrize(("how", "code"), [("raise", 130), ("SIGINT", 130), ("SIGTERM", 143)])
def test_interruption_saves_and_prints_the_resume_command(data, tmp_path, capsys, monkeypatch, reference, how, code):
    out = tmp_path / "r.json"
    handler = signal.getsignal(signal.SIGTERM)
    interrupt_at(monkeypatch, 4, how)
    assert main(evaluate_args(data, out, "--force")) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("interrupted") and f"3 of {N} images saved" in lines[0]
    assert (how == "SIGTERM") == ("SIGTERM" in lines[0])
    assert saved_images(tmp_path / "r.json.partial") == 3 and not out.exists()
    assert not (tmp_path / "r.json.partial" / "lock.json").exists()  # released
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[:2] == ["alignclip", "evaluate"] and "--force" not in command  # --force would start over
    monkeypatch.undo()
    calls = interrupt_at(monkeypatch, call=-1)
    assert main(command[1:]) == 0
    capsys.readouterr()
    assert calls["n"] == N - 3
    assert json.loads(out.read_text())["confusion_matrix"] == reference["confusion_matrix"]
    assert signal.getsignal(signal.SIGTERM) == handler  # the handler is put back


@pytest.mark.parametrize(("save_seconds", "seen"), [(0.0, 3), (1e9, None)])
def test_progress_is_saved_every_few_seconds(data, tmp_path, save_seconds, seen):
    """Besides every ``save_every`` images, at least every ``save_seconds``: the shard is on disk mid-run."""
    cfg = build_config("segearth-ov", dataset="synthetic", smoke=True, long_side=64)
    seg = Segmentor(cfg, list(open_dataset("synthetic", data).classes))
    partial = tmp_path / "r.json.partial"
    found = {}
    original = seg.segment

    def segment(image):
        found.setdefault("n", 0)
        found["n"] += 1
        if found["n"] == 4:
            found["saved"] = saved_images(partial) if (partial / "rank0.npz").exists() else None
        return original(image)

    seg.segment = segment
    evaluate(cfg, "synthetic", data, tmp_path / "r.json", save_every=1000, save_seconds=save_seconds, progress=False,
             segmentor=seg)  # fmt: skip
    assert found["saved"] == seen


# ---------------------------------------------------------------- 7. stats compares like with like
def _result_variant(path: Path, tmp_path: Path, name: str, **changes) -> Path:
    data = json.loads(path.read_text())
    data.update(changes)
    out = tmp_path / name
    out.write_text(json.dumps(data))
    return out


def test_stats_compare_refuses_other_datasets_and_classes(reference, tmp_path, capsys):
    a = tmp_path / "a.json"
    a.write_text(json.dumps(reference))
    other_dataset = _result_variant(a, tmp_path, "potsdam.json", dataset="potsdam")
    renamed = list(reference["classes"])
    renamed[2] = "street"
    other_classes = _result_variant(a, tmp_path, "classes.json", classes=renamed)
    refused(["stats", "compare", str(a), str(other_dataset)], capsys, tmp_path, "'potsdam'", "same dataset")
    refused(["stats", "compare", str(a), str(other_classes)], capsys, tmp_path, "'street'", "class lists")
    assert main(["stats", "compare", str(a), str(a), "--n-boot", "20"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not json at all", "not valid JSON"),
        (b"\xff\xfe\x00\x81binary", "not a readable JSON text file"),
        (b"[1, 2, 3]", "not an alignclip RESULT.json"),
        (b'{"kind": "pipeline-check", "confusion_matrix": [[1]]}', "per_image_confusion"),
    ],
)
def test_stats_refuses_files_that_are_not_results(reference, tmp_path, capsys, content, needle):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(reference))
    refused(["stats", "ci", str(bad)], capsys, tmp_path, str(bad), needle)
    refused(["stats", "compare", str(good), str(bad)], capsys, tmp_path, str(bad), needle)
