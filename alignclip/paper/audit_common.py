"""Shared helpers of the paper audit: finding records, rounding, table rows and sweeps.

Used by :mod:`alignclip.paper.audit` (table checks and entry points) and :mod:`alignclip.paper.audit_text`
(checks of the text's claims). Nothing here runs a model.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pandas as pd

from alignclip.paper.names import RS_COLUMNS
from alignclip.paper.tables import load_table

__all__ = [
    "EPS",
    "TABLE3_ROW_NAMES",
    "VARIANTS",
    "cell_name",
    "finding",
    "fmt_value",
    "key_column",
    "round_half_up",
    "row_label",
    "same_value",
    "sweep_rows",
    "table_rows",
]

EPS = 1e-6
VARIANTS = ("AlignCLIP-D", "AlignCLIP-S")

TABLE3_ROW_NAMES = {(0, 0): "SegEarth-OV", (1, 0): "SGA", (0, 1): "CCE", (1, 1): "SGA+CCE"}


def finding(
    fid: str, severity: str, tables: list[str], cells: list[str], expected: object, found: object, message: str
) -> dict:
    return {
        "id": fid,
        "severity": severity,
        "tables": tables,
        "cells": cells,
        "expected": expected,
        "found": found,
        "message": message,
    }


def round_half_up(x: float | Decimal) -> float:
    return float(Decimal(str(x)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def same_value(a: float, b: float) -> bool:
    return abs(float(a) - float(b)) < EPS


def key_column(df: pd.DataFrame) -> str | None:
    return next((c for c in ("alpha", "beta", "n_clusters", "hyperparameter") if c in df), None)


def row_label(df: pd.DataFrame, row: pd.Series) -> str:
    if "sga" in df:
        return TABLE3_ROW_NAMES[(int(row["sga"]), int(row["cce"]))]
    key = key_column(df)
    if "variant" in df and key:
        return f"{row['variant']} {key}={row[key]}"
    return str(row["method"] if "method" in df else row["domain"])


def cell_name(table: str, label: str, col: str) -> str:
    return f"{table}[{label}, {col}]"


def table_rows(table: str) -> dict[str, dict[str, float]]:
    """``{row label: {column: value}}`` for the numeric columns of one table."""
    df = load_table(table)
    cols = [c for c in df.columns if c in RS_COLUMNS or c == "Avg" or c == "miou_avg"]
    return {row_label(df, r): {c: float(r[c]) for c in cols} for _, r in df.iterrows()}


def sweep_rows(table: str, variant: str) -> dict[float, dict[str, float]]:
    df = load_table(table)
    key = key_column(df)
    sub = df[df["variant"] == variant]
    return {float(r[key]): {d: float(r[d]) for d in RS_COLUMNS} for _, r in sub.iterrows()}


def fmt_value(x: float) -> str:
    return f"{x:g}"
