"""Paired differences of a method switch (``+SGA``, ``+denseCRF``) beside the paper's (notebooks 07 and 10).

The paper reports these effects as differences between two printed rows (Table 12: ``X+SGA - X`` on natural
images, claimed NEGATIVE; Table 13: ``+denseCRF - AlignCLIP-D``, claimed positive, +0.9 on average). Here:

* :func:`paired_deltas` - our difference per dataset with its paired 95 % bootstrap interval over images
  (:func:`alignclip.stats.paired_bootstrap`), the verdict on the claimed sign (:func:`alignclip.stats.classify_gain`),
  and an ``Avg.`` row: the mean difference over datasets with a stratified paired bootstrap (each dataset's
  images resampled independently, the per-dataset differences averaged per resample);
* :func:`paper_deltas` - the paper's differences between two printed rows (its ``Avg`` column included);
* :func:`deltas_beside_paper`, :func:`results_beside_paper` - wide tables for the notebooks;
* :func:`plot_deltas` - a seaborn bar chart of both, with our intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError
from .evaluate import load_result
from .metrics import ConfusionAccumulator
from .paper import DATASET_KEYS, load_table, paper_row
from .stats import classify_gain, paired_bootstrap, percentile_interval, resampled_mious
from .study import Run

AVG = "Avg."
PAPER_NAME = {v: k for k, v in DATASET_KEYS.items()}
#: Table 12's comparisons (SGA plugged into three natural-image methods that this package does not implement).
TABLE12_PAIRS = [("SC-CLIP", "SC-CLIP+SGA"), ("Trident", "Trident+SGA"), ("CorrCLIP", "CorrCLIP+SGA")]
#: Table 13's comparison.
TABLE13_PAIRS = [("AlignCLIP-D", "AlignCLIP-D+denseCRF")]


def switch_runs(bases: Sequence[str], datasets: Sequence[str], switch: str = "sga",
                overrides: dict[str, Any] | None = None) -> list[Run]:
    """Runs of every base preset and of ``base+switch`` on every dataset.

    Args:
        bases: preset names (e.g. ``["segearth-ov", "sclip"]``).
        datasets: dataset names.
        switch: the module switched on (``sga`` or ``cce``).
        overrides: config overrides of the switched runs only (e.g. ``{"alpha": 0.1}``).

    Returns:
        ``Run(base)`` then ``Run(base+switch)`` on every dataset, for every base (labels = preset names).
    """
    runs = []
    for base in bases:
        runs += [Run(base, base, d) for d in datasets]
        runs += [Run(f"{base}+{switch}", f"{base}+{switch}", d, dict(overrides or {})) for d in datasets]
    return runs


def switch_pairs(bases: Sequence[str], switch: str = "sga") -> list[tuple[str, str]]:
    """``(base, base+switch)`` label pairs of :func:`switch_runs`."""
    return [(base, f"{base}+{switch}") for base in bases]


def _per_image(path: str) -> tuple[dict[str, Any], list[str], np.ndarray]:
    result = load_result(path)
    ids, cms = ConfusionAccumulator.from_compact(result["per_image_confusion"]).per_image()
    return result, ids, cms


def _aligned(ids_a: list[str], ids_b: list[str], cms_b: np.ndarray, where: str) -> np.ndarray:
    """``cms_b`` reordered to ``ids_a`` (one line when the image sets differ)."""
    if sorted(ids_a) != sorted(ids_b):
        raise InputError(f"{where}: the two runs hold different images ({len(ids_a)} vs {len(ids_b)}); rerun both "
                         f"with the same limit on the same data")
    pos = {image_id: i for i, image_id in enumerate(ids_b)}
    return cms_b[[pos[i] for i in ids_a]]


def _verdict(low: float, high: float, claimed_sign: int, kind: str) -> str:
    if kind != "reproduction":
        return "pipeline check"
    if np.isnan(low) or np.isnan(high):
        return "not distinguishable from zero"
    return classify_gain((low, high), claimed_sign=claimed_sign)


def paired_deltas(results: pd.DataFrame, pairs: Sequence[tuple[str, str]], claimed_sign: int = 1,
                  n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """Our ``new - baseline`` mIoU difference per dataset and on average, with paired bootstrap intervals.

    Args:
        results: runs as returned by :func:`alignclip.study.evaluate_runs` (``label, dataset, path``).
        pairs: ``(baseline label, new label)`` pairs.
        claimed_sign: ``+1`` when the paper claims a gain, ``-1`` when it claims a drop.
        n_boot: bootstrap resamples.
        seed: seed of the resamples (per dataset as in ``check_claims``; dataset ``i`` of the average uses
            ``seed + i`` so the datasets are resampled independently).
        ci: coverage of the intervals.

    Returns:
        One row per pair and shared dataset, then one ``dataset == "Avg."`` row per pair: ``baseline, method,
        dataset, delta, ci_low, ci_high, p_better, n_images, kind, verdict`` (points of mIoU %). The verdict is
        ``classify_gain`` on the claimed sign, or ``"pipeline check"`` unless both runs are reproductions.
    """
    rows = []
    for base, new in pairs:
        a, b = results[results["label"] == base], results[results["label"] == new]
        shared = [d for d in a["dataset"] if d in set(b["dataset"])]
        if not shared:
            raise InputError(f"no dataset has both {base!r} and {new!r} in the results "
                             f"(labels: {sorted(set(results['label']))})")
        diffs, points, kinds, n_total = [], [], [], 0
        for i, dataset in enumerate(shared):
            ra, ids_a, cms_a = _per_image(a[a["dataset"] == dataset]["path"].iloc[0])
            rb, ids_b, cms_b = _per_image(b[b["dataset"] == dataset]["path"].iloc[0])
            cms_b = _aligned(ids_a, ids_b, cms_b, f"{base} vs {new} on {dataset}")
            cmp = paired_bootstrap(cms_a, cms_b, ids_a, ids_a, n_boot=n_boot, seed=seed, ci=ci)
            boot_a, boot_b = resampled_mious([cms_a, cms_b], n_boot, seed + i)
            diffs.append(boot_b - boot_a)
            points.append(cmp["delta"])
            kind = "reproduction" if ra["kind"] == rb["kind"] == "reproduction" else "pipeline-check"
            kinds.append(kind)
            n_total += cmp["n_images"]
            rows.append(dict(baseline=base, method=new, dataset=dataset, delta=cmp["delta"], ci_low=cmp["ci_low"],
                             ci_high=cmp["ci_high"], p_better=cmp["p_b_better"], n_images=cmp["n_images"],
                             kind=kind, verdict=_verdict(cmp["ci_low"], cmp["ci_high"], claimed_sign, kind)))
        mean_diff = np.mean(np.stack(diffs), axis=0)  # [n_boot]: average over datasets of one resample each
        low, high = (100.0 * v for v in percentile_interval(mean_diff, ci))
        finite = ~np.isnan(mean_diff)
        kind = "reproduction" if set(kinds) == {"reproduction"} else "pipeline-check"
        rows.append(dict(baseline=base, method=new, dataset=AVG, delta=float(np.mean(points)), ci_low=low,
                         ci_high=high,
                         p_better=float(np.mean(mean_diff[finite] > 0)) if finite.any() else float("nan"),
                         n_images=n_total, kind=kind, verdict=_verdict(low, high, claimed_sign, kind)))
    return pd.DataFrame(rows)


def paper_deltas(table: str, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The paper's ``new - baseline`` differences between two printed rows of ``table``.

    Returns:
        ``baseline, method, dataset, paper_base, paper_new, delta`` per dataset (our dataset names) and ``Avg.``
        (the difference of the printed averages).
    """
    rows = []
    for base, new in pairs:
        pa, pb = paper_row(table, base), paper_row(table, new)
        for col in pa:
            dataset = AVG if col == "Avg" else DATASET_KEYS.get(col, col)
            rows.append(dict(baseline=base, method=new, dataset=dataset, paper_base=pa[col], paper_new=pb[col],
                             delta=pb[col] - pa[col]))
    return pd.DataFrame(rows)


def deltas_vs_paper(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Each of our differences beside the paper's on the same dataset (the claim check in one table).

    When ``paper`` holds several comparisons (Table 12: SGA in three methods), ``paper_delta`` is their mean per
    dataset and ``paper_range`` their min..max.

    Returns:
        ``comparison, dataset, paper_delta, paper_range, delta, ci_low, ci_high, paper_in_ci, verdict``.
    """
    stats = paper.groupby("dataset", sort=False)["delta"].agg(["mean", "min", "max"])
    rows = []
    for _, r in ours.iterrows():
        if r["dataset"] not in stats.index:
            continue
        ref = stats.loc[r["dataset"]]
        rows.append(dict(comparison=f"{r['method']} - {r['baseline']}", dataset=PAPER_NAME.get(r["dataset"],
                                                                                             r["dataset"]),
                         paper_delta=float(ref["mean"]),
                         paper_range=f"{ref['min']:+.1f}..{ref['max']:+.1f}" if ref["min"] != ref["max"] else "",
                         delta=r["delta"], ci_low=r["ci_low"], ci_high=r["ci_high"],
                         paper_in_ci=bool(r["ci_low"] <= ref["mean"] <= r["ci_high"]), verdict=r["verdict"]))
    return pd.DataFrame(rows)


def rounded(df: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """``df`` with its float columns rounded and ``-0.0`` shown as ``0.0`` (stable printed output)."""
    out = df.copy()
    for col in out.select_dtypes("float").columns:
        out[col] = out[col].round(digits) + 0.0
    return out


def _dataset_order(*frames: pd.DataFrame) -> list[str]:
    seen = [d for f in frames for d in f["dataset"]]
    ordered = [d for d in DATASET_KEYS.values() if d in seen]
    return ordered + sorted({d for d in seen if d not in ordered and d != AVG}) + ([AVG] if AVG in seen else [])


def deltas_beside_paper(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Wide table of differences: one row per comparison (paper's, then ours), one column per dataset + Avg.

    Args:
        ours: :func:`paired_deltas` output.
        paper: :func:`paper_deltas` output.

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
    return out.rename(columns={d: PAPER_NAME.get(d, d) for d in order})


def results_beside_paper(results: pd.DataFrame, table: str,
                         label_to_paper: dict[str, str] | None = None) -> pd.DataFrame:
    """Wide mIoU table: every paper row (``reported only`` unless one of our labels maps to it), then ours.

    Args:
        results: :func:`alignclip.study.evaluate_runs` output.
        table: paper table name (e.g. ``"table12_natural_images"``).
        label_to_paper: our label -> the paper row it reproduces (none by default).

    Returns:
        ``method, source, status, <paper dataset names...>, Avg`` (Avg only when every dataset is present).
    """
    paper = load_table(table)
    datasets = [c for c in paper.columns if c in DATASET_KEYS]
    mapped = {v: k for k, v in (label_to_paper or {}).items()}
    rows = []
    for _, prow in paper.iterrows():
        status = "reported only" if prow["method"] not in mapped else "reproduced below"
        rows.append({"method": prow["method"], "source": "paper", "status": status,
                     **{d: float(prow[d]) for d in datasets}, "Avg": float(prow["Avg"])})
    for label in dict.fromkeys(results["label"]):
        sub = results[results["label"] == label]
        ours = {PAPER_NAME.get(d, d): float(m) for d, m in zip(sub["dataset"], sub["miou"], strict=True)}
        status = "reproduction" if set(sub["kind"]) == {"reproduction"} else "pipeline check"
        values = {d: ours.get(d) for d in datasets}
        present = [v for v in values.values() if v is not None]
        avg = sum(present) / len(present) if len(present) == len(datasets) else None
        rows.append({"method": (label_to_paper or {}).get(label, label), "source": "ours", "status": status,
                     **values, "Avg": avg})
    return pd.DataFrame(rows)


def plot_deltas(ours: pd.DataFrame, paper: pd.DataFrame, title: str = "", claimed: str = ""):
    """Bars of every comparison's difference per dataset (paper's grey, ours coloured with 95 % intervals)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = _dataset_order(ours, paper)
    names = [PAPER_NAME.get(d, d) for d in order]
    long = pd.concat([paper.assign(source="paper"), ours.assign(source="ours")], ignore_index=True)
    long["comparison"] = long["source"] + ": " + long["method"] + " - " + long["baseline"]
    long["dataset_name"] = [PAPER_NAME.get(d, d) for d in long["dataset"]]
    hue_order = list(dict.fromkeys(long["comparison"]))
    n_paper = len(dict.fromkeys(paper["method"] + paper["baseline"]))
    colours = list(sns.color_palette("Greys", n_paper + 2)[2:]) + list(
        sns.color_palette("tab10", len(hue_order) - n_paper))
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(order) + 2.5), 4.4))
    sns.barplot(data=long, x="dataset_name", y="delta", hue="comparison", order=names, hue_order=hue_order,
                palette=colours, ax=ax, errorbar=None)
    width = 0.8 / len(hue_order)
    for j, comp in enumerate(hue_order):  # our 95 % intervals at the centre of our bars
        sub = long[(long["comparison"] == comp) & long["source"].eq("ours")]
        if sub.empty:
            continue
        xs = [names.index(d) - 0.4 + (j + 0.5) * width for d in sub["dataset_name"]]
        lo = (sub["delta"] - sub["ci_low"]).clip(lower=0)
        hi = (sub["ci_high"] - sub["delta"]).clip(lower=0)
        ax.errorbar(xs, sub["delta"], yerr=[lo, hi], fmt="none", ecolor="black", capsize=3, linewidth=1)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("")
    ax.set_ylabel("mIoU difference (points)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8, loc="best")
    suffix = " — PIPELINE CHECK (random weights)" if set(ours["kind"]) != {"reproduction"} else ""
    ax.set_title((title or "paired differences") + suffix + (f"\nclaimed: {claimed}" if claimed else ""),
                 fontsize=10)
    fig.tight_layout()
    return fig
