"""Evaluation runs of the study: what one run is, grids of runs, and their cached evaluation.

Each run's RESULT.json is cached under ``output_dir/runs/<preset>/<dataset>-<fingerprint>.json`` (the run's
:func:`~alignclip.evaluation.evaluate.run_fingerprint`: configuration, dataset, limit, classes, code) and reused when
its data fingerprint matches too, so rerunning a notebook, or another notebook with the same run under another label,
evaluates nothing twice, and runs of other settings never overwrite each other. With the environment variable
``ALIGNCLIP_CACHE_ONLY=1`` (``alignclip notebook run-all --cache-only``) a missing result is an error instead of an
evaluation: the notebooks are rendered from results computed by ``alignclip study run-jobs``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm  # text bars on stderr (tqdm.auto warns in notebooks without ipywidgets)

from alignclip.data import dataset_fingerprint, load_manifest, open_dataset
from alignclip.errors import ConfigError
from alignclip.evaluation.bootstrap import bootstrap_miou
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.evaluation.evaluate import cached_result, evaluate, run_fingerprint
from alignclip.study.context import StudyContext

__all__ = [
    "CACHE_ONLY_ENV",
    "Run",
    "cache_only",
    "missing_result",
    "run_fingerprint_of",
    "run_slug",
    "run_result",
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


def run_slug(text: str) -> str:
    """A label or preset as a folder name (letters, digits and ``_.+-``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


#: Environment variable: when "1", a run without a cached result raises instead of evaluating.
CACHE_ONLY_ENV = "ALIGNCLIP_CACHE_ONLY"


def cache_only() -> bool:
    """Whether the study may only read cached results (:data:`CACHE_ONLY_ENV` is ``1``)."""
    return os.environ.get(CACHE_ONLY_ENV, "") == "1"


def run_fingerprint_of(ctx: StudyContext, run: Run) -> str:
    """The run's :func:`~alignclip.evaluation.evaluate.run_fingerprint` in this study's profile."""
    cfg = ctx.config(run.preset, run.dataset, **run.overrides)
    return run_fingerprint(cfg, run.dataset, None, ctx.limit, load_manifest(run.dataset).classes)


def result_path(ctx: StudyContext, run: Run, fingerprint: str | None = None) -> Path:
    """Where the run's RESULT.json is cached: ``output_dir/runs/<preset>/<dataset>-<fingerprint>.json``."""
    fingerprint = fingerprint or run_fingerprint_of(ctx, run)
    return ctx.output_dir / "runs" / run_slug(run.preset) / f"{run.dataset}-{fingerprint}.json"


def missing_result(what: str, out: Path) -> ConfigError:
    return ConfigError(
        f"{what}: no cached result at {out} and {CACHE_ONLY_ENV}=1 forbids evaluating; run its job first "
        f"(`alignclip study jobs ... --out jobs.jsonl` then `alignclip study run-jobs jobs.jsonl`) with the same "
        f"parameters, or render without --cache-only"
    )


def run_result(ctx: StudyContext, run: Run, cfg=None) -> tuple[dict[str, Any], Path]:
    """The run's RESULT.json (cached, or evaluated now and cached atomically) and its path."""
    cfg = cfg if cfg is not None else ctx.config(run.preset, run.dataset, **run.overrides)
    manifest = load_manifest(run.dataset)
    fingerprint = run_fingerprint(cfg, run.dataset, None, ctx.limit, manifest.classes)
    out = result_path(ctx, run, fingerprint)
    root = ctx.dataset_root(run.dataset)
    result = cached_result(out, fingerprint, study_data_fingerprint(run.dataset, root, ctx.limit))
    if result is None:
        if cache_only():
            raise missing_result(f"run {run.label} ({run.preset} on {run.dataset})", out)
        # force only replaces a stale file (other data); an interrupted run resumes from its partial state
        result = evaluate(cfg, run.dataset, root, out, limit=ctx.limit, force=out.exists(), progress=False)
    return result, out


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
        result, out = run_result(ctx, run, cfg)
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
