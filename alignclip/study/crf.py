"""Study runs of Table 13: a method with and without dense CRF on every dataset of a study (notebook 10)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm  # text bars on stderr (tqdm.auto warns in notebooks without ipywidgets)

from alignclip.data import load_manifest
from alignclip.evaluation.crf import crf_fingerprint, evaluate_with_crf
from alignclip.evaluation.evaluate import cached_result, run_fingerprint
from alignclip.ops.crf import check_crf_params
from alignclip.study.runs import cache_only, missing_result, result_row, run_slug, study_data_fingerprint

__all__ = ["crf_pair", "crf_paths", "crf_run_labels", "evaluate_crf_runs"]


def crf_run_labels(preset: str) -> tuple[str, str]:
    """Labels of a method's runs without and with CRF: ``(preset, preset + "+densecrf")``."""
    return preset, f"{preset}+densecrf"


def evaluate_crf_runs(
    ctx: Any,
    preset: str = "alignclip-d",
    datasets: Sequence[str] | None = None,
    crf_params: dict[str, Any] | None = None,
    labels: tuple[str, str] | None = None,
    progress: bool | None = None,
):
    """Study helper: ``preset`` with and without dense CRF on every dataset of a study (one pass each).

    Results are cached under ``ctx.output_dir/runs/crf/`` (:func:`crf_paths`) and reused when both fingerprints
    match.

    Args:
        ctx: a :class:`alignclip.study.context.StudyContext`.
        preset: the method.
        datasets: dataset names (default: the study's).
        crf_params: any of :data:`CRF_DEFAULTS`.
        labels: ``(plain label, CRF label)``; default :func:`crf_run_labels` of ``preset``.
        progress: show a progress bar over datasets (None: in the full profile only, so smoke notebooks store none).

    Returns:
        Two rows per dataset with :func:`alignclip.study.runs.evaluate_runs`'s columns (``label, preset, dataset,
        miou, ci_low, ci_high, n_images, kind, path``), so ``check_claims`` and ``paper_comparison`` apply.
    """
    params = check_crf_params(crf_params or {})
    plain_label, crf_label = labels or crf_run_labels(preset)
    rows = []
    progress = (not ctx.is_pipeline_check) if progress is None else progress
    for dataset in tqdm(list(datasets or ctx.datasets), desc="CRF evaluations", disable=not progress):
        (plain, crf), (out_plain, out_crf) = crf_pair(ctx, preset, dataset, params)
        for label, out, result in ((plain_label, out_plain, plain), (crf_label, out_crf, crf)):
            rows.append(result_row(label, preset, result, out, ctx.n_boot))
    return pd.DataFrame(rows)


def crf_paths(ctx: Any, preset: str, dataset: str, fingerprint: str, params: dict[str, Any]) -> tuple[Path, Path]:
    """Where the pair is cached: ``runs/crf/<preset>/<dataset>-<fp>.json`` and ``runs/crf/<preset>+densecrf/...``
    (the CRF run's fingerprint adds the CRF parameters)."""
    base = ctx.output_dir / "runs" / "crf"
    plain_label, crf_label = crf_run_labels(preset)
    return (
        base / run_slug(plain_label) / f"{dataset}-{fingerprint}.json",
        base / run_slug(crf_label) / f"{dataset}-{crf_fingerprint(fingerprint, params)}.json",
    )


def crf_pair(
    ctx: Any, preset: str, dataset: str, params: dict[str, Any]
) -> tuple[tuple[dict[str, Any], dict[str, Any]], tuple[Path, Path]]:
    """The RESULT.json pair of ``preset`` without and with CRF on ``dataset`` (cached, or evaluated in one pass)
    and their paths; ``params`` are checked CRF parameters."""
    cfg = ctx.config(preset, dataset)
    fingerprint = run_fingerprint(cfg, dataset, None, ctx.limit, load_manifest(dataset).classes)
    out_plain, out_crf = crf_paths(ctx, preset, dataset, fingerprint, params)
    data_fp = study_data_fingerprint(dataset, ctx.dataset_root(dataset), ctx.limit)  # same data, or rerun
    pair = (
        cached_result(out_plain, fingerprint, data_fp),
        cached_result(out_crf, crf_fingerprint(fingerprint, params), data_fp),
    )
    if None in pair:
        if cache_only():
            raise missing_result(f"{preset} with and without CRF on {dataset}", out_crf if pair[0] else out_plain)
        pair = evaluate_with_crf(
            cfg,
            dataset,
            ctx.dataset_root(dataset),
            out_plain,
            out_crf,
            limit=ctx.limit,
            crf_params=params,
            force=out_plain.exists() or out_crf.exists(),  # a stale file; else resume a partial state
            progress=False,
        )
    return pair, (out_plain, out_crf)
