"""Paired mIoU gains between runs, beside the gains the paper claims (Tables 3, 10, 12, 13, sweeps).

The paper states the effect of a switch (``+SGA``, ``+CCE``, ``+denseCRF``, a hyper-parameter value) as
the difference between two printed rows, per dataset and on average (the arrows of Tables 3 and 10).
We measure the same difference on the same images:

* :func:`paired_deltas` - the one implementation: ``new - baseline`` per dataset, each with its paired
  95 % bootstrap interval over images (:func:`alignclip.evaluation.bootstrap.paired_bootstrap`), then an ``Avg.`` row
  (the mean over datasets, its interval from a stratified paired bootstrap: each dataset's images
  resampled independently, the per-dataset differences averaged per resample) and, for every row, the
  verdict on the claimed sign (:func:`alignclip.evaluation.bootstrap.classify_gain`, "pipeline-check" unless both
  runs are reproductions);
* :func:`average_gains` (Tables 3 and 10: the averages beside the paper's arrows), :func:`sweep_claims`
  ("value v is the best") and :func:`plugin_table` (Table 10) - views of :func:`paired_deltas`;
* :func:`paper_deltas`, :func:`paper_gains`, :func:`claimed_gains` - the paper's differences;

Tables beside the paper and figures: :mod:`alignclip.study.gains_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from alignclip.errors import InputError
from alignclip.evaluation.bootstrap import (
    classify_gain,
    paired_bootstrap,
    percentile_interval,
    resampled_mious,
)
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.evaluation.evaluate import load_result
from alignclip.kinds import PIPELINE_CHECK, REPRODUCTION, combined_kind
from alignclip.paper.names import PACKAGE_DATASET, PAPER_METHOD
from alignclip.paper.tables import AVG_ARROWS, load_table, paper_row
from alignclip.study.sweeps import plugin_claims, sweep_label

__all__ = [
    "AVG",
    "TABLE10_HOSTS",
    "TABLE12_PAIRS",
    "TABLE13_PAIRS",
    "TABLE3",
    "TABLE3_CLAIMS",
    "average_gains",
    "check_claims",
    "claimed_gains",
    "paired_deltas",
    "paper_deltas",
    "paper_gains",
    "plugin_table",
    "sweep_claims",
]

AVG = "Avg."
TABLE3 = "table3_component_ablation"
#: The three gains Sec. 4.3 claims over the baseline (+1.0, +0.3, +2.2 on average).
TABLE3_CLAIMS = [
    ("segearth-ov", "segearth-ov+sga"),
    ("segearth-ov", "segearth-ov+cce"),
    ("segearth-ov", "alignclip-d"),
]
#: The methods Table 10 plugs SGA into (a host left out of a run keeps the paper's row, "reported only").
TABLE10_HOSTS = ["ProxyCLIP", "SC-CLIP", "CorrCLIP"]
#: Table 12's comparisons (SGA plugged into three natural-image methods), as the paper names them.
TABLE12_PAIRS = [("SC-CLIP", "SC-CLIP+SGA"), ("Trident", "Trident+SGA"), ("CorrCLIP", "CorrCLIP+SGA")]
#: Table 13's comparison.
TABLE13_PAIRS = [("AlignCLIP-D", "AlignCLIP-D+denseCRF")]


# ------------------------------------------------------------------------------ measured gains
def _per_image(results: pd.DataFrame, label: str, dataset: str) -> tuple[str, list[str], np.ndarray]:
    """``kind``, image ids and per-image confusion matrices [n, K, K] of one run's RESULT.json."""
    path = results[(results["label"] == label) & (results["dataset"] == dataset)]["path"].iloc[0]
    result = load_result(path)
    ids, cms = ConfusionAccumulator.from_compact(result["per_image_confusion"]).per_image()
    return result["kind"], ids, cms


def _paired_images(
    results: pd.DataFrame, base: str, new: str, dataset: str
) -> tuple[str, list[str], np.ndarray, np.ndarray]:
    """Both runs' matrices on the same images: ``kind, ids, cms_base [n, K, K], cms_new [n, K, K]``."""
    kind_a, ids, cms_a = _per_image(results, base, dataset)
    kind_b, ids_b, cms_b = _per_image(results, new, dataset)
    if sorted(ids) != sorted(ids_b):
        raise InputError(
            f"{base!r} and {new!r} on {dataset} hold different images ({len(ids)} vs "
            f"{len(ids_b)}); rerun both with the same limit on the same data"
        )
    pos = {image_id: j for j, image_id in enumerate(ids_b)}
    kind = combined_kind([kind_a, kind_b])
    return kind, ids, cms_a, cms_b[[pos[image_id] for image_id in ids]]


def _verdict(low: float, high: float, claimed_sign: int, kind: str) -> str:
    if kind != REPRODUCTION:
        return PIPELINE_CHECK
    if np.isnan(low) or np.isnan(high):
        return "not distinguishable from zero"
    return classify_gain((low, high), claimed_sign=claimed_sign)


def _dataset_gain(
    results: pd.DataFrame, base: str, new: str, dataset: str, claimed_sign: int, n_boot: int, seed: int, ci: float
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One dataset's row of a pair (paired bootstrap over its images) and both runs' aligned matrices."""
    kind, ids, cms_a, cms_b = _paired_images(results, base, new, dataset)
    cmp = paired_bootstrap(cms_a, cms_b, ids, ids, n_boot=n_boot, seed=seed, ci=ci)
    row = dict(
        baseline=base,
        method=new,
        dataset=dataset,
        delta=cmp["delta"],
        ci_low=cmp["ci_low"],
        ci_high=cmp["ci_high"],
        p_better=cmp["p_b_better"],
        n_images=cmp["n_images"],
        kind=kind,
        verdict=_verdict(cmp["ci_low"], cmp["ci_high"], claimed_sign, kind),
    )
    return row, cms_a, cms_b


def check_claims(results: pd.DataFrame, claims: Sequence[tuple[str, str]], n_boot: int = 1000) -> pd.DataFrame:
    """Paired bootstrap of each claimed gain ``(baseline label, improved label)`` on every dataset both have.

    Returns:
        ``baseline, method, dataset, delta, ci_low, ci_high, p_better, verdict`` (datasets sorted, seed 0). The
        verdict is "supported" (95 % interval of the gain above 0), "contradicted" (below 0) or "not
        distinguishable from zero"; runs that are not reproductions get ``"pipeline-check"``, whatever their
        numbers. A pair without a shared dataset gives no row.
    """
    columns = ["baseline", "method", "dataset", "delta", "ci_low", "ci_high", "p_better", "verdict"]
    rows = []
    for base, new in claims:
        shared = set(results[results["label"] == base]["dataset"]) & set(results[results["label"] == new]["dataset"])
        for dataset in sorted(shared):
            row, _, _ = _dataset_gain(results, base, new, dataset, 1, n_boot, 0, 0.95)
            rows.append({k: row[k] for k in columns})
    return pd.DataFrame(rows, columns=columns)


def _pair_gains(
    results: pd.DataFrame, base: str, new: str, claimed_sign: int, n_boot: int, seed: int, ci: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The per-dataset rows and the ``Avg.`` row of one pair (see :func:`paired_deltas`)."""
    in_new = set(results[results["label"] == new]["dataset"])
    shared = [d for d in dict.fromkeys(results[results["label"] == base]["dataset"]) if d in in_new]
    if not shared:
        raise InputError(f"no dataset has runs {base!r} and {new!r}; labels present: {sorted(set(results['label']))}")
    rows, diffs = [], []
    for i, dataset in enumerate(shared):
        row, cms_a, cms_b = _dataset_gain(results, base, new, dataset, claimed_sign, n_boot, seed, ci)
        boot_a, boot_b = resampled_mious([cms_a, cms_b], n_boot, seed + i)
        diffs.append(boot_b - boot_a)
        rows.append(row)
    mean_diff = np.mean(np.stack(diffs), axis=0)  # [n_boot]: mean over datasets of one resample each
    low, high = (100.0 * v for v in percentile_interval(mean_diff, ci))
    finite = ~np.isnan(mean_diff)
    kind = combined_kind(r["kind"] for r in rows)
    avg = dict(
        baseline=base,
        method=new,
        dataset=AVG,
        delta=float(np.mean([r["delta"] for r in rows])),
        ci_low=low,
        ci_high=high,
        p_better=float(np.mean(mean_diff[finite] > 0)) if finite.any() else float("nan"),
        n_images=sum(r["n_images"] for r in rows),
        kind=kind,
        verdict=_verdict(low, high, claimed_sign, kind),
    )
    return rows, avg


def paired_deltas(
    results: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    claimed_sign: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Our ``new - baseline`` mIoU difference per dataset and on average, with paired bootstrap intervals.

    Args:
        results: runs as returned by :func:`alignclip.study.runs.evaluate_runs` (``label, dataset, path``);
            the datasets of a pair are taken in the order the baseline's rows list them.
        pairs: ``(baseline label, new label)`` pairs.
        claimed_sign: ``+1`` when the paper claims a gain, ``-1`` when it claims a drop.
        n_boot: bootstrap resamples.
        seed: seed of each dataset's own interval (as in ``check_claims``); in the average, dataset
            ``i`` uses ``seed + i`` so the datasets are resampled independently.
        ci: coverage of the intervals.

    Returns:
        One row per pair and shared dataset, then one ``dataset == "Avg."`` row per pair: ``baseline,
        method, dataset, delta, ci_low, ci_high, p_better, n_images, kind, verdict`` (points of mIoU %).
        The verdict is ``classify_gain`` on the claimed sign ("not distinguishable from zero" for an
        undefined interval), or ``"pipeline-check"`` unless both runs are reproductions.

    Raises:
        InputError: a pair shares no dataset, or its two runs hold different images.
    """
    rows = []
    for base, new in pairs:
        per_dataset, avg = _pair_gains(results, base, new, claimed_sign, n_boot, seed, ci)
        rows += per_dataset + [avg]
    return pd.DataFrame(rows)


def _by_dataset_name(results: pd.DataFrame) -> pd.DataFrame:
    return results.sort_values("dataset", kind="stable")


def average_gains(
    results: pd.DataFrame,
    claims: Sequence[tuple[str, str]],
    claimed: Sequence[float | None] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Gain of ``new`` over ``base`` averaged over their shared datasets, with a 95 % interval.

    The ``Avg.`` rows of :func:`paired_deltas` (claimed sign +1) with the shared datasets in
    alphabetical order (the i-th resampled with seed ``seed + i``).

    Returns:
        ``baseline, method, n_datasets, ours, ci_low, ci_high, paper, paper_in_ci, verdict`` in mIoU
        points (``paper`` = the claimed average gain where given).
    """
    claimed = list(claimed) if claimed is not None else [None] * len(claims)
    if len(claimed) != len(claims):
        raise InputError(f"{len(claimed)} claimed gains for {len(claims)} claims; give one per claim (or None)")
    rows = []
    for (base, new), paper in zip(claims, claimed, strict=True):
        per_dataset, avg = _pair_gains(_by_dataset_name(results), base, new, 1, n_boot, seed, 0.95)
        low, high = avg["ci_low"], avg["ci_high"]
        rows.append(
            dict(
                baseline=base,
                method=new,
                n_datasets=len(per_dataset),
                ours=avg["delta"],
                ci_low=low,
                ci_high=high,
                paper=paper,
                paper_in_ci=None if paper is None else bool(low <= paper <= high),
                verdict=avg["verdict"],
            )
        )
    return pd.DataFrame(rows)


def sweep_claims(results: pd.DataFrame, best: float, n_boot: int = 1000) -> pd.DataFrame:
    """Claim "``best`` is the best value": paired bootstrap of ``best`` against every other value.

    Args:
        results: frame of :func:`alignclip.study.sweeps.run_sweep` (one parameter).
        best: the value the paper calls best (K_c = 3 in Table 4c, n = 1 in Fig. 4).

    Returns:
        The per-dataset rows of :func:`paired_deltas` (datasets in alphabetical order, as
        :func:`check_claims`): ``variant, value, baseline, method, dataset, delta,
        ci_low, ci_high, p_better, verdict`` with ``baseline`` = the other value's label, ``value`` =
        the other value and ``method`` = the best value's label; a positive delta means ``best`` wins.
    """
    param = results["param"].iloc[0]
    if not any(x == best for x in results["value"]):
        raise InputError(f"{param}={best} was not swept (values: {sorted(set(results['value']))}); add it to the grid")
    keys = list(zip(results["variant"], results["value"], strict=True))
    canon = _by_dataset_name(results.assign(label=[sweep_label(v, param, x) for v, x in keys]))
    key = {sweep_label(v, param, x): (v, x) for v, x in keys}
    rows = []
    for v in dict.fromkeys(results["variant"]):
        for x in dict.fromkeys(results["value"]):
            if x != best:
                rows += _pair_gains(canon, sweep_label(v, param, x), sweep_label(v, param, best), 1, n_boot, 0, 0.95)[0]
    out = pd.DataFrame(rows).drop(columns=["n_images", "kind"])
    out.insert(0, "value", [key[b][1] for b in out["baseline"]])
    out.insert(0, "variant", [key[b][0] for b in out["baseline"]])
    return out


# -------------------------------------------------------------------------------- paper's gains
def paper_deltas(table: str, pairs: Sequence[tuple[str, str]], rows: dict[str, str] | None = None) -> pd.DataFrame:
    """The paper's ``new - baseline`` differences between two printed rows of ``table``.

    Args:
        table: paper table name (e.g. ``"table13_densecrf"``).
        pairs: ``(baseline, new)`` labels.
        rows: label -> the paper's row name (e.g. :data:`TABLE3_ROWS`); labels are row names by default.

    Returns:
        ``baseline, method, dataset, paper_base, paper_new, delta`` per dataset (our dataset names) and
        ``Avg.`` (the difference of the printed averages).
    """
    rows = rows or {}
    out = []
    for base, new in pairs:
        pa, pb = paper_row(table, rows.get(base, base)), paper_row(table, rows.get(new, new))
        for col in pa:
            out.append(
                dict(
                    baseline=base,
                    method=new,
                    dataset=AVG if col == "Avg" else PACKAGE_DATASET.get(col, col),
                    paper_base=pa[col],
                    paper_new=pb[col],
                    delta=pb[col] - pa[col],
                )
            )
    return pd.DataFrame(out)


def paper_gains(table: str, claims: Sequence[tuple[str, str]], rows: dict[str, str]) -> pd.DataFrame:
    """The paper's per-dataset gains of each ``(base label, new label)`` claim.

    ``rows`` maps our labels to the paper's row names (e.g. :data:`TABLE3_ROWS`).

    Returns:
        ``baseline, method, dataset, paper_delta`` (our dataset names; :func:`paper_deltas` without
        the averages).
    """
    deltas = paper_deltas(table, claims, rows)
    deltas = deltas[deltas["dataset"].isin(list(PACKAGE_DATASET.values()))]
    return (
        deltas[["baseline", "method", "dataset", "delta"]]
        .rename(columns={"delta": "paper_delta"})
        .reset_index(drop=True)
    )


def claimed_gains(table: str, claims: Sequence[tuple[str, str]], rows: dict[str, str]) -> list[float | None]:
    """The average gain the paper prints as an arrow for each claim (None where it prints none)."""
    found = {(t, r, b): g for t, r, b, g in AVG_ARROWS}
    return [found.get((table, rows.get(new), rows.get(base))) for base, new in claims]


def plugin_table(
    results: pd.DataFrame, presets: Sequence[str], alpha: float = 0.1, n_boot: int = 1000, reported: bool = True
) -> pd.DataFrame:
    """Average mIoU without and with SGA: our methods (gains with 95 % CIs) beside Table 10's rows.

    Returns:
        ``method, status, base, with_sga, gain, ci_low, ci_high, verdict, paper_base, paper_gain``.
        Our rows average over the evaluated datasets; a method that is one of Table 10's hosts (ProxyCLIP,
        SC-CLIP, CorrCLIP) gets Table 10's average without SGA as ``paper_base`` and its claimed gain as
        ``paper_gain``, any other method its Table 2 average (the paper has no SGA row for it). Table 10's hosts
        that were not run keep the paper's row, ``reported only`` (unless ``reported`` is False: our rows only).
    """
    gains = average_gains(results, plugin_claims(presets, alpha), n_boot=n_boot)
    table2 = load_table("table2_main").set_index("method")
    table10 = load_table("table10_sga_plugin").set_index("method")

    def claimed(host: str) -> float:
        return claimed_gains("table10_sga_plugin", [(host, f"{host}+SGA")], {host: host, f"{host}+SGA": f"{host}+SGA"})[
            0
        ]

    rows = []
    for preset, (_, g) in zip(presets, gains.iterrows(), strict=True):
        base = float(results[results["label"] == preset]["miou"].mean())
        name = PAPER_METHOD.get(preset)
        host = name in TABLE10_HOSTS
        paper_base = table10 if host else table2
        rows.append(
            dict(
                method=preset,
                status=PIPELINE_CHECK if g["verdict"] == PIPELINE_CHECK else REPRODUCTION,
                base=base,
                with_sga=base + g["ours"],
                gain=g["ours"],
                ci_low=g["ci_low"],
                ci_high=g["ci_high"],
                verdict=g["verdict"],
                paper_base=float(paper_base.loc[name, "Avg"]) if name in paper_base.index else np.nan,
                paper_gain=claimed(name) if host else np.nan,
            )
        )
    run = {PAPER_METHOD.get(p) for p in presets}
    rows += [
        dict(
            method=m,
            status="reported only",
            base=np.nan,
            with_sga=np.nan,
            gain=np.nan,
            ci_low=np.nan,
            ci_high=np.nan,
            verdict="reported only",
            paper_base=float(table10.loc[m, "Avg"]),
            paper_gain=claimed(m),
        )
        for m in TABLE10_HOSTS
        if reported and m not in run
    ]
    return pd.DataFrame(rows)
