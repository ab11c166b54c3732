"""Tables and figures of the gains of :mod:`alignclip.study.gains` beside the paper's (notebooks 04-08, 10).

* :func:`deltas_vs_paper` - each of our differences beside the paper's on the same dataset (Tables 12-13);
* :func:`deltas_beside_paper`, :func:`results_beside_paper`, :func:`wide_comparison` - wide tables;
* :func:`rounded` - stable printed numbers;
* :func:`plot_deltas`, :func:`plot_gains`, :func:`plot_plugin` - seaborn bar charts with our 95 % intervals.

Every figure of a run that is not a reproduction says ``PIPELINE CHECK (random weights)`` in its title.
"""

from __future__ import annotations

import pandas as pd

from alignclip.kinds import PIPELINE_CHECK, REPRODUCTION, combined_kind, labelled
from alignclip.paper.names import PACKAGE_DATASET, paper_dataset, paper_method
from alignclip.paper.tables import load_table
from alignclip.study.gains import AVG

__all__ = [
    "deltas_beside_paper",
    "deltas_vs_paper",
    "plot_deltas",
    "plot_gains",
    "plot_plugin",
    "results_beside_paper",
    "rounded",
    "wide_comparison",
]


def deltas_vs_paper(ours: pd.DataFrame, paper: pd.DataFrame, same_method: bool = False) -> pd.DataFrame:
    """Each of our differences beside the paper's on the same dataset (the claim check in one table).

    When ``paper`` holds several comparisons (Table 12: SGA in three methods), ``paper_delta`` is their mean per
    dataset and ``paper_range`` their min..max; with ``same_method`` each of our comparisons is set beside the
    paper's of the same baseline method (our ``sc-clip`` beside its ``SC-CLIP``) and others are left out.

    Args:
        ours: :func:`alignclip.study.gains.paired_deltas` output.
        paper: :func:`alignclip.study.gains.paper_deltas` output.
        same_method: compare method by method instead of with the paper's mean.

    Returns:
        ``comparison, dataset, paper_delta, paper_range, delta, ci_low, ci_high, paper_in_ci, verdict``.
    """
    rows = []
    for _, r in ours.iterrows():
        ref_rows = paper[paper["baseline"] == paper_method(r["baseline"])] if same_method else paper
        stats = ref_rows.groupby("dataset", sort=False)["delta"].agg(["mean", "min", "max"])
        if r["dataset"] not in stats.index:
            continue
        ref = stats.loc[r["dataset"]]
        rows.append(
            dict(
                comparison=f"{r['method']} - {r['baseline']}",
                dataset=paper_dataset(r["dataset"]),
                paper_delta=float(ref["mean"]),
                paper_range=f"{ref['min']:+.1f}..{ref['max']:+.1f}" if ref["min"] != ref["max"] else "",
                delta=r["delta"],
                ci_low=r["ci_low"],
                ci_high=r["ci_high"],
                paper_in_ci=bool(r["ci_low"] <= ref["mean"] <= r["ci_high"]),
                verdict=r["verdict"],
            )
        )
    return pd.DataFrame(rows)


def rounded(df: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """``df`` with its float columns rounded and ``-0.0`` shown as ``0.0`` (stable printed output)."""
    out = df.copy()
    for col in out.select_dtypes("float").columns:
        out[col] = out[col].round(digits) + 0.0
    return out


def _dataset_order(*frames: pd.DataFrame) -> list[str]:
    """Datasets of ``frames`` in the paper's column order, then the others alphabetically, then ``Avg.``."""
    seen = [d for f in frames for d in f["dataset"]]
    ordered = [d for d in PACKAGE_DATASET.values() if d in seen]
    return ordered + sorted({d for d in seen if d not in ordered and d != AVG}) + ([AVG] if AVG in seen else [])


def deltas_beside_paper(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Wide table of differences: one row per comparison (paper's, then ours), one column per dataset + Avg.

    Args:
        ours: :func:`alignclip.study.gains.paired_deltas` output.
        paper: :func:`alignclip.study.gains.paper_deltas` output.

    Returns:
        ``source, comparison, <paper dataset names...>, Avg.`` with the differences in mIoU points (NaN where a
        comparison has no run on a dataset).
    """
    order = _dataset_order(ours, paper)
    frames = []
    for source, df in (("paper", paper), ("ours", ours)):
        d = df.assign(source=source, comparison=df["method"] + " - " + df["baseline"])
        wide = d.pivot_table(index=["source", "comparison"], columns="dataset", values="delta", sort=False)
        frames.append(wide.reindex(columns=order))
    out = pd.concat(frames).reset_index()
    out.columns.name = None
    return out.rename(columns={d: paper_dataset(d) for d in order})


def results_beside_paper(
    results: pd.DataFrame, table: str, label_to_paper: dict[str, str] | None = None
) -> pd.DataFrame:
    """Wide mIoU table: every paper row (``reported only`` unless one of our labels maps to it), then ours.

    Args:
        results: :func:`alignclip.study.context.evaluate_runs` output.
        table: paper table name (e.g. ``"table12_natural_images"``).
        label_to_paper: our label -> the paper row it reproduces (none by default).

    Returns:
        ``method, source, status, <paper dataset names...>, Avg`` (Avg only when every dataset is present).
    """
    paper = load_table(table)
    datasets = [c for c in paper.columns if c in PACKAGE_DATASET]
    mapped = {v: k for k, v in (label_to_paper or {}).items()}
    rows = []
    for _, prow in paper.iterrows():
        status = "reported only" if prow["method"] not in mapped else "reproduced below"
        rows.append(
            {
                "method": prow["method"],
                "source": "paper",
                "status": status,
                **{d: float(prow[d]) for d in datasets},
                "Avg": float(prow["Avg"]),
            }
        )
    for label in dict.fromkeys(results["label"]):
        sub = results[results["label"] == label]
        ours = {paper_dataset(d): float(m) for d, m in zip(sub["dataset"], sub["miou"], strict=True)}
        status = combined_kind(sub["kind"])
        values = {d: ours.get(d) for d in datasets}
        present = [v for v in values.values() if v is not None]
        avg = sum(present) / len(present) if len(present) == len(datasets) else None
        rows.append(
            {
                "method": (label_to_paper or {}).get(label, label),
                "source": "ours",
                "status": status,
                **values,
                "Avg": avg,
            }
        )
    return pd.DataFrame(rows)


def wide_comparison(comparison: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """:func:`alignclip.study.context.paper_comparison` as a wide table.

    Per method the rows ``paper``, ``ours``, ``ci_low``, ``ci_high`` and ``delta``; one column per
    dataset (paper names) and ``Avg.``.
    """
    long = comparison.melt(
        id_vars=["method", "dataset"], value_vars=["paper", "ours", "ci_low", "ci_high", "delta"], var_name="row"
    )
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    wide = long.pivot_table(
        index=["method", "row"], columns="dataset", values="value", sort=False, dropna=False, aggfunc="first"
    )
    return wide[list(dict.fromkeys(comparison["dataset"]))].round(digits)


# ------------------------------------------------------------------------------------- figures
def _error_bars(ax, xs, frame: pd.DataFrame, value: str = "delta", horizontal: bool = False, **kw) -> None:
    """``frame``'s ``[ci_low, ci_high]`` around ``frame[value]`` at positions ``xs`` (black caps)."""
    err = [(frame[value] - frame["ci_low"]).clip(lower=0), (frame["ci_high"] - frame[value]).clip(lower=0)]
    if horizontal:
        ax.errorbar(frame[value], xs, xerr=err, fmt="none", ecolor="black", capsize=3, **kw)
    else:
        ax.errorbar(xs, frame[value], yerr=err, fmt="none", ecolor="black", capsize=3, **kw)


def plot_deltas(ours: pd.DataFrame, paper: pd.DataFrame, title: str = "", claimed: str = ""):
    """Bars of every comparison's difference per dataset (paper's grey, ours coloured with 95 % intervals).

    Args:
        ours: :func:`alignclip.study.gains.paired_deltas` output.
        paper: :func:`alignclip.study.gains.paper_deltas` output.
        title: figure title.
        claimed: the paper's claim, printed under the title.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = _dataset_order(ours, paper)
    names = [paper_dataset(d) for d in order]
    long = pd.concat([paper.assign(source="paper"), ours.assign(source="ours")], ignore_index=True)
    long["comparison"] = long["source"] + ": " + long["method"] + " - " + long["baseline"]
    long["dataset_name"] = [paper_dataset(d) for d in long["dataset"]]
    hue_order = list(dict.fromkeys(long["comparison"]))
    n_paper = len(dict.fromkeys(paper["method"] + paper["baseline"]))
    colours = list(sns.color_palette("Greys", n_paper + 2)[2:]) + list(
        sns.color_palette("tab10", len(hue_order) - n_paper)
    )
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(order) + 2.5), 4.4))
    sns.barplot(
        data=long,
        x="dataset_name",
        y="delta",
        hue="comparison",
        order=names,
        hue_order=hue_order,
        palette=colours,
        ax=ax,
        errorbar=None,
    )
    width = 0.8 / len(hue_order)
    for j, comp in enumerate(hue_order):  # our 95 % intervals at the centre of our bars
        sub = long[(long["comparison"] == comp) & long["source"].eq("ours")]
        if not sub.empty:
            _error_bars(ax, [names.index(d) - 0.4 + (j + 0.5) * width for d in sub["dataset_name"]], sub, linewidth=1)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("mIoU difference (points)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(
        labelled(title or "paired differences", ours["kind"]) + (f"\nclaimed: {claimed}" if claimed else ""),
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot_gains(claims: pd.DataFrame, paper: pd.DataFrame | None = None, hue: str = "method", title: str = ""):
    """Bars of the per-dataset gains of :func:`alignclip.study.context.check_claims`, 95 % intervals.

    Args:
        claims: ``baseline, method, dataset, delta, ci_low, ci_high, verdict`` rows
            (:func:`alignclip.study.context.check_claims`, :func:`alignclip.study.gains.sweep_claims`).
        paper: optional ``baseline, method, dataset, paper_delta`` (:func:`alignclip.study.gains.paper_gains`),
            drawn as black diamonds on the matching bars.
        hue: the column telling the bars of one dataset apart (``method``; ``baseline`` for a sweep).
        title: figure title.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = claims.copy()
    df["dataset_name"] = [paper_dataset(d) for d in df["dataset"]]
    order = [paper_dataset(d) for d in _dataset_order(df)]
    hues = list(dict.fromkeys(claims[hue]))
    if paper is not None:
        df = df.merge(paper, on=["baseline", "method", "dataset"], how="left")
    fig, ax = plt.subplots(figsize=(min(13.0, max(6.0, 0.9 * len(order) * max(1.0, len(hues) ** 0.5) + 2)), 4.0))
    sns.barplot(data=df, x="dataset_name", y="delta", hue=hue, order=order, hue_order=hues, ax=ax, palette="deep")
    for container, level in zip(ax.containers, hues, strict=False):
        sub = df[df[hue] == level].set_index("dataset_name").reindex(order)
        xs = [bar.get_x() + bar.get_width() / 2 for bar in container]
        if len(xs) != len(order):  # a hue level missing on some dataset: skip its interval marks
            continue
        _error_bars(ax, xs, sub)
        if paper is not None:
            ax.scatter(
                xs,
                sub["paper_delta"],
                marker="D",
                color="black",
                s=18,
                zorder=3,
                label="paper" if level == hues[0] else None,
            )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("mIoU gain (points, 95% CI)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(
        labelled(title or "gains", PIPELINE_CHECK if PIPELINE_CHECK in set(claims["verdict"]) else REPRODUCTION)
    )
    fig.tight_layout()
    return fig


def plot_plugin(table: pd.DataFrame, title: str = ""):
    """Average gain of SGA per method: ours (95 % interval) and, where Table 10 has the method, its gain beside.

    Args:
        table: :func:`alignclip.study.gains.plugin_table` output.
        title: figure title.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    names = [paper_method(m) for m in table["method"]]
    run = (table["status"] != "reported only").to_numpy()
    y = np.arange(len(table))
    has_paper = table["paper_gain"].notna().to_numpy()
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(table) + 1.4))
    h = 0.38
    ours = table[run]
    ax.barh(y[run] - h / 2 * has_paper[run], ours["gain"], height=h, color="#1f77b4", label="ours (95 % CI)")
    _error_bars(ax, y[run] - h / 2 * has_paper[run], ours, value="gain", horizontal=True)
    if has_paper.any():
        offset = np.where(run, h / 2, 0.0)[has_paper]
        ax.barh(
            y[has_paper] + offset, table["paper_gain"][has_paper], height=h, color="#9e9e9e", label="paper (Table 10)"
        )
    ax.set_yticks(y, [n + ("" if r else " (reported only)") for n, r in zip(names, run, strict=True)])
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("average mIoU gain of +SGA (points)")
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 1.2 / (len(table) + 3)), ncol=2)
    ax.set_title(labelled(title or "SGA as a plug-in", ours["status"]))
    fig.tight_layout()
    return fig
