"""Paper-vs-ours tables and figures of the study's runs (Tables 2, 3, 10, 12, 13).

:func:`paper_comparison` puts runs beside paper rows dataset by dataset (with our bootstrap intervals),
:func:`main_table` lays out Table 2 in the paper's row order, :func:`summary_lines` gives the deterministic text the
notebooks' regression checks compare, and :func:`plot_paper_vs_ours` draws the comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from alignclip.errors import InputError
from alignclip.kinds import combined_kind, labelled
from alignclip.paper.names import PACKAGE_DATASET, PAPER_METHOD, paper_dataset, paper_method
from alignclip.paper.tables import compare_with_paper, load_table

__all__ = ["main_table", "paper_comparison", "plot_paper_vs_ours", "summary_lines"]


def paper_comparison(
    results: pd.DataFrame, table: str, methods: Mapping[str, str] | Sequence[str], variant: str | float | None = None
) -> pd.DataFrame:
    """Paper vs ours for every label of ``results`` given in ``methods``, beside the paper's row of it.

    Args:
        results: :func:`alignclip.study.runs.evaluate_runs` rows.
        table: the paper table (e.g. ``"table2_main"``).
        methods: our labels, each compared with the paper row named by :data:`alignclip.paper.names.PAPER_METHOD`
            (``["segearth-ov", "alignclip-d"]``), or ``{our label: paper row}`` where the label is not a preset.
        variant: passed to :func:`alignclip.paper.tables.paper_row` (Tables 6-9).
    """
    method_map = dict(methods) if isinstance(methods, Mapping) else {m: paper_method(m) for m in methods}
    frames = []
    for label, paper_row_name in method_map.items():
        sub = results[results["label"] == label]
        if sub.empty:
            continue
        kind = combined_kind(sub["kind"])
        ours = {paper_dataset(d): float(m) for d, m in zip(sub["dataset"], sub["miou"], strict=True)}
        cmp = compare_with_paper(ours, table=table, method=paper_row_name, kind=kind, variant=variant)
        ci = {
            paper_dataset(d): (lo, hi) for d, lo, hi in zip(sub["dataset"], sub["ci_low"], sub["ci_high"], strict=True)
        }
        cmp["ci_low"] = [ci.get(d, (None, None))[0] for d in cmp["dataset"]]
        cmp["ci_high"] = [ci.get(d, (None, None))[1] for d in cmp["dataset"]]
        cmp.insert(0, "method", label)
        frames.append(cmp)
    if not frames:
        raise InputError(f"none of {list(method_map)} is in the results ({sorted(set(results['label']))})")
    return pd.concat(frames, ignore_index=True)


def plot_paper_vs_ours(comparison: pd.DataFrame, title: str = "", ncols: int = 4):
    """Small multiples, one panel per method (at most ``ncols`` per row): paper vs ours per dataset, ours with its
    95 % bootstrap interval; panels titled with the paper's method names, one shared y-axis."""
    import math

    import matplotlib.pyplot as plt
    import seaborn as sns

    df = comparison[comparison["dataset"] != "Avg."]
    methods = list(dict.fromkeys(df["method"]))
    n_data = len(df["dataset"].unique())
    ncols = max(1, min(ncols, len(methods)))
    nrows = math.ceil(len(methods) / ncols)
    width = max(2.6, 0.42 * n_data + 0.8)  # per panel: room for the dataset labels
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 2.9 * nrows + 0.6), squeeze=False, sharey=True)
    handles, labels = [], []
    for ax, method in zip(axes.flat, methods, strict=False):
        sub = df[df["method"] == method]
        long = sub.melt(id_vars=["dataset"], value_vars=["paper", "ours"], var_name="source", value_name="mIoU")
        sns.barplot(data=long, x="dataset", y="mIoU", hue="source", ax=ax, palette=["#9e9e9e", "#1f77b4"])
        xs = range(len(sub))
        lo = (sub["ours"] - sub["ci_low"].astype(float)).clip(lower=0)
        hi = (sub["ci_high"].astype(float) - sub["ours"]).clip(lower=0)
        ax.errorbar([x + 0.2 for x in xs], sub["ours"], yerr=[lo, hi], fmt="none", ecolor="black", capsize=2)
        ax.set_title(paper_method(method))
        ax.set_xticks(list(xs), list(sub["dataset"]), rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("")
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    for ax in axes.flat[len(methods) :]:
        ax.set_visible(False)
    fig.suptitle(labelled(title or "paper vs ours", df["kind"]))
    fig.legend(handles, labels, loc="upper right", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def main_table(
    results: pd.DataFrame, table: str = "table2_main", label_to_paper: dict[str, str] | None = None
) -> pd.DataFrame:
    """Wide table in the paper's row order: ``paper`` and ``ours`` mIoU per dataset and average.

    ``status``: ``published`` on the paper's rows, the run's kind on ours; a paper row with no run of ours keeps the
    paper's numbers, marked ``reported only``.
    """
    label_to_paper = label_to_paper or PAPER_METHOD
    paper_to_label = {v: k for k, v in label_to_paper.items()}
    paper = load_table(table)
    datasets = [c for c in paper.columns if c in PACKAGE_DATASET]
    rows = []
    for _, prow in paper.iterrows():
        method = prow["method"]
        label = paper_to_label.get(method)
        sub = results[results["label"] == label] if label else results.iloc[0:0]
        ours = {paper_dataset(d): m for d, m in zip(sub["dataset"], sub["miou"], strict=True)}
        for source in ("paper", "ours"):
            if source == "ours" and sub.empty:
                continue
            # the paper's row is what it published; ours carries the run's kind (reproduction or pipeline check)
            status = "reported only" if sub.empty else "published" if source == "paper" else combined_kind(sub["kind"])
            values = {d: (float(prow[d]) if source == "paper" else ours.get(d)) for d in datasets}
            present = [v for v in values.values() if v is not None]
            values["Avg"] = (
                float(prow["Avg"])
                if source == "paper"
                else (sum(present) / len(present) if len(present) == len(datasets) else None)
            )
            rows.append({"method": method, "source": source, "status": status, **values})
    return pd.DataFrame(rows)


def summary_lines(results: pd.DataFrame, digits: int = 2) -> str:
    """Deterministic text of every run's mIoU (for the notebooks' regression-checked cells)."""
    lines = []
    for _, r in results.sort_values(["label", "dataset"]).iterrows():
        lines.append(
            f"{r['label']:<24s} {r['dataset']:<18s} mIoU {r['miou']:.{digits}f} "
            f"[{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}] n={r['n_images']} {r['kind']}"
        )
    return "\n".join(lines)
