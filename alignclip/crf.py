"""Dense CRF post-processing of the segmentor's class probabilities (paper App. A.8, Table 13).

The paper applies "denseCRF (Krähenbühl & Koltun, 2011)" to the logit maps of AlignCLIP-D and reports +0.9 mIoU
on average, without giving any CRF parameter. We use the fully connected CRF with Gaussian edge potentials of
Krähenbühl & Koltun (2011), Eq. 1-3 there: energy ``E(x) = Σ_i ψ_u(x_i) + Σ_{i<j} ψ_p(x_i, x_j)`` with the unary
``ψ_u = -log p`` of our class probabilities and the pairwise Potts kernel

    ``k(i, j) = w1 · exp(-|p_i - p_j|² / 2θα² - |I_i - I_j|² / 2θβ²) + w2 · exp(-|p_i - p_j|² / 2θγ²)``

solved by ``n_iter`` mean-field steps (``pydensecrf``, PyPI ``pydensecrf2==1.1``, imported lazily). The default
parameters are those of the authors' reference example (``dense_inference.cpp``, repeated in pydensecrf's README):
θγ = 3 px, w2 = 3 (smoothness kernel); θα = 80 px, θβ = 13 (RGB units), w1 = 10 (appearance kernel); 10 steps.

:func:`crf_labels` turns a :class:`~alignclip.segmentor.Prediction` into CRF labels at the input size, and
:func:`evaluate_with_crf` evaluates a method with and without CRF in one pass over a dataset (two RESULT.json
files with the same images, so a paired bootstrap compares them).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import SegmentorConfig
from .data import load_manifest, open_dataset
from .errors import ConfigError, InputError
from .evaluate import build_result, load_result, run_fingerprint
from .fileio import write_json
from .metrics import ConfusionAccumulator
from .postprocess import class_probabilities, predict_labels
from .resize import bilinear_rows
from .segmentor import Prediction, Segmentor

PIP_COMMAND = "pip install pydensecrf2==1.1"

#: Default CRF parameters (Krähenbühl & Koltun's reference example; the paper gives none).
CRF_DEFAULTS: dict[str, float] = dict(n_iter=10, sxy_gaussian=3.0, compat_gaussian=3.0, sxy_bilateral=80.0,
                                      srgb=13.0, compat_bilateral=10.0)
_EPS = 1e-8


def _densecrf():
    """The ``pydensecrf.densecrf`` module, or one line saying how to install it."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise ImportError(f"dense CRF needs the optional package pydensecrf (not found in {sys.executable}); "
                          f"install it with `{PIP_COMMAND}` (builds with gcc in ~1 min)") from None
    return dcrf


def crf_available() -> bool:
    """True when ``pydensecrf`` can be imported."""
    try:
        _densecrf()
    except ImportError:
        return False
    return True


def check_crf_params(params: dict[str, Any]) -> dict[str, float]:
    """The full parameter set (defaults filled in); unknown names or invalid values raise ConfigError."""
    bad = sorted(set(params) - set(CRF_DEFAULTS))
    if bad:
        raise ConfigError(f"unknown CRF parameter(s) {', '.join(bad)}; valid: {', '.join(CRF_DEFAULTS)}")
    full = {**CRF_DEFAULTS, **params}
    if int(full["n_iter"]) != full["n_iter"] or full["n_iter"] < 0:
        raise ConfigError(f"n_iter={full['n_iter']} must be a whole number >= 0 of mean-field steps (e.g. 10)")
    for name in ("sxy_gaussian", "sxy_bilateral", "srgb"):
        if not full[name] > 0:
            raise ConfigError(f"{name}={full[name]} must be > 0 (a kernel width); default {CRF_DEFAULTS[name]}")
    for name in ("compat_gaussian", "compat_bilateral"):
        if not full[name] >= 0:
            raise ConfigError(f"{name}={full[name]} must be >= 0 (a kernel weight; 0 drops the kernel)")
    return {k: (int(v) if k == "n_iter" else float(v)) for k, v in full.items()}


def dense_crf_marginals(image_rgb: np.ndarray, probs: np.ndarray | torch.Tensor, n_iter: int = 10,
                        sxy_gaussian: float = 3.0, compat_gaussian: float = 3.0, sxy_bilateral: float = 80.0,
                        srgb: float = 13.0, compat_bilateral: float = 10.0) -> np.ndarray:
    """Mean-field marginals of the fully connected CRF (Krähenbühl & Koltun 2011, Eq. 1-3 and Alg. 1).

    Args:
        image_rgb: the image ``[H, W, 3]`` uint8 RGB (drives the appearance kernel).
        probs: class probabilities ``[K, H, W]`` (non-negative; each pixel is renormalised to sum to 1, so the
            per-class maxima of :func:`alignclip.postprocess.class_probabilities` can be passed as they are).
        n_iter: mean-field steps (0 returns the normalised input).
        sxy_gaussian: θγ, spatial width in pixels of the smoothness kernel.
        compat_gaussian: w2, Potts weight of the smoothness kernel (0 drops it).
        sxy_bilateral: θα, spatial width in pixels of the appearance kernel.
        srgb: θβ, colour width (0-255 RGB units) of the appearance kernel.
        compat_bilateral: w1, Potts weight of the appearance kernel (0 drops it).

    Returns:
        ``[K, H, W]`` float32 marginals (sum to 1 over K).
    """
    p = check_crf_params(dict(n_iter=n_iter, sxy_gaussian=sxy_gaussian, compat_gaussian=compat_gaussian,
                              sxy_bilateral=sxy_bilateral, srgb=srgb, compat_bilateral=compat_bilateral))
    if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3 \
            or image_rgb.dtype != np.uint8:
        raise InputError(f"image_rgb must be an RGB uint8 array [H, W, 3], got {type(image_rgb).__name__} "
                         f"{getattr(image_rgb, 'shape', None)} {getattr(image_rgb, 'dtype', '')}")
    probs = probs.detach().float().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    h, w = image_rgb.shape[:2]
    if probs.ndim != 3 or probs.shape[1:] != (h, w) or probs.shape[0] < 1:
        raise InputError(f"probs must be [K, H, W] = [K, {h}, {w}] (the image's size), got {probs.shape}; resize "
                         f"the probabilities to the image first (see crf_labels)")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise InputError("probs hold negative or non-finite values; pass probabilities (softmax output), not logits")
    k = probs.shape[0]
    q = np.maximum(probs.astype(np.float32), _EPS)
    q /= q.sum(axis=0, keepdims=True)
    if k == 1 or p["n_iter"] == 0:
        return q
    dcrf = _densecrf()
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(q).reshape(k, h * w)))
    if p["compat_gaussian"] > 0:
        crf.addPairwiseGaussian(sxy=p["sxy_gaussian"], compat=p["compat_gaussian"])
    if p["compat_bilateral"] > 0:
        rgb = np.require(image_rgb, np.uint8, ["C", "W"])  # pydensecrf refuses read-only buffers
        crf.addPairwiseBilateral(sxy=p["sxy_bilateral"], srgb=p["srgb"], rgbim=rgb, compat=p["compat_bilateral"])
    return np.asarray(crf.inference(p["n_iter"]), dtype=np.float32).reshape(k, h, w)


def _label_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes <= 256 else np.int32  # the segmentor's convention


def dense_crf(image_rgb: np.ndarray, probs: np.ndarray | torch.Tensor, n_iter: int = 10, sxy_gaussian: float = 3.0,
              compat_gaussian: float = 3.0, sxy_bilateral: float = 80.0, srgb: float = 13.0,
              compat_bilateral: float = 10.0) -> np.ndarray:
    """Labels ``[H, W]`` (argmax of :func:`dense_crf_marginals`; same arguments) of a ``[K, H, W]`` map."""
    q = dense_crf_marginals(image_rgb, probs, n_iter, sxy_gaussian, compat_gaussian, sxy_bilateral, srgb,
                            compat_bilateral)
    return q.argmax(axis=0).astype(_label_dtype(q.shape[0]))


def crf_probabilities(segmentor: Segmentor, image_shape: Sequence[int], prediction: Prediction,
                      strip_rows: int = 512) -> np.ndarray:
    """Class probabilities ``[K, H0, W0]`` float32 at the input size, exactly as ``Segmentor.predict`` has them.

    The logits ``[Q, H, W]`` (processing size) are resized bilinearly to ``(H0, W0)`` in strips of rows
    (:func:`alignclip.resize.bilinear_rows`), then softmaxed over queries and reduced to classes
    (:func:`alignclip.postprocess.class_probabilities`).
    """
    h0, w0 = int(image_shape[0]), int(image_shape[1])
    c = segmentor.config
    k = segmentor.classes.num_classes
    out = np.empty((k, h0, w0), dtype=np.float32)
    for r in range(0, h0, strip_rows):  # strips of rows bound the [Q, rows, W0] intermediate
        rows = bilinear_rows(prediction.logits, (h0, w0), r, min(r + strip_rows, h0))
        probs = class_probabilities(rows, segmentor.query_to_class, k, c.logit_scale)
        out[:, r:r + rows.shape[1]] = probs.cpu().numpy()
    return out


def crf_labels(segmentor: Segmentor, image: np.ndarray, prediction: Prediction, **crf_params: Any) -> np.ndarray:
    """Dense-CRF labels ``[H0, W0]`` of one image from its prediction (Table 13's "+denseCRF").

    The CRF runs on the class probabilities at the input size (:func:`crf_probabilities`); its marginals then go
    through the same rule as the plain prediction (:func:`alignclip.postprocess.predict_labels`: argmax, and
    ``bg_idx`` where the best marginal is below the dataset's ``prob_thd``).

    Args:
        segmentor: the segmentor that made ``prediction``.
        image: the input ``[H0, W0, 3]`` uint8 RGB.
        prediction: ``segmentor.predict(image)``.
        crf_params: any of :data:`CRF_DEFAULTS`.

    Returns:
        ``[H0, W0]`` labels, the dtype of ``prediction.labels``.
    """
    params = check_crf_params(crf_params)
    probs = crf_probabilities(segmentor, image.shape[:2], prediction)
    q = dense_crf_marginals(image, probs, **params)
    c = segmentor.config
    labels = predict_labels(torch.from_numpy(q), c.prob_thd, c.bg_idx).numpy()
    return labels.astype(prediction.labels.dtype)


def crf_fingerprint(plain_fingerprint: str, crf_params: dict[str, Any]) -> str:
    """Fingerprint of a +CRF run: the plain run's and the CRF parameters."""
    blob = json.dumps({"plain": plain_fingerprint, "crf": check_crf_params(crf_params)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def evaluate_with_crf(config: SegmentorConfig, dataset: str, data_root: str | Path, out_plain: str | Path,
                      out_crf: str | Path, split: str | None = None, limit: int | None = None,
                      crf_params: dict[str, Any] | None = None, force: bool = False, progress: bool = True,
                      segmentor: Segmentor | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate ``config`` without and with dense CRF in ONE pass over a dataset; write two RESULT.json files.

    Every image is segmented once; its plain labels and its CRF labels go into two confusion accumulators, so
    both results hold the same images and :func:`alignclip.stats.paired_bootstrap` compares them. The plain
    result equals :func:`alignclip.evaluate.evaluate`'s (same fingerprint); the CRF result's provenance records
    the CRF parameters. Single process, no resume (use ``limit`` for quick runs).

    Args:
        config: the method (e.g. ``build_config("alignclip-d", dataset="potsdam")``).
        dataset: manifest name.
        data_root: the converted dataset root.
        out_plain: RESULT.json path of the run without CRF.
        out_crf: RESULT.json path of the run with CRF.
        split: overrides the manifest's evaluation split.
        limit: evaluate only the first ``limit`` images.
        crf_params: any of :data:`CRF_DEFAULTS`.
        force: overwrite existing result files.
        progress: show a progress bar.
        segmentor: a ready segmentor to reuse (its classes must be the dataset's).

    Returns:
        ``(plain result, CRF result)`` as written.
    """
    params = check_crf_params(crf_params or {})
    out_plain, out_crf = Path(out_plain), Path(out_crf)
    for out in (out_plain, out_crf):
        if out.exists() and not force:
            raise InputError(f"{out} exists; pass force=True to overwrite it, or choose another path")
    if params["n_iter"] > 0:
        _densecrf()  # fail before any work when pydensecrf is missing
    manifest = load_manifest(dataset)
    data = open_dataset(dataset, data_root, split)
    n_total = len(data) if limit is None else min(limit, len(data))
    seg = segmentor or Segmentor(config, list(manifest.classes))
    plain, crf = ConfusionAccumulator(manifest.num_classes), ConfusionAccumulator(manifest.num_classes)
    started = time.time()
    for i in tqdm(range(n_total), desc=f"{dataset} (+CRF)", unit="img", disable=not progress, file=sys.stderr):
        sample = data[i]
        pred = seg.predict(sample.image)
        plain.update(pred.labels, sample.label, sample.image_id)
        crf.update(crf_labels(seg, sample.image, pred, **params), sample.label, sample.image_id)
    wall = time.time() - started
    fingerprint = run_fingerprint(config, dataset, split, limit, manifest.classes)
    results = []
    for acc, out, fp in ((plain, out_plain, fingerprint), (crf, out_crf, crf_fingerprint(fingerprint, params))):
        result = build_result(acc, seg, config, dataset, split, limit, wall, 1)
        result["provenance"]["fingerprint"] = fp
        result["provenance"]["crf"] = params if acc is crf else None
        result["provenance"]["one_pass_with"] = str(out_crf if acc is plain else out_plain)
        write_json(out, result, overwrite=True)
        results.append(result)
    return results[0], results[1]


def cached_crf_results(out_plain: Path, out_crf: Path, fingerprint: str,
                       crf_params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Both results when both files exist with the expected fingerprints, else None."""
    if not (out_plain.is_file() and out_crf.is_file()):
        return None
    plain, crf = load_result(out_plain), load_result(out_crf)
    if plain.get("provenance", {}).get("fingerprint") != fingerprint:
        return None
    if crf.get("provenance", {}).get("fingerprint") != crf_fingerprint(fingerprint, crf_params):
        return None
    return plain, crf


def crf_run_labels(preset: str) -> tuple[str, str]:
    """Labels of a method's runs without and with CRF: ``(preset, preset + "+densecrf")``."""
    return preset, f"{preset}+densecrf"


def evaluate_crf_runs(ctx: Any, preset: str = "alignclip-d", datasets: Sequence[str] | None = None,
                      crf_params: dict[str, Any] | None = None, labels: tuple[str, str] | None = None,
                      progress: bool = True):
    """Study helper: ``preset`` with and without dense CRF on every dataset of a study (one pass each).

    Results are cached under ``ctx.output_dir/runs/crf_<label>/<dataset>.json`` (a folder of their own, so the
    plain run never overwrites :func:`alignclip.study.evaluate_runs`'s file of the same method) and reused when
    both fingerprints match.

    Args:
        ctx: a :class:`alignclip.study.StudyContext`.
        preset: the method.
        datasets: dataset names (default: the study's).
        crf_params: any of :data:`CRF_DEFAULTS`.
        labels: ``(plain label, CRF label)``; default :func:`crf_run_labels` of ``preset``.
        progress: show a progress bar over datasets.

    Returns:
        Two rows per dataset with :func:`alignclip.study.evaluate_runs`'s columns (``label, preset, dataset,
        miou, ci_low, ci_high, n_images, kind, path``), so ``check_claims`` and ``paper_comparison`` apply.
    """
    import pandas as pd

    from .stats import bootstrap_miou
    from .study import Run, result_path

    params = check_crf_params(crf_params or {})
    plain_label, crf_label = labels or crf_run_labels(preset)
    rows = []
    for dataset in tqdm(list(datasets or ctx.datasets), desc="CRF evaluations", disable=not progress):
        cfg = ctx.config(preset, dataset)
        manifest = load_manifest(dataset)
        out_plain = result_path(ctx, Run(f"crf/{plain_label}", preset, dataset))
        out_crf = result_path(ctx, Run(f"crf/{crf_label}", preset, dataset))
        fingerprint = run_fingerprint(cfg, dataset, None, ctx.limit, manifest.classes)
        pair = cached_crf_results(out_plain, out_crf, fingerprint, params)
        if pair is None:
            pair = evaluate_with_crf(cfg, dataset, ctx.dataset_root(dataset), out_plain, out_crf, limit=ctx.limit,
                                     crf_params=params, force=True, progress=False)
        for label, out, result in ((plain_label, out_plain, pair[0]), (crf_label, out_crf, pair[1])):
            acc = ConfusionAccumulator.from_compact(result["per_image_confusion"])
            ci = bootstrap_miou(acc.per_image()[1], n_boot=ctx.n_boot, seed=0)
            rows.append(dict(label=label, preset=preset, dataset=dataset, miou=result["miou"],
                             ci_low=ci["ci_low"], ci_high=ci["ci_high"], n_images=result["num_images"],
                             kind=result["kind"], path=str(out)))
    return pd.DataFrame(rows)
