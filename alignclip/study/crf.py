"""Study runs of Table 13: a method with and without dense CRF on every dataset of a study (notebook 10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from tqdm import tqdm  # text bars on stderr (tqdm.auto warns in notebooks without ipywidgets)

from alignclip.data import load_manifest
from alignclip.evaluation.crf import crf_fingerprint, evaluate_with_crf
from alignclip.evaluation.evaluate import cached_result, run_fingerprint
from alignclip.ops.crf import check_crf_params
from alignclip.study.runs import Run, result_path, result_row, study_data_fingerprint

__all__ = ["crf_run_labels", "evaluate_crf_runs"]


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

    Results are cached under ``ctx.output_dir/runs/crf_<label>/<dataset>.json`` (a folder of their own, so the
    plain run never overwrites :func:`alignclip.study.runs.evaluate_runs`'s file of the same method) and reused when
    both fingerprints match.

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
        cfg = ctx.config(preset, dataset)
        manifest = load_manifest(dataset)
        out_plain = result_path(ctx, Run(f"crf/{plain_label}", preset, dataset))
        out_crf = result_path(ctx, Run(f"crf/{crf_label}", preset, dataset))
        fingerprint = run_fingerprint(cfg, dataset, None, ctx.limit, manifest.classes)
        data_fp = study_data_fingerprint(dataset, ctx.dataset_root(dataset), ctx.limit)  # same data, or rerun
        pair = (
            cached_result(out_plain, fingerprint, data_fp),
            cached_result(out_crf, crf_fingerprint(fingerprint, params), data_fp),
        )
        if None in pair:
            pair = evaluate_with_crf(
                cfg,
                dataset,
                ctx.dataset_root(dataset),
                out_plain,
                out_crf,
                limit=ctx.limit,
                crf_params=params,
                force=True,
                progress=False,
            )
        for label, out, result in ((plain_label, out_plain, pair[0]), (crf_label, out_crf, pair[1])):
            rows.append(result_row(label, preset, result, out, ctx.n_boot))
    return pd.DataFrame(rows)
