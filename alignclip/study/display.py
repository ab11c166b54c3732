"""Tables for people: the one formatting function every notebook shows its tables with.

:func:`for_reading` turns a study table (paper-vs-ours comparisons, claim checks, sweeps, benchmark records) into a
pandas ``Styler``: our value and its 95 % interval in one cell, the paper's values at the paper's precision
(one decimal), readable headers with units, the paper's dataset names, no index column, and a legend for every
derived column present. On a pipeline check, verdict-like columns read ``pipeline-check`` (greyed) instead of a
True/False or a verdict that would look like evidence.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from alignclip.kinds import PIPELINE_CHECK
from alignclip.paper.names import paper_dataset

__all__ = ["HEADERS", "LEGEND", "for_reading"]

#: Column -> header shown to readers (units in brackets).
HEADERS: dict[str, str] = {
    "label": "run",
    "preset": "preset",
    "method": "method",
    "baseline": "baseline",
    "dataset": "dataset",
    "miou": "mIoU (%)",
    "ours": "ours, mIoU (%)",
    "paper": "paper, mIoU (%)",
    "delta": "Δ (points)",
    "gain": "gain (points)",
    "p_better": "P(better)",
    "n_images": "images",
    "kind": "status",
    "status": "status",
    "verdict": "verdict",
    "paper_delta": "paper Δ (points)",
    "paper_gain": "paper gain (points)",
    "paper_base": "paper, without (mIoU %)",
    "paper_in_ci": "paper in our CI",
    "paper_range": "paper range",
    "note": "note",
}
#: Derived columns -> the line of the table's legend that explains them.
LEGEND: dict[str, str] = {
    "delta": "Δ: the difference in mIoU points (ours − paper, or new − baseline), 95 % paired bootstrap interval",
    "gain": "gain: mIoU with the module − without it, 95 % paired bootstrap interval",
    "p_better": "P(better): share of paired bootstrap resamples in which the second run has the higher mIoU",
    "ci": "[a, b]: 95 % percentile bootstrap interval (over images; for time ratios, over the paired timed runs)",
    "paper_in_ci": "paper in our CI: whether the paper's value lies inside our interval",
    "verdict": "verdict: supported / contradicted when the 95 % interval excludes 0, otherwise not distinguishable "
    "from zero; pipeline-check on random weights (no verdict)",
}
#: The value column that owns a ``ci_low``/``ci_high`` pair, in order of priority.
_CI_OWNERS = ("ours", "miou", "delta", "gain", "ours_ms_ratio", "ms_ratio", "value")
_DROP = ("path",)


def _is_pipeline_row(df: pd.DataFrame) -> pd.Series:
    rows = pd.Series(False, index=df.index)
    for col in ("kind", "status", "verdict"):
        if col in df:
            rows |= df[col].astype(str) == PIPELINE_CHECK
    return rows


def for_reading(
    df: pd.DataFrame,
    digits: int = 2,
    paper_digits: int = 1,
    caption: str | None = None,
    headers: Mapping[str, str] | None = None,
):
    """The table as readers see it in the book (a pandas ``Styler``).

    Args:
        df: any table of the study (a named or multi-level index becomes columns).
        digits: decimals of our numbers.
        paper_digits: decimals of the paper's numbers (columns named ``paper`` or ``paper_*``).
        caption: a title above the table; the legend of its derived columns is appended.
        headers: more ``{column: header}`` renames (over :data:`HEADERS`).
    """
    out = df.copy()
    if not isinstance(out.index, pd.RangeIndex) or out.index.name is not None:
        out = out.reset_index()
    out = out.drop(columns=[c for c in _DROP if c in out])
    legend, owner = [], None
    if {"ci_low", "ci_high"} <= set(out.columns):
        owner = next((c for c in _CI_OWNERS if c in out), None)
        if owner is not None:

            def cell(v, lo, hi):
                if pd.isna(v):
                    return ""
                if pd.isna(lo) or pd.isna(hi):
                    return f"{v:.{digits}f}"
                sign = "+" if owner in ("delta", "gain") else ""
                return f"{v:{sign}.{digits}f} [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"

            out[owner] = [cell(v, lo, hi) for v, lo, hi in zip(out[owner], out["ci_low"], out["ci_high"], strict=True)]
            out = out.drop(columns=["ci_low", "ci_high"])
            legend.append(LEGEND["ci"])
    if "dataset" in out:
        out["dataset"] = [paper_dataset(d) for d in out["dataset"]]
    pipeline = _is_pipeline_row(out)
    for col in out.columns:  # True/False beside a pipeline check would read as evidence
        values = out[col]
        if values.dtype == bool or (
            values.dtype == object and values.map(lambda v: isinstance(v, (bool, np.bool_))).any()
        ):
            out[col] = [
                PIPELINE_CHECK
                if p
                else ("yes" if v is True or v is np.True_ else "no" if v is False or v is np.False_ else v)
                for v, p in zip(values, pipeline, strict=True)
            ]
    legend += [LEGEND[c] for c in ("delta", "gain", "p_better", "paper_in_ci", "verdict") if c in out]
    names = {**HEADERS, **(headers or {})}
    shown = {c: names.get(str(c), str(c).replace("_", " ")) + (" [95 % CI]" if c == owner else "") for c in out.columns}
    floats = {}
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            prec = paper_digits if str(c) == "paper" or str(c).startswith("paper_") else digits
            floats[shown[c]] = f"{{:.{prec}f}}"
    paper_rows = list(out.index[out["source"] == "paper"]) if "source" in out else []
    out = out.rename(columns=shown)
    styler = out.style.hide(axis="index").format(floats, na_rep="–")
    if paper_rows:  # a table mixing the paper's rows with ours (Table 2): the paper's at its own precision
        numeric = list(floats)
        styler = styler.format(f"{{:.{paper_digits}f}}", subset=pd.IndexSlice[paper_rows, numeric], na_rep="–")

    def grey(v):
        return "color: #888; font-style: italic" if v == PIPELINE_CHECK else ""

    styler = styler.map(grey)
    text = caption or ""
    if legend:
        text = (text + " — " if text else "") + "; ".join(legend) + "."
    return styler.set_caption(text) if text else styler
