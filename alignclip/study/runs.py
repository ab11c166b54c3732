"""Evaluation runs of the study: what one run is, grids of runs, and their cached evaluation.

Each run's RESULT.json is cached under ``output_dir/runs/<label>/<dataset>.json`` and reused when its fingerprint
(configuration, data, code) matches, so rerunning a notebook, or another notebook with the same run, evaluates
nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm  # text bars on stderr (tqdm.auto warns in notebooks without ipywidgets)

from alignclip.data import dataset_fingerprint, load_manifest, open_dataset
from alignclip.evaluation.bootstrap import bootstrap_miou
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.evaluation.evaluate import cached_result, evaluate, run_fingerprint
from alignclip.study.context import StudyContext

__all__ = [
    "Run",
    "evaluate_runs",
    "grid_runs",
    "result_path",
    "result_row",
    "study_data_fingerprint",
    "switch_pairs",
    "switch_runs",
]


@dataclass(frozen=True)
class Run:
    """One evaluation: a label for tables, a preset (``PRESET+sga`` ...), a dataset and config overrides."""

    label: str
    preset: str
    dataset: str
    overrides: dict[str, Any] = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


def result_path(ctx: StudyContext, run: Run) -> Path:
    return ctx.output_dir / "runs" / _slug(run.label) / f"{run.dataset}.json"


def evaluate_runs(ctx: StudyContext, runs: Sequence[Run], progress: bool | None = None) -> pd.DataFrame:
    """Evaluate every run (reusing cached RESULT.json files with the same fingerprint).

    Returns:
        One row per run: ``label, preset, dataset, miou, ci_low, ci_high, n_images, kind, path`` (the interval
        is the 95 % percentile bootstrap over images).
    """
    configs = [ctx.config(run.preset, run.dataset, **run.overrides) for run in runs]  # every error before any run
    rows = []
    progress = (not ctx.is_pipeline_check) if progress is None else progress  # no bar lines in smoke notebooks
    for run, cfg in tqdm(list(zip(runs, configs, strict=True)), desc="evaluations", disable=not progress):
        manifest = load_manifest(run.dataset)
        out = result_path(ctx, run)
        fingerprint = run_fingerprint(cfg, run.dataset, None, ctx.limit, manifest.classes)
        root = ctx.dataset_root(run.dataset)
        result = cached_result(out, fingerprint, study_data_fingerprint(run.dataset, root, ctx.limit))
        if result is None:
            result = evaluate(cfg, run.dataset, root, out, limit=ctx.limit, force=True, progress=False)
        rows.append(result_row(run.label, run.preset, result, out, ctx.n_boot))
    return pd.DataFrame(rows)


def study_data_fingerprint(dataset: str, root: Path, limit: int | None) -> str:
    """The data fingerprint an evaluation of ``dataset`` under ``root`` records (its first ``limit`` images): a
    cached RESULT.json is reused only for the same data (size, mtime and a partial hash of every file)."""
    data = open_dataset(dataset, root)
    n = len(data) if limit is None else min(limit, len(data))
    return dataset_fingerprint(data, list(range(n)))


def result_row(label: str, preset: str, result: dict[str, Any], out: Path, n_boot: int) -> dict[str, Any]:
    """One row of :func:`evaluate_runs`' table from a RESULT.json: ``label, preset, dataset, miou, ci_low, ci_high,
    n_images, kind, path`` (the 95 % percentile bootstrap over images, seed 0)."""
    acc = ConfusionAccumulator.from_compact(result["per_image_confusion"])
    ci = bootstrap_miou(acc.per_image()[1], n_boot=n_boot, seed=0)
    return dict(
        label=label,
        preset=preset,
        dataset=result["dataset"],
        miou=result["miou"],
        ci_low=ci["ci_low"],
        ci_high=ci["ci_high"],
        n_images=result["num_images"],
        kind=result["kind"],
        path=str(out),
    )


def grid_runs(
    presets: Sequence[str], datasets: Sequence[str], overrides: dict[str, Any] | None = None, label: str | None = None
) -> list[Run]:
    """Every preset on every dataset, preset by preset: the one builder of run grids.

    Args:
        presets: preset names (``PRESET+sga`` ...).
        datasets: dataset names.
        overrides: config overrides of every run.
        label: the label of every run (default: each run's preset name).
    """
    return [Run(label or p, p, d, dict(overrides or {})) for p in presets for d in datasets]


def switch_runs(
    bases: Sequence[str], datasets: Sequence[str], switch: str = "sga", overrides: dict[str, Any] | None = None
) -> list[Run]:
    """Runs of every base preset and of ``base+switch`` on every dataset.

    Args:
        bases: preset names (e.g. ``["segearth-ov", "sclip"]``).
        datasets: dataset names.
        switch: the module switched on (``sga`` or ``cce``).
        overrides: config overrides of the switched runs only (e.g. ``{"alpha": 0.1}``).

    Returns:
        ``Run(base)`` then ``Run(base+switch)`` on every dataset, for every base (labels = preset names).
    """
    return [
        run
        for base in bases
        for run in grid_runs([base], datasets) + grid_runs([f"{base}+{switch}"], datasets, overrides)
    ]


def switch_pairs(bases: Sequence[str], switch: str = "sga") -> list[tuple[str, str]]:
    """``(base, base+switch)`` label pairs of :func:`switch_runs`."""
    return [(base, f"{base}+{switch}") for base in bases]
