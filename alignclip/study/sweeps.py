"""Hyper-parameter sweeps, ablation and plug-in runs for the notebooks 04, 05, 06 and 08.

Every run is an :class:`alignclip.study.context.Run` labelled by its preset (``alignclip-d``), plus the
swept setting when it differs from the dataset's default (``alignclip-d alpha=0.5``). A run equal to
a preset's default is therefore stored once, under ``output_dir/runs/<preset>/``, and shared by
every notebook: Table 3's ``alignclip-d`` runs are the Table 6 points of the α, β and K_c sweeps
and the n = 1 point of the top-n sweep.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import pandas as pd
import torch

from alignclip.errors import ConfigError, InputError
from alignclip.kinds import labelled
from alignclip.paper.names import VARIANT_ROWS, paper_dataset
from alignclip.paper.tables import paper_row
from alignclip.pipeline.config import SegmentorConfig
from alignclip.study.context import StudyContext
from alignclip.study.runs import Run, evaluate_runs, grid_runs

__all__ = [
    "PARAM_LABELS",
    "SWEEP_TABLES",
    "describe_runs",
    "evaluate_sweep",
    "plot_sweep",
    "plugin_claims",
    "plugin_label",
    "plugin_runs",
    "run_sweep",
    "settings_table",
    "smoke_threads",
    "sweep_comparison",
    "sweep_label",
    "sweep_runs",
    "sweep_summary",
    "sweep_table",
]

#: Swept parameter -> the paper's appendix table (Tables 7-9; Table 4 is their DINO rows on four
#: datasets).
SWEEP_TABLES = {
    "alpha": "table7_alpha_sensitivity",
    "beta": "table8_beta_sensitivity",
    "n_clusters": "table9_clusters_sensitivity",
}
#: Axis labels of the swept fields.
PARAM_LABELS = {
    "alpha": "α (Eq. 7)",
    "beta": "β (Eq. 14)",
    "n_clusters": "K_c (Eq. 9)",
    "top_n": "prototypes n",
}


# --------------------------------------------------------------------------------------------- runs
def sweep_label(preset: str, param: str, value: Any) -> str:
    """Label of a sweep point away from the default: ``"alignclip-d alpha=0.5"``."""
    return f"{preset} {param}={value:g}" if isinstance(value, (int, float)) else f"{preset} {param}={value}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), abs_tol=1e-9)
    return a == b


def _sweep_points(
    ctx: StudyContext, presets: Sequence[str], param: str, values: Sequence[Any]
) -> list[tuple[Run, Any]]:
    names = {f.name for f in fields(SegmentorConfig)}
    if param not in names:
        raise ConfigError(f"cannot sweep {param!r}: not a config field; valid fields: {', '.join(sorted(names))}")
    if not values:
        raise InputError(f"no values to sweep for {param}; pass a list such as [0.1, 0.2, 0.3]")
    points = []
    for preset in presets:
        for dataset in ctx.datasets:
            default = getattr(ctx.config(preset, dataset), param)
            for value in values:
                (run,) = (
                    grid_runs([preset], [dataset])
                    if _same(value, default)
                    else grid_runs([preset], [dataset], {param: value}, sweep_label(preset, param, value))
                )
                points.append((run, value))
    return points


def sweep_runs(ctx: StudyContext, presets: Sequence[str], param: str, values: Sequence[Any]) -> list[Run]:
    """One run per preset, dataset (``ctx.datasets``) and value of ``param``; other settings stay at
    the dataset's defaults (Table 6's α and β, K_c = 3, n = 1).

    A value equal to the dataset's default gives the preset's plain run (label = preset, no
    overrides), so it is evaluated once and shared with the other sweeps and notebooks.

    Raises:
        ConfigError: ``param`` is not a :class:`~alignclip.pipeline.config.SegmentorConfig` field.
        InputError: ``values`` is empty.
    """
    return [run for run, _ in _sweep_points(ctx, presets, param, values)]


def plugin_label(preset: str, alpha: float = 0.1) -> str:
    """Label of ``PRESET+sga`` at a fixed α: ``"clip+sga alpha=0.1"``."""
    return sweep_label(f"{preset}+sga", "alpha", alpha)


def plugin_runs(ctx: StudyContext, presets: Sequence[str], alpha: float = 0.1) -> list[Run]:
    """``PRESET`` and ``PRESET+sga`` with α = ``alpha`` on every dataset.

    Paper A.5 sets α = 0.1 for every plug-in.
    """
    return [
        run
        for p in presets
        for d in ctx.datasets
        for run in grid_runs([p], [d]) + grid_runs([f"{p}+sga"], [d], {"alpha": alpha}, plugin_label(p, alpha))
    ]


def plugin_claims(presets: Sequence[str], alpha: float = 0.1) -> list[tuple[str, str]]:
    """``(PRESET, PRESET+sga)`` label pairs for :func:`alignclip.study.gains.check_claims`."""
    return [(p, plugin_label(p, alpha)) for p in presets]


#: Fields a run ignores when its module is off (shown as "–" by :func:`describe_runs`).
_MODULE_FIELDS = {
    "sga": ("alpha", "top_n", "sga_source", "sga_scope", "sga_cls_term"),
    "cce": (
        "beta",
        "n_clusters",
        "vfm",
        "vfm_pretrained",
        "vfm_resolution",
        "affinity",
        "grid_align",
        "kmeans_iters",
        "kmeans_init",
    ),
}


def _settings(ctx: StudyContext, runs: Sequence[Run], columns: Sequence[str]) -> pd.DataFrame:
    rows = {}
    for run in runs:
        cfg = ctx.config(run.preset, run.dataset, **run.overrides).to_dict()
        unused = {f for module, names in _MODULE_FIELDS.items() if not cfg[module] for f in names}
        rows[(run.label, run.dataset)] = {
            "label": run.label,
            "dataset": run.dataset,
            **{c: "–" if c in unused else cfg[c] for c in columns},
        }
    return pd.DataFrame(list(rows.values()))


def describe_runs(
    ctx: StudyContext,
    runs: Sequence[Run],
    columns: Sequence[str] = (
        "sga",
        "cce",
        "templates",
        "upsampler",
        "vfm",
        "alpha",
        "beta",
        "n_clusters",
        "top_n",
    ),
) -> pd.DataFrame:
    """The settings that tell the runs apart: one row per label, one column per field.

    A field that differs between datasets (α and β follow Table 6) reads ``"per dataset"`` (see
    :func:`settings_table` for its values); a field of a module the run has switched off reads
    ``"–"``.
    """
    df = _settings(ctx, runs, columns)
    rows = []
    for label, g in df.groupby("label", sort=False):
        rows.append(
            {
                "label": label,
                **{c: (g[c].iloc[0] if g[c].astype(str).nunique() == 1 else "per dataset") for c in columns},
            }
        )
    return pd.DataFrame(rows).set_index("label")


def settings_table(ctx: StudyContext, runs: Sequence[Run], field: str) -> pd.DataFrame:
    """One config field of every run: rows = labels, columns = datasets (paper names)."""
    df = _settings(ctx, runs, [field])
    wide = df.pivot(index="label", columns="dataset", values=field)
    wide = wide.loc[list(dict.fromkeys(df["label"])), list(dict.fromkeys(df["dataset"]))]
    wide.columns = [paper_dataset(c) for c in wide.columns]
    wide.columns.name = field
    return wide


# --------------------------------------------------------------------------------------- evaluation
@contextmanager
def smoke_threads(ctx: StudyContext) -> Iterator[None]:
    """One torch thread while evaluating in the smoke profile (restored afterwards).

    The smoke models are tiny: thread hand-offs cost more than the maths, 3-10x on a busy 2-core
    machine. The full profile keeps torch's default.
    """
    threads = torch.get_num_threads()
    if ctx.is_pipeline_check:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def evaluate_sweep(ctx: StudyContext, runs: Sequence[Run], progress: bool | None = None) -> pd.DataFrame:
    """:func:`alignclip.study.context.evaluate_runs` under :func:`smoke_threads` (same cache, same rows)."""
    with smoke_threads(ctx):
        return evaluate_runs(ctx, runs, progress=progress)


def run_sweep(
    ctx: StudyContext,
    presets: Sequence[str],
    param: str,
    values: Sequence[Any],
    progress: bool | None = None,
) -> pd.DataFrame:
    """Evaluate a sweep (see :func:`sweep_runs`).

    Returns:
        :func:`alignclip.study.context.evaluate_runs`' rows plus ``variant`` (the preset), ``param`` and
        ``value``.
    """
    points = _sweep_points(ctx, presets, param, values)
    res = evaluate_sweep(ctx, [run for run, _ in points], progress=progress)
    res.insert(0, "value", [value for _, value in points])
    res.insert(0, "param", param)
    res.insert(0, "variant", [run.preset for run, _ in points])
    return res


# ------------------------------------------------------------------------------------- sweep tables
def _paper_sweep_value(variant: str, param: str, value: Any, dataset: str) -> float:
    if param not in SWEEP_TABLES or variant not in VARIANT_ROWS:
        return float("nan")
    try:
        row = paper_row(SWEEP_TABLES[param], VARIANT_ROWS[variant], value)
    except ConfigError:  # a value the paper did not sweep
        return float("nan")
    return row.get(paper_dataset(dataset), float("nan"))


def sweep_comparison(*results: pd.DataFrame) -> pd.DataFrame:
    """Long table ``variant, param, value, dataset, paper, ours, delta, ci_low, ci_high, kind`` of
    sweeps.

    Args:
        results: one or more frames of :func:`run_sweep`.

    ``paper`` is the matching cell of Tables 7-9 (NaN where the paper has none, e.g. top-n of Fig.
    4).
    """
    rows = []
    for _, r in pd.concat(results, ignore_index=True).iterrows():
        paper = _paper_sweep_value(r["variant"], r["param"], r["value"], r["dataset"])
        rows.append(
            dict(
                variant=r["variant"],
                param=r["param"],
                value=r["value"],
                dataset=r["dataset"],
                paper=paper,
                ours=r["miou"],
                delta=r["miou"] - paper,
                ci_low=r["ci_low"],
                ci_high=r["ci_high"],
                kind=r["kind"],
            )
        )
    return pd.DataFrame(rows)


def sweep_table(
    comparison: pd.DataFrame,
    column: str = "delta",
    datasets: Sequence[str] | None = None,
    digits: int = 2,
) -> pd.DataFrame:
    """Wide table: rows ``(variant, param, value)``, one column per dataset (paper names) and
    ``Avg``.

    Args:
        column: ``delta`` (ours - paper), ``ours`` or ``paper``.
        datasets: keep only these (e.g. :data:`TABLE4_COLUMNS` for Table 4).
    """
    df = comparison if datasets is None else comparison[comparison["dataset"].isin(list(datasets))]
    order = list(dict.fromkeys(df["dataset"]))
    wide = df.set_index(["variant", "param", "value", "dataset"])[column].unstack("dataset").sort_index()
    wide = wide[order]
    wide["Avg"] = wide.mean(axis=1, skipna=False)
    wide.columns = [paper_dataset(c) for c in wide.columns]
    wide.index = wide.index.set_levels(wide.index.levels[2].map(lambda v: f"{v:g}"), level=2)
    return wide.round(digits)


def _best(values: pd.Series, scores: pd.Series, tol: float) -> str:
    if scores.isna().all():
        return "n/a"
    top = scores.max()
    return "/".join(f"{v:g}" for v, s in zip(values, scores, strict=True) if s >= top - tol)


def sweep_summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per variant, parameter and dataset: best value(s) and range (max - min) of the paper's and
    ours.

    The paper's best values are those within 0.05 of its maximum (printed to one decimal, ties
    kept); ours are the exact maximum.
    """
    rows = []
    for (variant, param, dataset), g in comparison.groupby(["variant", "param", "dataset"], sort=False):
        g = g.sort_values("value")
        rows.append(
            dict(
                variant=variant,
                param=param,
                dataset=paper_dataset(dataset),
                paper_best=_best(g["value"], g["paper"], 0.05),
                ours_best=_best(g["value"], g["ours"], 0),
                paper_range=g["paper"].max() - g["paper"].min(),
                ours_range=g["ours"].max() - g["ours"].min(),
                kind=g["kind"].iloc[0],
            )
        )
    return pd.DataFrame(rows)


def plot_sweep(comparison: pd.DataFrame, title: str = "", ncols: int = 4):
    """One panel per dataset: mIoU against the swept value.

    Ours with 95 % bootstrap bars, the paper's dashed (where Tables 7-9 have the value).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    datasets = list(dict.fromkeys(comparison["dataset"]))
    variants = list(dict.fromkeys(comparison["variant"]))
    colors = dict(zip(variants, sns.color_palette("deep", len(variants)), strict=True))
    ncols = min(ncols, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets, strict=False):
        sub = comparison[comparison["dataset"] == dataset]
        for variant in variants:
            v = sub[sub["variant"] == variant].sort_values("value")
            yerr = [
                (v["ours"] - v["ci_low"]).clip(lower=0),
                (v["ci_high"] - v["ours"]).clip(lower=0),
            ]
            ax.errorbar(
                v["value"],
                v["ours"],
                yerr=yerr,
                color=colors[variant],
                marker="o",
                capsize=3,
                label=f"{variant} (ours, 95% CI)",
            )
            if v["paper"].notna().any():
                sns.lineplot(
                    x=v["value"],
                    y=v["paper"],
                    ax=ax,
                    color=colors[variant],
                    linestyle="--",
                    marker="X",
                    label=f"{variant} (paper)",
                )
        ax.set_title(paper_dataset(dataset))
        param = str(sub["param"].iloc[0])
        ax.set_xlabel(PARAM_LABELS.get(param, param))
        ax.set_ylabel("mIoU (%)")
        ax.set_xticks(sorted(sub["value"].unique()))
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in axes.flat[len(datasets) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.suptitle(labelled(title or "sweep", comparison["kind"]))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
