"""Dense CRF post-processing (Table 13): the CRF itself, its inputs, and the one-pass evaluation."""

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
    image[:, w // 2:] = (30, 30, 200)
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
    assert set(CRF_DEFAULTS) == {"n_iter", "sxy_gaussian", "compat_gaussian", "sxy_bilateral", "srgb",
                                 "compat_bilateral"}


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
    plain, crf = evaluate_with_crf(cfg, "synthetic", synth, tmp_path / "plain.json", tmp_path / "crf.json",
                                   crf_params=dict(n_iter=n_iter), progress=False, segmentor=segmentor)
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
        evaluate_with_crf(cfg, "synthetic", synth, tmp_path / "plain.json", tmp_path / "crf.json",
                          progress=False, segmentor=segmentor)


def test_study_runs_are_cached(tmp_path):
    from alignclip.study import start_study

    ctx = start_study(profile="smoke", datasets=["synthetic"], output_dir=tmp_path, n_boot=50, smoke_images=2,
                      smoke_size=64)
    params = dict(n_iter=0)  # the caching logic; runs without pydensecrf
    first = evaluate_crf_runs(ctx, "segearth-ov", crf_params=params, progress=False)
    assert list(first["label"]) == ["segearth-ov", "segearth-ov+densecrf"]
    assert set(first["kind"]) == {"pipeline-check"} and list(first["n_images"]) == [2, 2]
    stamp = [p.stat().st_mtime_ns for p in map(Path, first["path"])]
    second = evaluate_crf_runs(ctx, "segearth-ov", crf_params=params, progress=False)
    assert [p.stat().st_mtime_ns for p in map(Path, second["path"])] == stamp
    assert second["miou"].tolist() == first["miou"].tolist()
    assert all("crf_segearth-ov" in p for p in first["path"])  # never the plain evaluate_runs file
    third = evaluate_crf_runs(ctx, "segearth-ov", crf_params=dict(n_iter=0, srgb=5.0), progress=False)
    assert [Path(p).stat().st_mtime_ns for p in third["path"]] != stamp  # new CRF parameters: evaluated again
