"""Evaluation with and without dense CRF in one pass over a dataset (Table 13): two RESULT.json files with the
same images, so a paired bootstrap compares them."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from alignclip.data import load_manifest, open_dataset
from alignclip.errors import InputError
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.evaluation.evaluate import build_result, load_result, run_fingerprint
from alignclip.io.files import write_json
from alignclip.ops.crf import check_crf_params, require_densecrf
from alignclip.pipeline.config import SegmentorConfig
from alignclip.pipeline.crf import crf_labels
from alignclip.pipeline.segmentor import Segmentor

__all__ = ["cached_crf_results", "crf_fingerprint", "evaluate_with_crf"]


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
    both results hold the same images and :func:`alignclip.evaluation.bootstrap.paired_bootstrap` compares them. The plain
    result equals :func:`alignclip.evaluation.evaluate.evaluate`'s (same fingerprint); the CRF result's provenance records
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
        require_densecrf()  # fail before any work when pydensecrf is missing
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


