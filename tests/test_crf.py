"""Dense CRF post-processing (Table 13): the CRF itself, its inputs, and the one-pass evaluation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alignclip.data import generate_synthetic_dataset, load_manifest
from alignclip.errors import ConfigError, InputError
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.evaluation.crf import evaluate_with_crf
from alignclip.evaluation.evaluate import evaluate
from alignclip.ops.crf import (
    CRF_DEFAULTS,
    PIP_COMMAND,
    check_crf_params,
    crf_available,
    dense_crf,
    dense_crf_marginals,
)
from alignclip.ops.postprocess import predict_labels
from alignclip.pipeline.config import build_config
from alignclip.pipeline.crf import crf_labels, crf_probabilities
from alignclip.pipeline.segmentor import Segmentor
from alignclip.study.crf import evaluate_crf_runs

needs_crf = pytest.mark.skipif(not crf_available(), reason=f"pydensecrf not importable: {PIP_COMMAND}")


def _edge_case():
    """Red left half | blue right half; the unary is sure at both ends and leans wrongly to class 1 between."""
    h, w = 24, 48
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = (200, 30, 30)
    image[:, w // 2 :] = (30, 30, 200)
    probs = np.empty((2, h, w), np.float32)
    probs[0, :, :12], probs[0, :, 12:36], probs[0, :, 36:] = 0.9, 0.45, 0.1
    probs[1] = 1.0 - probs[0]
    return image, probs


@needs_crf
def test_dense_crf_follows_the_colour_edge():
    image, probs = _edge_case()
    labels = dense_crf(image, probs)
    assert labels.shape == (24, 48) and labels.dtype == np.uint8
    assert (labels[:, :24] == 0).all() and (labels[:, 24:] == 1).all()  # the edge at column 24 decides
    assert (probs.argmax(0)[:, 12:24] == 1).all()  # ... against the unary's argmax there
    # control: without the colour edge the same unary keeps class 1 in the ambiguous band
    flat = dense_crf(np.full_like(image, 100), probs)
    assert (flat[:, 12:24] == 1).all()
    q = dense_crf_marginals(image, torch.from_numpy(probs), n_iter=5)
    assert q.shape == (2, 24, 48) and q.dtype == np.float32 and np.allclose(q.sum(0), 1.0, atol=1e-5)


def test_zero_steps_returns_normalised_input_without_pydensecrf():
    image, probs = _edge_case()
    q = dense_crf_marginals(image, 2.0 * probs, n_iter=0)
    assert np.allclose(q, probs, atol=1e-6)


def test_input_and_parameter_errors():
    image, probs = _edge_case()
    with pytest.raises(InputError, match=r"\[K, H, W\]"):
        dense_crf(image, probs[:, :10])
    with pytest.raises(InputError, match="uint8"):
        dense_crf(image.astype(np.float32), probs)
    with pytest.raises(InputError, match="not logits"):
        dense_crf(image, probs - 0.5)
    with pytest.raises(ConfigError, match="unknown CRF parameter"):
        check_crf_params({"n_iter": 1, "bogus": 1})
    with pytest.raises(ConfigError, match="srgb"):
        dense_crf(image, probs, srgb=0)
    assert set(CRF_DEFAULTS) == {
        "n_iter",
        "sxy_gaussian",
        "compat_gaussian",
        "sxy_bilateral",
        "srgb",
        "compat_bilateral",
    }


def test_missing_package_names_the_pip_command(monkeypatch):
    image, probs = _edge_case()
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ImportError, match="pip install pydensecrf2==1.1") as info:
        dense_crf(image, probs)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_images=2, size=64, seed=0)


@pytest.fixture(scope="module")
def segmentor():
    torch.manual_seed(0)
    cfg = build_config("alignclip-d", dataset="synthetic", smoke=True, long_side=64, prob_thd=0.0)
    return Segmentor(cfg, list(load_manifest("synthetic").classes))


def test_crf_probabilities_reproduce_predict(segmentor):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    pred = segmentor.predict(image)
    probs = crf_probabilities(segmentor, image.shape, pred, strip_rows=16)
    assert probs.shape == (6, 50, 70) and probs.dtype == np.float32
    labels = predict_labels(torch.from_numpy(probs), segmentor.config.prob_thd, segmentor.config.bg_idx).numpy()
    assert np.array_equal(labels, pred.labels)
    out = crf_labels(segmentor, image, pred, n_iter=0)
    assert out.shape == (50, 70) and out.dtype == pred.labels.dtype
    assert np.array_equal(out, pred.labels)  # no CRF step: the plain prediction


@needs_crf
def test_crf_labels_shape_and_dtype(segmentor):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    pred = segmentor.predict(image)
    out = crf_labels(segmentor, image, pred)
    assert out.shape == (40, 30) and out.dtype == pred.labels.dtype
    assert out.max() < 6


@pytest.fixture(scope="module")
def reference(synth, segmentor, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.json"
    return evaluate(segmentor.config, "synthetic", synth, out, progress=False, segmentor=segmentor)


@pytest.mark.parametrize("n_iter", [0, pytest.param(10, marks=needs_crf)])
def test_one_pass_plain_result_equals_evaluate(synth, segmentor, reference, tmp_path, n_iter):
    cfg, ref = segmentor.config, reference
    plain, crf = evaluate_with_crf(
        cfg,
        "synthetic",
        synth,
        tmp_path / "plain.json",
        tmp_path / "crf.json",
        crf_params=dict(n_iter=n_iter),
        progress=False,
        segmentor=segmentor,
    )
    assert plain["confusion_matrix"] == ref["confusion_matrix"]
    assert plain["provenance"]["fingerprint"] == ref["provenance"]["fingerprint"]
    ids_p, cms_p = ConfusionAccumulator.from_compact(plain["per_image_confusion"]).per_image()
    ids_c, cms_c = ConfusionAccumulator.from_compact(crf["per_image_confusion"]).per_image()
    assert ids_p == ids_c and len(ids_p) == 2
    assert cms_p.sum() == cms_c.sum()  # the same labelled pixels
    assert crf["provenance"]["crf"]["n_iter"] == n_iter
    assert crf["provenance"]["fingerprint"] != plain["provenance"]["fingerprint"]
    if n_iter == 0:
        assert np.array_equal(cms_p, cms_c)
    with pytest.raises(InputError, match="exists"):
        evaluate_with_crf(
            cfg, "synthetic", synth, tmp_path / "plain.json", tmp_path / "crf.json", progress=False, segmentor=segmentor
        )


def test_study_runs_are_cached(tmp_path):
    from alignclip.study import start_study

    ctx = start_study(
        profile="smoke", datasets=["synthetic"], output_dir=tmp_path, n_boot=50, smoke_images=2, smoke_size=64
    )
    params = dict(n_iter=0)  # the caching logic; runs without pydensecrf
    first = evaluate_crf_runs(ctx, "segearth-ov", crf_params=params, progress=False)
    assert list(first["label"]) == ["segearth-ov", "segearth-ov+densecrf"]
    assert set(first["kind"]) == {"pipeline-check"} and list(first["n_images"]) == [2, 2]
    stamp = [p.stat().st_mtime_ns for p in map(Path, first["path"])]
    second = evaluate_crf_runs(ctx, "segearth-ov", crf_params=params, progress=False)
    assert [p.stat().st_mtime_ns for p in map(Path, second["path"])] == stamp
    assert second["miou"].tolist() == first["miou"].tolist()
    assert all(Path(p).parts[-3] == "crf" for p in first["path"])  # never the plain evaluate_runs file
    third = evaluate_crf_runs(ctx, "segearth-ov", crf_params=dict(n_iter=0, srgb=5.0), progress=False)
    assert [Path(p).stat().st_mtime_ns for p in third["path"]] != stamp  # new CRF parameters: evaluated again


# ---------------------------------------------------------------- the one-pass loop: resume, refusal, torchrun
N_RESUME = 5


@pytest.fixture(scope="module")
def synth5(tmp_path_factory):
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth5"), n_images=N_RESUME, size=64, seed=1)


@pytest.fixture(scope="module")
def crf_reference(synth5, segmentor, tmp_path_factory):
    """An uninterrupted one-pass run on the 5 images (default CRF parameters when pydensecrf is there)."""
    d = tmp_path_factory.mktemp("crf_ref")
    return evaluate_with_crf(
        segmentor.config,
        "synthetic",
        synth5,
        d / "plain.json",
        d / "crf.json",
        crf_params=_resume_params(),
        progress=False,
        segmentor=segmentor,
    )


def _resume_params() -> dict:
    return dict(n_iter=5) if crf_available() else dict(n_iter=0)


def _count_predict(monkeypatch, segmentor, fail_at: int | None = None) -> dict:
    """Count ``segmentor.predict`` calls; raise KeyboardInterrupt (a kill) on call number ``fail_at``."""
    calls = {"n": 0}
    original = segmentor.predict

    def counted(image, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise KeyboardInterrupt
        return original(image, *args, **kwargs)

    monkeypatch.setattr(segmentor, "predict", counted)
    return calls


def _interrupted_run(monkeypatch, segmentor, synth5, tmp_path, k: int):
    """A one-pass run killed while predicting image k + 1: both heads have saved exactly k images."""
    calls = _count_predict(monkeypatch, segmentor, fail_at=k + 1)
    with pytest.raises(KeyboardInterrupt):
        evaluate_with_crf(
            segmentor.config,
            "synthetic",
            synth5,
            tmp_path / "plain.json",
            tmp_path / "crf.json",
            crf_params=_resume_params(),
            progress=False,
            segmentor=segmentor,
            save_every=1,
        )
    monkeypatch.undo()
    assert calls["n"] == k + 1
    assert not (tmp_path / "plain.json").exists() and not (tmp_path / "crf.json").exists()
    for name in ("plain.json.partial", "crf.json.partial"):
        assert len(ConfusionAccumulator.load_npz(tmp_path / name / "rank0.npz")) == k


def _assert_same_result(got: dict, ref: dict) -> None:
    assert got["confusion_matrix"] == ref["confusion_matrix"] and got["miou"] == ref["miou"]
    assert got["num_images"] == N_RESUME
    ids, cms = ConfusionAccumulator.from_compact(got["per_image_confusion"]).per_image()
    ref_ids, ref_cms = ConfusionAccumulator.from_compact(ref["per_image_confusion"]).per_image()
    assert len(set(ids)) == len(ids) == N_RESUME  # no image counted twice, none missed
    order = [ids.index(i) for i in ref_ids]
    assert np.array_equal(cms[order], ref_cms)


def test_crf_evaluation_resumes(synth5, segmentor, crf_reference, tmp_path, monkeypatch):
    k = 2
    _interrupted_run(monkeypatch, segmentor, synth5, tmp_path, k)
    calls = _count_predict(monkeypatch, segmentor)
    plain, crf = evaluate_with_crf(
        segmentor.config,
        "synthetic",
        synth5,
        tmp_path / "plain.json",
        tmp_path / "crf.json",
        crf_params=_resume_params(),
        progress=False,
        segmentor=segmentor,
        save_every=1,
    )
    assert calls["n"] == N_RESUME - k  # the k saved images are not predicted again
    _assert_same_result(plain, crf_reference[0])
    _assert_same_result(crf, crf_reference[1])
    assert crf["provenance"]["fingerprint"] == crf_reference[1]["provenance"]["fingerprint"]
    assert crf["provenance"]["one_pass_with"] == str(tmp_path / "plain.json")
    assert not (tmp_path / "plain.json.partial").exists() and not (tmp_path / "crf.json.partial").exists()


def test_crf_resume_redoes_an_image_only_for_the_head_that_lacks_it(
    synth5, segmentor, crf_reference, tmp_path, monkeypatch
):
    k = 3
    _interrupted_run(monkeypatch, segmentor, synth5, tmp_path, k)
    # a kill between the two heads' saves: the CRF head has one image fewer than the plain head
    crf_file = tmp_path / "crf.json.partial" / "rank0.npz"
    saved = ConfusionAccumulator.load_npz(crf_file)
    ids, cms = saved.per_image()
    fewer = ConfusionAccumulator(saved.num_classes)
    for image_id, cm in zip(ids[:-1], cms[:-1], strict=True):
        fewer.add_matrix(cm, image_id)
    fewer.save_npz(crf_file)
    calls = _count_predict(monkeypatch, segmentor)
    plain, crf = evaluate_with_crf(
        segmentor.config,
        "synthetic",
        synth5,
        tmp_path / "plain.json",
        tmp_path / "crf.json",
        crf_params=_resume_params(),
        progress=False,
        segmentor=segmentor,
        save_every=1,
    )
    assert calls["n"] == N_RESUME - k + 1  # the remaining images + the one the CRF head lacked
    _assert_same_result(plain, crf_reference[0])  # the plain head did not count that image twice
    _assert_same_result(crf, crf_reference[1])


def test_crf_resume_with_other_parameters_refused(synth5, segmentor, tmp_path, monkeypatch):
    _interrupted_run(monkeypatch, segmentor, synth5, tmp_path, 1)
    other = dict(_resume_params(), srgb=5.0)  # the plain head's partial state matches; the CRF head's does not
    with pytest.raises(InputError, match="different configuration") as info:
        evaluate_with_crf(
            segmentor.config,
            "synthetic",
            synth5,
            tmp_path / "plain.json",
            tmp_path / "crf.json",
            crf_params=other,
            progress=False,
            segmentor=segmentor,
        )
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "crf.json.partial") in message and "--force" in message
    assert len(ConfusionAccumulator.load_npz(tmp_path / "plain.json.partial" / "rank0.npz")) == 1  # untouched
    plain, crf = evaluate_with_crf(
        segmentor.config,
        "synthetic",
        synth5,
        tmp_path / "plain.json",
        tmp_path / "crf.json",
        crf_params=other,
        progress=False,
        segmentor=segmentor,
        force=True,
    )  # --force starts over
    assert plain["num_images"] == crf["num_images"] == N_RESUME and crf["provenance"]["crf"]["srgb"] == 5.0


TORCHRUN_SCRIPT = """
import json, sys
from alignclip.evaluation.crf import evaluate_with_crf
from alignclip.pipeline.config import build_config

root, out_plain, out_crf, params = sys.argv[1:]
cfg = build_config("alignclip-d", dataset="synthetic", smoke=True, long_side=64, prob_thd=0.0)
evaluate_with_crf(cfg, "synthetic", root, out_plain, out_crf, crf_params=json.loads(params), progress=False,
                  save_every=1)
"""


def test_crf_torchrun_two_processes_resume_a_single_process_run(
    synth5, segmentor, crf_reference, tmp_path, monkeypatch, free_port
):
    """Killed after 2 images in one process, finished by 2 gloo processes: the numbers of one uninterrupted run."""
    _interrupted_run(monkeypatch, segmentor, synth5, tmp_path, 2)
    script = tmp_path / "one_pass.py"
    script.write_text(TORCHRUN_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        free_port,
        str(script),
        str(synth5),
        str(tmp_path / "plain.json"),
        str(tmp_path / "crf.json"),
        json.dumps(_resume_params()),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plain, crf = (json.loads((tmp_path / name).read_text()) for name in ("plain.json", "crf.json"))
    assert plain["provenance"]["world_size"] == crf["provenance"]["world_size"] == 2
    _assert_same_result(plain, crf_reference[0])
    _assert_same_result(crf, crf_reference[1])
    assert crf["provenance"]["fingerprint"] == crf_reference[1]["provenance"]["fingerprint"]
