"""Evaluation: RESULT.json content, overwrite protection, resume, torchrun (gloo, 2 processes)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alignclip.data import generate_synthetic_dataset
from alignclip.errors import InputError
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.evaluation.evaluate import (
    DistInfo,
    Head,
    cached_result,
    evaluate,
    evaluate_heads,
    run_fingerprint,
    shard_indices,
)
from alignclip.evaluation.metrics import iou_from_confusion
from alignclip.pipeline.config import build_config
from alignclip.pipeline.segmentor import Segmentor

OVER = dict(long_side=128)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_images=5, size=96, seed=0)


@pytest.fixture(scope="module")
def config():
    return build_config("alignclip-d", dataset="synthetic", smoke=True, **OVER)


@pytest.fixture(scope="module")
def reference(synth, config, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "result.json"
    return evaluate(config, "synthetic", synth, out, progress=False)


def test_result_json_fields(reference, synth, tmp_path, config):
    r = reference
    for key in (
        "miou",
        "per_class_iou",
        "aacc",
        "macc",
        "num_images",
        "classes",
        "confusion_matrix",
        "kind",
        "per_image_confusion",
        "provenance",
    ):
        assert key in r
    assert r["kind"] == "pipeline-check" and "not a reproduction" in r["note"]
    assert r["num_images"] == 5
    prov = r["provenance"]
    for key in (
        "config",
        "manifest_sha256",
        "weights",
        "git_commit",
        "code_sha256",
        "versions",
        "device",
        "wall_time_s",
    ):
        assert key in prov
    assert prov["weights"]["clip"] == "random"
    cm = np.array(r["confusion_matrix"])
    assert np.isclose(iou_from_confusion(cm)["miou"], r["miou"])
    acc = ConfusionAccumulator.from_compact(r["per_image_confusion"])
    assert np.array_equal(acc.total(), cm) and len(acc) == 5


def test_refuses_to_overwrite(synth, config, tmp_path):
    out = tmp_path / "r.json"
    out.write_text("{}")
    with pytest.raises(InputError, match="--force"):
        evaluate(config, "synthetic", synth, out, progress=False)


def test_resume_after_interruption(synth, config, reference, tmp_path):
    out = tmp_path / "r.json"
    seg = Segmentor(config, list(reference["classes"]))
    calls = {"n": 0}
    original = seg.segment

    def flaky(image):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed half-way
        return original(image)

    seg.segment = flaky
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, "synthetic", synth, out, save_every=1, progress=False, segmentor=seg)
    assert not out.exists() and (tmp_path / "r.json.partial").is_dir()
    calls["n"] = 100  # no more interruptions; count the images of the second run
    result = evaluate(config, "synthetic", synth, out, save_every=1, progress=False, segmentor=seg)
    assert calls["n"] - 100 == 2  # 3 images were already done
    assert result["num_images"] == 5
    assert result["confusion_matrix"] == reference["confusion_matrix"]
    assert not (tmp_path / "r.json.partial").exists()


def test_resume_with_other_config_refused(synth, config, reference, tmp_path):
    out = tmp_path / "r.json"
    partial = tmp_path / "r.json.partial"
    partial.mkdir()
    (partial / "meta.json").write_text(json.dumps({"fingerprint": "something-else"}))
    with pytest.raises(InputError, match="different configuration"):
        evaluate(config, "synthetic", synth, out, progress=False)


def test_cached_result_checks_the_fingerprint(reference, tmp_path):
    out = tmp_path / "r.json"
    fingerprint = reference["provenance"]["fingerprint"]
    assert cached_result(out, fingerprint) is None  # no file
    out.write_text(json.dumps(reference))
    assert cached_result(out, fingerprint) == reference
    assert cached_result(str(out), fingerprint) == reference
    assert cached_result(out, "0123456789abcdef") is None  # another configuration, dataset or code
    out.write_text("{}")
    with pytest.raises(InputError, match="not an alignclip RESULT.json"):
        cached_result(out, fingerprint)


def test_evaluate_heads_scores_every_head_in_one_pass(synth, config, reference, tmp_path):
    seen = []

    def all_zero(segmentor, sample, prediction):
        seen.append((sample.image_id, prediction))
        return np.zeros_like(sample.label)

    plain = Head(tmp_path / "plain.json", reference["provenance"]["fingerprint"])
    zero = Head(tmp_path / "zero.json", "zero-head", all_zero, {"note_of_head": "class 0 everywhere"})
    got_plain, got_zero = evaluate_heads(config, "synthetic", synth, [plain, zero], progress=False)
    assert got_plain["confusion_matrix"] == reference["confusion_matrix"]
    assert got_plain["provenance"]["fingerprint"] == reference["provenance"]["fingerprint"]
    assert len(seen) == 5 and all(pred is None for _, pred in seen)  # no head needs the logits: none kept
    cm, ref = np.array(got_zero["confusion_matrix"]), np.array(reference["confusion_matrix"])
    assert np.array_equal(cm.sum(1), ref.sum(1))  # the same ground truth ...
    assert cm[:, 1:].sum() == 0 and cm[:, 0].sum() == ref.sum()  # ... all predicted as class 0
    assert got_zero["provenance"]["fingerprint"] == "zero-head"
    assert got_zero["provenance"]["note_of_head"] == "class 0 everywhere"
    assert json.loads((tmp_path / "zero.json").read_text())["confusion_matrix"] == cm.tolist()
    with pytest.raises(InputError, match="own out"):
        evaluate_heads(config, "synthetic", synth, [plain, Head(tmp_path / "plain.json", "x")], force=True)
    with pytest.raises(InputError, match="at least one Head"):
        evaluate_heads(config, "synthetic", synth, [])


def test_fingerprint_follows_the_package_code(config, monkeypatch):
    import alignclip.evaluation.evaluate as ev

    fp = run_fingerprint(config, "synthetic", None, None, ("a", "b"))
    monkeypatch.setattr(ev, "code_sha256", lambda: "edited-code")
    assert run_fingerprint(config, "synthetic", None, None, ("a", "b")) != fp


def test_code_hash_changes_with_any_code_file(tmp_path):
    from alignclip.io.provenance import code_sha256

    assert code_sha256() == code_sha256() and len(code_sha256()) == 16
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "notes.txt").write_text("ignored")
    before = code_sha256(tmp_path / "pkg")
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert code_sha256(tmp_path / "pkg") == before  # cached for the process: a run sees one code version
    code_sha256.cache_clear()
    assert code_sha256(tmp_path / "pkg") != before


def test_fingerprint_ignores_window_batch_and_device_only(config):
    fp = run_fingerprint(config, "synthetic", None, None, ("a", "b"))
    assert run_fingerprint(config.replace(window_batch=7), "synthetic", None, None, ("a", "b")) == fp
    assert run_fingerprint(config.replace(device="cuda:1"), "synthetic", None, None, ("a", "b")) == fp
    assert run_fingerprint(config.replace(precision="bf16"), "synthetic", None, None, ("a", "b")) != fp
    assert run_fingerprint(config.replace(alpha=0.5), "synthetic", None, None, ("a", "b")) != fp
    assert run_fingerprint(config, "synthetic", None, 3, ("a", "b")) != fp


def test_shard_indices_cover_once():
    n = 7
    shards = [shard_indices(n, DistInfo(r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(n))


def test_missing_root_message(config, tmp_path):
    from alignclip.errors import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="synthetic.yaml"):
        evaluate(config, "synthetic", tmp_path / "nowhere", tmp_path / "r.json", progress=False)


def test_torchrun_two_processes_equal_one(synth, reference, tmp_path, free_port):
    out = tmp_path / "ddp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        free_port,
        "-m",
        "alignclip.cli.main",
        "evaluate",
        "--dataset",
        "synthetic",
        "--data-root",
        str(synth),
        "--out",
        str(out),
        "--preset",
        "alignclip-d",
        "--smoke",
        "--set",
        "long_side=128",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["provenance"]["world_size"] == 2
    assert result["num_images"] == 5
    assert result["confusion_matrix"] == reference["confusion_matrix"]
    assert result["miou"] == reference["miou"]
