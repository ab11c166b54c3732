"""Evaluation with and without dense CRF in one pass over a dataset (Table 13): two RESULT.json files with the
same images, so a paired bootstrap compares them. The pass is :func:`alignclip.evaluation.evaluate.evaluate_heads`
with two heads (resumable, torchrun-aware)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from alignclip.data import Sample, load_manifest
from alignclip.evaluation.evaluate import Head, evaluate_heads, plain_labels, run_fingerprint
from alignclip.ops.crf import check_crf_params, require_densecrf
from alignclip.pipeline.config import SegmentorConfig
from alignclip.pipeline.crf import crf_labels
from alignclip.pipeline.segmentor import Prediction, Segmentor

__all__ = ["crf_fingerprint", "crf_heads", "evaluate_with_crf"]


def crf_fingerprint(plain_fingerprint: str, crf_params: dict[str, Any]) -> str:
    """Fingerprint of a +CRF run: the plain run's and the CRF parameters."""
    blob = json.dumps({"plain": plain_fingerprint, "crf": check_crf_params(crf_params)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def crf_heads(
    plain_fingerprint: str, out_plain: str | Path, out_crf: str | Path, crf_params: dict[str, Any] | None = None
) -> tuple[Head, Head]:
    """The two heads of a one-pass run: the plain labels and their dense-CRF labels (:func:`crf_labels`).

    Args:
        plain_fingerprint: the plain run's :func:`run_fingerprint`; the CRF head's is :func:`crf_fingerprint`.
        out_plain: RESULT.json path of the run without CRF.
        out_crf: RESULT.json path of the run with CRF.
        crf_params: any of :data:`CRF_DEFAULTS`.

    Returns:
        ``(plain head, CRF head)``; their provenance records ``crf`` (None / the parameters) and ``one_pass_with``
        (the other head's path).
    """
    params = check_crf_params(crf_params or {})
    out_plain, out_crf = Path(out_plain), Path(out_crf)

    def with_crf(segmentor: Segmentor, sample: Sample, prediction: Prediction | None) -> np.ndarray:
        return crf_labels(segmentor, sample.image, prediction, **params)

    plain = Head(out_plain, plain_fingerprint, plain_labels, {"crf": None, "one_pass_with": str(out_crf)})
    crf = Head(
        out_crf,
        crf_fingerprint(plain_fingerprint, params),
        with_crf,
        {"crf": params, "one_pass_with": str(out_plain)},
        needs_logits=True,
    )
    return plain, crf


def evaluate_with_crf(
    config: SegmentorConfig,
    dataset: str,
    data_root: str | Path,
    out_plain: str | Path,
    out_crf: str | Path,
    split: str | None = None,
    limit: int | None = None,
    crf_params: dict[str, Any] | None = None,
    force: bool = False,
    progress: bool = True,
    segmentor: Segmentor | None = None,
    save_every: int = 20,
    allow_partial: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate ``config`` without and with dense CRF in ONE pass over a dataset; write two RESULT.json files.

    Every image is predicted once; its plain labels and its CRF labels go into two confusion accumulators, so
    both results hold the same images and :func:`alignclip.evaluation.bootstrap.paired_bootstrap` compares them. The
    plain result equals :func:`alignclip.evaluation.evaluate.evaluate`'s (same fingerprint); the CRF result's
    provenance records the CRF parameters. Like ``evaluate``, progress is saved in ``out_plain.partial/`` and
    ``out_crf.partial/`` (locked, fingerprinted; a rerun continues where it stopped) and ``torchrun`` shards the
    images.

    Args:
        config: the method (e.g. ``build_config("alignclip-d", dataset="potsdam")``).
        dataset: manifest name.
        data_root: the converted dataset root.
        out_plain: RESULT.json path of the run without CRF.
        out_crf: RESULT.json path of the run with CRF.
        split: overrides the manifest's evaluation split.
        limit: evaluate only the first ``limit`` images.
        crf_params: any of :data:`CRF_DEFAULTS`.
        force: overwrite existing result files and discard partial results.
        progress: show a progress bar.
        segmentor: a ready segmentor to reuse (its classes must be the dataset's).
        save_every: images between two progress saves.
        allow_partial: accept a dataset with fewer images than its manifest lists (a warning on stderr).

    Returns:
        ``(plain result, CRF result)`` as written (on every process).
    """
    params = check_crf_params(crf_params or {})
    if params["n_iter"] > 0:
        require_densecrf()  # fail before any work when pydensecrf is missing
    fingerprint = run_fingerprint(config, dataset, split, limit, load_manifest(dataset).classes)
    heads = crf_heads(fingerprint, out_plain, out_crf, params)
    plain, crf = evaluate_heads(
        config,
        dataset,
        data_root,
        heads,
        split=split,
        limit=limit,
        force=force,
        save_every=save_every,
        progress=progress,
        segmentor=segmentor,
        desc=f"{dataset} (+CRF)",
        allow_partial=allow_partial,
    )
    return plain, crf
