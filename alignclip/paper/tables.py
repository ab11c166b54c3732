"""The paper's published numbers as package data, and a side-by-side comparison with ours.

The CSV files in ``alignclip/paper_tables/`` are transcriptions of the AlignCLIP paper's tables
(mIoU in percent, one decimal as printed). They are the only numbers from the paper this project
carries. ``compare_with_paper`` puts one of our runs beside a paper row and labels every row with
the kind of run (:mod:`alignclip.kinds`: ``"pipeline-check"`` for runs with stand-in weights), so a check
of the pipeline can never be read as a reproduction.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from alignclip.errors import ConfigError, InputError
from alignclip.kinds import KINDS, PIPELINE_CHECK
from alignclip.paper.names import PACKAGE_DATASET

__all__ = [
    "AVG_ARROWS",
    "TABLE2_DELTA_ROWS",
    "TABLE4_COLUMNS",
    "TABLE4_SENSITIVITY",
    "compare_with_paper",
    "list_tables",
    "load_table",
    "paper_row",
]

TABLES_DIR = Path(__file__).resolve().parent / "csv"

# The dataset name maps (RS_COLUMNS, NATURAL_COLUMNS, PACKAGE_DATASET) live in alignclip.paper.names.

# Numbers the paper prints outside the CSV tables, transcribed for the audit (alignclip.paper.audit).
# Table 2, the rows printed under each AlignCLIP row (paper Sec. 4.1, Table 2 markdown):
#   AlignCLIP-D: "(+0.3) (+2.6) (+1.9) (+0.8) (+3.0) (+1.9) (+1.2) (+2.8) (+2.2)"
#   AlignCLIP-S: "(+0.3) (+2.6) (+1.7) (+0.7) (+3.1) (+1.9) (+1.2) (+2.8) (+2.1)"
TABLE2_DELTA_ROWS = {
    "AlignCLIP-D": [0.3, 2.6, 1.9, 0.8, 3.0, 1.9, 1.2, 2.8, 2.2],
    "AlignCLIP-S": [0.3, 2.6, 1.7, 0.7, 3.1, 1.9, 1.2, 2.8, 2.1],
}
# Arrows printed in the Avg column: Table 3 "40.1 ↑1.0", "39.4 ↑0.3", "41.3 ↑2.2" (vs row 1);
# Table 10 "38.5 ↑1.7", "36.9 ↑1.9", "35.1 ↑1.6" (vs the plain method); Table 13 "42.2 ↑0.9".
AVG_ARROWS = [
    ("table3_component_ablation", "SGA", "SegEarth-OV", 1.0),
    ("table3_component_ablation", "CCE", "SegEarth-OV", 0.3),
    ("table3_component_ablation", "SGA+CCE", "SegEarth-OV", 2.2),
    ("table10_sga_plugin", "ProxyCLIP+SGA", "ProxyCLIP", 1.7),
    ("table10_sga_plugin", "SC-CLIP+SGA", "SC-CLIP", 1.9),
    ("table10_sga_plugin", "CorrCLIP+SGA", "CorrCLIP", 1.6),
    ("table13_densecrf", "AlignCLIP-D+denseCRF", "AlignCLIP-D", 0.9),
]
# Table 4 (Sec. 4.3, AlignCLIP-D on OEM, PD, UAV, VDD), not shipped as CSV; rows as printed:
#   (a) "0.1 40.1 47.5 44.0 47.7" ... (b) "0.1 40.1 47.9 43.4 46.7" ... (c) "3 40.1 47.9 44.4 48.4"
TABLE4_COLUMNS = ["OpenEarthMap", "Potsdam", "UAVid", "VDD"]
TABLE4_SENSITIVITY = {
    ("table7_alpha_sensitivity", "alpha"): {
        0.1: [40.1, 47.5, 44.0, 47.7],
        0.2: [40.1, 47.6, 44.4, 48.4],
        0.3: [39.8, 47.9, 44.3, 48.3],
        0.4: [39.3, 47.8, 43.9, 47.9],
        0.5: [38.8, 47.7, 43.3, 47.2],
    },
    ("table8_beta_sensitivity", "beta"): {
        0.1: [40.1, 47.9, 43.4, 46.7],
        0.2: [40.0, 47.8, 44.0, 47.9],
        0.3: [39.6, 47.5, 44.4, 48.4],
        0.4: [39.1, 46.9, 44.4, 48.4],
        0.5: [38.6, 46.0, 44.3, 48.2],
    },
    ("table9_clusters_sensitivity", "n_clusters"): {
        3: [40.1, 47.9, 44.4, 48.4],
        6: [40.1, 47.6, 44.2, 48.2],
        9: [40.0, 47.6, 44.2, 48.1],
        12: [40.0, 47.6, 44.1, 48.0],
        15: [40.0, 47.5, 44.0, 47.9],
    },
}

AVG_COLUMN = "Avg"
# Columns that identify a row rather than hold a number, per table layout.
_KEY_COLUMNS = ("method", "venue", "variant", "hyperparameter", "alpha", "beta", "n_clusters", "sga", "cce", "domain")
# Table 3 has no method column: its rows are named by the modules switched on.
_TABLE3_ROWS = {
    "SegEarth-OV": (0, 0),
    "baseline": (0, 0),
    "SGA": (1, 0),
    "+SGA": (1, 0),
    "CCE": (0, 1),
    "+CCE": (0, 1),
    "SGA+CCE": (1, 1),
    "AlignCLIP-D": (1, 1),
}


def _table_number(name: str) -> int:
    match = re.match(r"table(\d+)", name)
    return int(match.group(1)) if match else 10**6


def list_tables() -> list[str]:
    """Names of the paper tables shipped with the package, in table order.

    Returns:
        Names such as ``"table2_main"`` (file stems of ``alignclip/paper_tables/*.csv``).
    """
    names = [p.stem for p in TABLES_DIR.glob("*.csv")]
    return sorted(names, key=lambda n: (_table_number(n), n))


def _resolve_table(name: str) -> str:
    names = list_tables()
    if name in names:
        return name
    # Short form "table2" -> "table2_main".
    short = [n for n in names if n.split("_", 1)[0] == name]
    if len(short) == 1:
        return short[0]
    raise ConfigError(f"unknown paper table {name!r} in {TABLES_DIR}; use one of: {', '.join(names)}")


def load_table(name: str) -> pd.DataFrame:
    """Load one paper table.

    Args:
        name: Table name from ``list_tables()`` (e.g. ``"table2_main"``) or its short form
            (``"table2"``).

    Returns:
        The table as printed in the paper (mIoU in percent; key columns such as ``method``,
        ``variant`` or ``alpha`` first, then one column per dataset, then ``Avg`` where printed).

    Raises:
        ConfigError: The name is not one of the shipped tables (the message lists them).
    """
    return pd.read_csv(TABLES_DIR / f"{_resolve_table(name)}.csv")


def _value_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in _KEY_COLUMNS]


def _select_row(df: pd.DataFrame, table: str, method: str, variant: object) -> pd.Series:
    """Pick the single row named by ``method`` (and ``variant`` where the table needs one)."""
    if "sga" in df.columns:  # Table 3: rows named by modules.
        if method not in _TABLE3_ROWS:
            raise ConfigError(f"unknown method {method!r} for {table}; use one of: {', '.join(_TABLE3_ROWS)}")
        sga, cce = _TABLE3_ROWS[method]
        rows = df[(df["sga"] == sga) & (df["cce"] == cce)]
        return rows.iloc[0]
    if "variant" in df.columns:  # Tables 6-9: method = variant column, variant = setting.
        first, second = "variant", next(c for c in df.columns[1:] if c in _KEY_COLUMNS)
    else:
        first = "method" if "method" in df.columns else "domain"
        second = None
    methods = list(dict.fromkeys(df[first].astype(str)))
    if method not in methods:
        raise ConfigError(f"unknown method {method!r} for {table}; use one of: {', '.join(methods)}")
    rows = df[df[first].astype(str) == method]
    if second is None:
        return rows.iloc[0]
    options = [str(v) for v in rows[second]]
    hits = [i for i, v in enumerate(rows[second]) if _same_setting(v, variant)]
    if variant is None or not hits:
        raise ConfigError(
            f"{table} needs variant= one of the {second} values {', '.join(options)} for "
            f"{method!r} (got {variant!r}); pass e.g. variant={options[0]!r}"
        )
    return rows.iloc[hits[0]]


def _same_setting(value: object, wanted: object) -> bool:
    """True when a key cell equals ``wanted`` as text or as a number (``3 == "3" == 3.0``)."""
    if wanted is None:
        return False
    if str(value) == str(wanted):
        return True
    try:
        return math.isclose(float(value), float(wanted), abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def paper_row(table: str, method: str, variant: str | float | None = None) -> dict[str, float]:
    """One row of a paper table as ``{column: value}``.

    Args:
        table: Table name (see ``list_tables()``).
        method: Row name. For Tables 2, 10-13 the ``method`` column (e.g. ``"AlignCLIP-D"``);
            for Table 3 one of ``"SegEarth-OV"``, ``"SGA"``, ``"CCE"``, ``"SGA+CCE"``; for
            Tables 6-9 the variant (``"AlignCLIP-D"`` or ``"AlignCLIP-S"``); for Table 1 the
            image domain.
        variant: Only for Tables 6-9: the hyper-parameter name (Table 6, ``"alpha"``/``"beta"``)
            or the swept value (Tables 7-9, e.g. ``0.3`` or ``3``).

    Returns:
        The row's numeric columns (datasets by their paper names, ``"Avg"`` where printed).

    Raises:
        ConfigError: Unknown table, method or variant (the message lists the valid ones).
    """
    name = _resolve_table(table)
    df = load_table(name)
    row = _select_row(df, name, method, variant)
    return {c: float(row[c]) for c in _value_columns(df)}


def _display_name(key: str, allowed: list[str]) -> str:
    lookup = {d.lower(): d for d in allowed}
    lookup.update({PACKAGE_DATASET[d]: d for d in allowed if d in PACKAGE_DATASET})
    found = lookup.get(str(key).lower())
    if found is None:
        keys = [PACKAGE_DATASET.get(d, d) for d in allowed]
        raise ConfigError(
            f"unknown dataset {key!r} for this paper table; use one of: {', '.join(keys)} "
            f"(or the paper names {', '.join(allowed)})"
        )
    return found


def compare_with_paper(
    ours: dict[str, float],
    table: str = "table2_main",
    method: str = "AlignCLIP-D",
    kind: str = PIPELINE_CHECK,
    variant: str | float | None = None,
) -> pd.DataFrame:
    """Put our mIoU beside the paper's, one row per dataset plus an ``Avg.`` row.

    Args:
        ours: Our mIoU in percent per dataset, keyed by our dataset name (``"loveda"``) or the
            paper's column name (``"LoveDA"``).
        table: Paper table to compare with (see ``list_tables()``).
        method: Paper row (see ``paper_row``).
        kind: What our run is, copied into every row so the label cannot be lost:
            ``"pipeline-check"`` (subset, stand-in weights or otherwise not the paper's setting)
            or ``"reproduction"`` (full splits, the paper's setting).
        variant: Passed to ``paper_row`` for Tables 6-9.

    Returns:
        DataFrame with columns ``dataset, paper, ours, delta, kind, note``; ``delta = ours -
        paper``. The last row, ``dataset == "Avg."``, averages both columns over the datasets
        present in ``ours`` only; its note says how many of the paper's datasets it covers.

    Raises:
        ConfigError: Unknown table, method, dataset or ``kind``.
        InputError: ``ours`` is empty or holds a value that is not a finite mIoU in [0, 100].
    """
    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r} is not a kind of run; pass one of {', '.join(map(repr, KINDS))}")
    if not ours:
        raise InputError("ours is empty; pass {dataset: mIoU in percent}, e.g. {'loveda': 39.5}")
    paper = paper_row(table, method, variant)
    datasets = [c for c in paper if c != AVG_COLUMN]
    values: dict[str, float] = {}
    for key, value in ours.items():
        name = _display_name(key, datasets)
        number = float(value)
        if not math.isfinite(number) or not 0.0 <= number <= 100.0:
            raise InputError(
                f"ours[{key!r}] = {value!r} is not an mIoU in percent; pass a number in [0, 100] "
                "(multiply fractions by 100)"
            )
        if name in values:
            raise InputError(f"ours gives {name} twice ({key!r}); keep one entry per dataset")
        values[name] = number
    present = [d for d in datasets if d in values]
    rows = [
        {"dataset": d, "paper": paper[d], "ours": values[d], "delta": values[d] - paper[d], "kind": kind, "note": ""}
        for d in present
    ]
    paper_mean = sum(paper[d] for d in present) / len(present)
    ours_mean = sum(values[d] for d in present) / len(present)
    note = f"mean over {len(present)}/{len(datasets)} datasets of the paper table"
    if len(present) < len(datasets):
        missing = [d for d in datasets if d not in values]
        note += f"; missing {', '.join(missing)}: not comparable with the paper's Avg"
    elif AVG_COLUMN in paper:
        note += f"; the paper prints Avg {paper[AVG_COLUMN]:.1f}"
    rows.append(
        {
            "dataset": "Avg.",
            "paper": paper_mean,
            "ours": ours_mean,
            "delta": ours_mean - paper_mean,
            "kind": kind,
            "note": note,
        }
    )
    return pd.DataFrame(rows, columns=["dataset", "paper", "ours", "delta", "kind", "note"])
