"""Internal-consistency audit of the AlignCLIP paper's published numbers (no model runs).

Reads the package's copies of the paper tables (``alignclip.paper.tables``) and a few numbers that exist
only in the paper's text or in tables not shipped as CSV (quoted verbatim below), and checks:

1. every printed ``Avg`` against the mean of the printed per-dataset values;
2. every printed gain (Table 2 delta rows, the arrows of Tables 3, 10, 13) against the rows it
   compares;
3. the same configuration reported in several tables (Tables 2, 3, 4, 7-11, 13);
4. the chosen hyper-parameters (Table 6) against the swept ranges (Tables 7-9);
5. claims in the text against the tables.

Severity: ``"error"`` = two printed numbers that cannot both be right; ``"warning"`` = a number
that is off by less than what rounding or an unstated convention could explain, or a setting the
tables cannot confirm; ``"info"`` = a claim that was checked and holds, or cannot be checked.

Checks 1-4 and the entry points (``run_audit``, ``write_audit``) live here; check 5 lives in
:mod:`alignclip.paper.audit_text` and the shared helpers (finding records, rounding, table rows) in
:mod:`alignclip.paper.audit_common`.
"""

from __future__ import annotations

import os
from decimal import Decimal

import pandas as pd

from alignclip.io.files import write_json
from alignclip.paper.audit_common import (
    EPS,
    VARIANTS,
    cell_name,
    finding,
    fmt_value,
    round_half_up,
    row_label,
    same_value,
    sweep_rows,
    table_rows,
)
from alignclip.paper.audit_text import check_text
from alignclip.paper.names import RS_COLUMNS
from alignclip.paper.tables import (
    AVG_ARROWS,
    TABLE2_DELTA_ROWS,
    TABLE4_COLUMNS,
    TABLE4_SENSITIVITY,
    list_tables,
    load_table,
)

__all__ = ["SEVERITY_MEANINGS", "audit_summary", "average_checks", "run_audit", "write_audit"]

_SWEEPS = {"alpha": "table7_alpha_sensitivity", "beta": "table8_beta_sensitivity"}
_K_DEFAULT = 3  # Sec. 4.1: "K-Means ... with the number of clusters K_c = 3 as default".


# --- 1. Averages ------------------------------------------------------------------------------


def average_checks() -> pd.DataFrame:
    """Recompute every printed ``Avg`` from the printed per-dataset values.

    Returns:
        One row per table row with an ``Avg``: ``table, row, reported, exact_mean`` (mean of the
        printed values, exact decimal), ``rounded_mean`` (half-up to 1 decimal), ``abs_diff``
        (``|reported - exact_mean|``) and ``consistent`` (``abs_diff <= 0.05``: the printed
        value is a valid rounding of the mean of the printed values).
    """
    out = []
    for table in list_tables():
        df = load_table(table)
        if "Avg" not in df:
            continue
        cols = [
            c
            for c in df.columns[df.columns.get_loc("Avg") - 1 :: -1]
            if c not in ("method", "venue", "variant", "alpha", "beta", "n_clusters", "sga", "cce")
        ][::-1]
        for _, r in df.iterrows():
            mean = sum(Decimal(str(r[c])) for c in cols) / len(cols)
            diff = abs(Decimal(str(r["Avg"])) - mean)
            out.append(
                {
                    "table": table,
                    "row": row_label(df, r),
                    "n_values": len(cols),
                    "reported": float(r["Avg"]),
                    "exact_mean": float(mean),
                    "rounded_mean": round_half_up(mean),
                    "abs_diff": float(diff),
                    "consistent": diff <= Decimal("0.05"),
                }
            )
    return pd.DataFrame(out)


def _check_averages() -> list[dict]:
    checks = average_checks()
    found = []
    for _, c in checks[~checks["consistent"]].iterrows():
        severity = "warning" if c["abs_diff"] <= 0.1 + EPS else "error"
        found.append(
            finding(
                f"avg:{c['table']}[{c['row']}]",
                severity,
                [c["table"]],
                [cell_name(c["table"], c["row"], "Avg")],
                c["rounded_mean"],
                c["reported"],
                f"Avg printed {c['reported']:.1f} but the mean of the {c['n_values']} printed values "
                f"is {c['exact_mean']:g} (rounds to {c['rounded_mean']:.1f}); off by "
                f"{c['abs_diff']:.4f} > 0.05"
                + (
                    "; within 0.1, so explainable only if the Avg was taken over unrounded values"
                    if severity == "warning"
                    else ""
                ),
            )
        )
    found.append(
        finding(
            "avg:summary",
            "info",
            sorted(set(checks["table"])),
            [],
            int(len(checks)),
            int(checks["consistent"].sum()),
            f"{int(checks['consistent'].sum())} of {len(checks)} printed Avg values equal the rounded "
            f"mean of their row's printed values (|diff| <= 0.05)",
        )
    )
    return found


# --- 2. Printed gains -------------------------------------------------------------------------


def _delta_references(t2: dict[str, dict[str, float]], cols: list[str]) -> dict[str, dict[str, tuple[str, float]]]:
    """The references a printed gain of Table 2 can be measured from, per column: ``{name: {col: (row, value)}}``:
    the named baseline (SegEarth-OV) and the runner-up (the best method other than AlignCLIP in that column)."""
    others = {m: v for m, v in t2.items() if not m.startswith("AlignCLIP")}
    runner_up = {c: max(others, key=lambda m, c=c: others[m][c]) for c in cols}
    return {
        "the named baseline SegEarth-OV": {c: ("SegEarth-OV", t2["SegEarth-OV"][c]) for c in cols},
        "the runner-up (best other method)": {c: (runner_up[c], others[runner_up[c]][c]) for c in cols},
    }


def _check_deltas() -> list[dict]:
    """Printed gains judged by the convention of their own row: the reference most of the row's cells follow is
    inferred, and every cell that breaks it is flagged, also when it happens to match another reference."""
    t2 = table_rows("table2_main")
    found = []
    cols = RS_COLUMNS + ["Avg"]
    refs = _delta_references(t2, cols)
    rows = {}
    for variant, printed in TABLE2_DELTA_ROWS.items():
        gaps = {name: {c: round_half_up(t2[variant][c] - ref[c][1]) for c in cols} for name, ref in refs.items()}
        follows = {
            name: [c for c, p in zip(cols, printed, strict=True) if same_value(p, gaps[name][c])] for name in refs
        }
        # only cells where the references give different gains can tell the conventions apart
        telling = [c for c in cols if len({gaps[n][c] for n in refs}) > 1]
        votes = {n: sum(c in telling for c in follows[n]) for n in refs}
        rows[variant] = (printed, gaps, follows, telling, votes)
    table_votes = {n: sum(r[4][n] for r in rows.values()) for n in refs}
    for variant, (printed, gaps, follows, telling, votes) in rows.items():
        best = max(votes.values())
        leaders = [n for n in refs if votes[n] == best]
        if len(leaders) == 1:
            convention, basis = leaders[0], f"{best} of the row's {len(telling)} cells that tell them apart"
        else:  # the row alone cannot decide: the table's other delta rows do
            convention = max(leaders, key=lambda n: table_votes[n])
            basis = (
                f"the row ties ({best} of {len(telling)} telling cells each), so the table's delta rows decide "
                f"({table_votes[convention]} of {sum(len(r[3]) for r in rows.values())} telling cells)"
            )
        for col, p in zip(cols, printed, strict=True):
            if col in follows[convention]:
                continue
            ref_row, ref_value = refs[convention][col]
            expected = gaps[convention][col]
            matches = [n for n in refs if n != convention and col in follows[n]]
            cells = [f"table2_main[{variant} delta, {col}]", cell_name("table2_main", variant, col)] + [
                cell_name("table2_main", refs[n][col][0], col) for n in refs
            ]
            head = (
                f"Table 2 prints (+{p:.1f}) under {variant} on {col}; the row's convention is the gap to {convention}, "
                f"here {ref_row}: {t2[variant][col]:.1f} - {ref_value:.1f} = {expected:+.1f}"
            )
            if matches:
                other = matches[0]
                message = (
                    f"{head}; the printed value is instead the gap to {other} ({refs[other][col][0]} "
                    f"{refs[other][col][1]:.1f}): the row mixes references"
                )
                severity = "warning"
            else:
                same_as = [
                    v
                    for v in TABLE2_DELTA_ROWS
                    if v != variant and same_value(TABLE2_DELTA_ROWS[v][cols.index(col)], p)
                ]
                message = (
                    head
                    + "; the printed value matches no reference"
                    + (f" (it equals the value printed for {same_as[0]})" if same_as else "")
                )
                severity = "error"
            found.append(
                finding(f"delta:table2_main[{variant}, {col}]", severity, ["table2_main"], cells, expected, p, message)
            )
        found.append(
            finding(
                f"delta:table2_main[{variant}]:convention",
                "info",
                ["table2_main"],
                [],
                convention,
                len(follows[convention]),
                f"the delta row under {variant} measures gains from {convention} (inferred from {basis}); "
                f"{len(follows[convention])} of {len(cols)} cells follow it, "
                + ", ".join(f"{len(follows[n])} match {n}" for n in refs if n != convention),
            )
        )
    ok = []
    for table, row, ref, arrow in AVG_ARROWS:
        rows = table_rows(table)
        got = round_half_up(rows[row]["Avg"] - rows[ref]["Avg"])
        cells = [cell_name(table, row, "Avg"), cell_name(table, ref, "Avg")]
        if same_value(got, arrow):
            ok.append(f"{table} {row} ↑{arrow:.1f}")
            continue
        found.append(
            finding(
                f"delta:{table}[{row}, Avg]",
                "error",
                [table],
                cells,
                got,
                arrow,
                f"{table} prints ↑{arrow:.1f} for {row} but its Avg minus {ref}'s is {got:+.1f}",
            )
        )
    found.append(
        finding(
            "delta:arrows",
            "info",
            sorted({a[0] for a in AVG_ARROWS}),
            [],
            len(AVG_ARROWS),
            len(ok),
            "printed Avg arrows equal the difference of the printed Avg values: " + "; ".join(ok),
        )
    )
    return found


# --- 3. The same configuration in several tables -----------------------------------------------


def _compare_group(gid: str, ref: tuple[str, str, dict], others: list[tuple[str, str, dict]]) -> list[dict]:
    rt, rl, rv = ref
    found, n = [], 0
    for table, label, values in others:
        for col, v in values.items():
            if col not in rv:
                continue
            n += 1
            if not same_value(v, rv[col]):
                found.append(
                    finding(
                        f"{gid}:{table}[{label}, {col}]",
                        "error",
                        [rt, table],
                        [cell_name(rt, rl, col), cell_name(table, label, col)],
                        rv[col],
                        v,
                        f"the same configuration is {rv[col]:g} in {rt} ({rl}) but {v:g} in {table} ({label}) on {col}",
                    )
                )
    if not found:
        where = ", ".join(f"{t} ({lab})" for t, lab, _ in others)
        found.append(
            finding(
                f"{gid}:summary",
                "info",
                [rt] + [o[0] for o in others],
                [],
                n,
                n,
                f"{rt} ({rl}) equals {where} in all {n} shared cells",
            )
        )
    return found


def _check_same_config() -> list[dict]:
    t2, t3 = table_rows("table2_main"), table_rows("table3_component_ablation")
    t11 = table_rows("table11_compute")
    t9, t10, t13 = (
        table_rows("table9_clusters_sensitivity"),
        table_rows("table10_sga_plugin"),
        table_rows("table13_densecrf"),
    )
    mi = {m: {"Avg": v["miou_avg"]} for m, v in t11.items()}
    t11n = "table11_compute"
    d, s, seg = "AlignCLIP-D", "AlignCLIP-S", "SegEarth-OV"
    found = _compare_group(
        f"same-config:{d}",
        ("table2_main", d, t2[d]),
        [
            ("table3_component_ablation", "SGA+CCE", t3["SGA+CCE"]),
            ("table9_clusters_sensitivity", f"{d} n_clusters=3", t9[f"{d} n_clusters=3"]),
            ("table13_densecrf", "AlignCLIP-D", t13["AlignCLIP-D"]),
            (t11n, "AlignCLIP-D", mi["AlignCLIP-D"]),
        ],
    )
    found += _compare_group(
        f"same-config:{s}",
        ("table2_main", s, t2[s]),
        [
            ("table9_clusters_sensitivity", f"{s} n_clusters=3", t9[f"{s} n_clusters=3"]),
            (t11n, "AlignCLIP-S", mi["AlignCLIP-S"]),
        ],
    )
    found += _compare_group(
        f"same-config:{seg}",
        ("table2_main", seg, t2[seg]),
        [("table3_component_ablation", "SegEarth-OV", t3["SegEarth-OV"]), (t11n, "SegEarth-OV", mi["SegEarth-OV"])],
    )
    for m in ("ProxyCLIP", "SC-CLIP", "CorrCLIP"):
        found += _compare_group(f"same-config:{m}", ("table2_main", m, t2[m]), [("table10_sga_plugin", m, t10[m])])
    for m in ("Trident", "CorrCLIP"):
        found += _compare_group(f"same-config:{m}-compute", ("table2_main", m, t2[m]), [(t11n, m, mi[m])])
    t3n = "table3_component_ablation"
    found += _compare_group("same-config:SGA-only", (t3n, "SGA", t3["SGA"]), [(t11n, "DINO +SGA", mi["DINO +SGA"])])
    found += _compare_group("same-config:CCE-only", (t3n, "CCE", t3["CCE"]), [(t11n, "DINO +CCE", mi["DINO +CCE"])])
    found.append(
        finding(
            "same-config:table11-SAM-ablations",
            "info",
            [t11n],
            [cell_name(t11n, "SAM +SGA", "miou_avg"), cell_name(t11n, "SAM +CCE", "miou_avg")],
            None,
            [mi["SAM +SGA"]["Avg"], mi["SAM +CCE"]["Avg"]],
            "cannot be checked: no table gives per-dataset values for the SAM-variant ablations "
            f"(SAM +SGA {mi['SAM +SGA']['Avg']:.1f}, SAM +CCE {mi['SAM +CCE']['Avg']:.1f})",
        )
    )
    # Table 4 (main text) is the DINO part of Tables 7-9 on four datasets.
    t4_found, n4 = [], 0
    for (table, key), rows in TABLE4_SENSITIVITY.items():
        sweep = sweep_rows(table, d)
        for k, v in rows.items():
            label, n4 = f"{d} {key}={k}", n4 + len(v)
            t4_found += [
                f
                for f in _compare_group(
                    f"same-config:table4[{label}]",
                    (table, label, sweep[float(k)]),
                    [("table4 (Sec. 4.3)", label, dict(zip(TABLE4_COLUMNS, v, strict=True)))],
                )
                if f["severity"] != "info"
            ]
    t4_tables = ["table4 (Sec. 4.3)", *[t for t, _ in TABLE4_SENSITIVITY]]
    return found + (
        t4_found
        or [
            finding(
                "same-config:table4:summary",
                "info",
                t4_tables,
                [],
                n4,
                n4,
                f"Table 4 equals the AlignCLIP-D rows of Tables 7-9 in all {n4} cells",
            )
        ]
    )


def _check_sensitivity_vs_table2() -> list[dict]:
    t2, t6 = table_rows("table2_main"), load_table("table6_hyperparameters")
    found, n_ok = [], 0
    for variant in VARIANTS:
        for param, table in _SWEEPS.items():
            chosen = t6[(t6["variant"] == variant) & (t6["hyperparameter"] == param)].iloc[0]
            sweep = sweep_rows(table, variant)
            for ds in RS_COLUMNS:
                x, ref = float(chosen[ds]), t2[variant][ds]
                c6 = cell_name("table6_hyperparameters", f"{variant} {param}", ds)
                if x not in sweep:
                    found.append(
                        finding(
                            f"hp-range:{variant}:{param}:{ds}",
                            "warning",
                            ["table6_hyperparameters", table],
                            [c6],
                            f"{param} in {sorted(sweep)}",
                            x,
                            f"Table 6 sets {param}={fmt_value(x)} for {variant} on {ds}, outside the swept "
                            f"range {fmt_value(min(sweep))}-{fmt_value(max(sweep))} of {table}; its Table 2 "
                            f"value {ref:.1f} cannot be confirmed there (best swept: "
                            f"{max(v[ds] for v in sweep.values()):.1f})",
                        )
                    )
                    continue
                got = sweep[x][ds]
                if same_value(got, ref):
                    n_ok += 1
                    continue
                at = [fmt_value(k) for k, v in sweep.items() if same_value(v[ds], ref)]
                other = t6[(t6["variant"] != variant) & (t6["hyperparameter"] == param)].iloc[0]
                hint = (
                    f"; Table 6 gives {other['variant']} {param}={fmt_value(float(other[ds]))} here"
                    if not same_value(other[ds], x)
                    else ""
                )
                found.append(
                    finding(
                        f"hp-value:{variant}:{param}:{ds}",
                        "error",
                        ["table2_main", "table6_hyperparameters", table],
                        [
                            cell_name("table2_main", variant, ds),
                            c6,
                            cell_name(table, f"{variant} {param}={fmt_value(x)}", ds),
                        ],
                        ref,
                        got,
                        f"{table} reports {got:.1f} for {variant} on {ds} at Table 6's {param}="
                        f"{fmt_value(x)}, but Table 2 reports {ref:.1f}; "
                        + (
                            f"Table 2's value appears in the sweep at {param} = {', '.join(at)}"
                            if at
                            else "Table 2's value appears nowhere in the sweep"
                        )
                        + hint,
                    )
                )
    found.append(
        finding(
            "hp-value:summary",
            "info",
            ["table2_main", "table6_hyperparameters", *_SWEEPS.values()],
            [],
            None,
            n_ok,
            f"{n_ok} dataset/variant/parameter cells of Tables 7-8 at Table 6's setting equal Table 2",
        )
    )
    return found


# --- 4. Chosen hyper-parameters vs the sweeps --------------------------------------------------


def _check_best_of_sweep() -> list[dict]:
    t6 = load_table("table6_hyperparameters")
    found, ties, n = [], [], 0
    sweeps = {**_SWEEPS, "n_clusters": "table9_clusters_sensitivity"}
    for variant in VARIANTS:
        for param, table in sweeps.items():
            sweep = sweep_rows(table, variant)
            row = t6[(t6["variant"] == variant) & (t6["hyperparameter"] == param)]
            for ds in RS_COLUMNS:
                x = float(row.iloc[0][ds]) if len(row) else float(_K_DEFAULT)
                if x not in sweep:
                    continue  # reported by the range check
                n += 1
                best = max(v[ds] for v in sweep.values())
                better = [fmt_value(k) for k, v in sweep.items() if v[ds] > sweep[x][ds] + EPS]
                if better:
                    found.append(
                        finding(
                            f"hp-best:{variant}:{param}:{ds}",
                            "warning",
                            ["table6_hyperparameters", table],
                            [cell_name(table, f"{variant} {param}={fmt_value(x)}", ds)],
                            best,
                            sweep[x][ds],
                            f"chosen {param}={fmt_value(x)} gives {sweep[x][ds]:.1f} for {variant} on "
                            f"{ds} but {param} = {', '.join(better)} scores higher (best {best:.1f})",
                        )
                    )
                tied = [fmt_value(k) for k, v in sweep.items() if k != x and same_value(v[ds], best)]
                if not better and tied:
                    ties.append(f"{variant} {ds} {param}={fmt_value(x)} ties {', '.join(tied)}")
    found.append(
        finding(
            "hp-best:summary",
            "info",
            ["table6_hyperparameters", *sweeps.values()],
            [],
            n,
            n - len(found),
            f"{n - len(found)} of {n} chosen settings inside the sweeps score a "
            f"maximum of their sweep (K_c: the default 3); ties: {'; '.join(ties) or 'none'}",
        )
    )
    return found


# --- Entry points ------------------------------------------------------------------------------


def run_audit() -> list[dict]:
    """Check the paper's tables and text claims for internal consistency.

    Returns:
        Findings in a fixed order, each ``{"id", "severity", "tables", "cells", "expected",
        "found", "message"}`` with ``severity`` in ``"error" | "warning" | "info"`` and cells
        named like ``"table2_main[AlignCLIP-D, Avg]"``.
    """
    return (
        _check_averages()
        + _check_deltas()
        + _check_same_config()
        + _check_sensitivity_vs_table2()
        + _check_best_of_sweep()
        + check_text()
    )


def write_audit(path: str | os.PathLike) -> list[dict]:
    """Run the audit and write ``{"kind": "paper-audit", "n_findings", "findings"}`` as JSON.

    The file is written to a temporary file beside ``path`` and moved into place, so a reader
    never sees a half-written file.

    Args:
        path: Output JSON path; parent folders are created.

    Returns:
        The findings written.
    """
    findings = run_audit()
    doc = {"kind": "paper-audit", "n_findings": len(findings), "findings": findings}
    write_json(path, doc, overwrite=True)
    return findings


#: Severity -> what a finding of that severity means (the order is the reading order).
SEVERITY_MEANINGS: dict[str, str] = {
    "error": "two printed numbers that cannot both be right",
    "warning": "off by less than rounding or an unstated convention could explain, or a setting the tables cannot confirm",
    "info": "a check that holds, or a claim the paper's numbers cannot check",
}


def audit_summary(findings: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The audit at a glance, for readers: counts by severity and the definite inconsistencies.

    Args:
        findings: :func:`run_audit`'s list (or the ``findings`` of ``paper_audit.json``).

    Returns:
        ``(counts, errors)``: one row per severity (``severity``, ``findings``, ``meaning``), and one row per
        ``"error"`` finding (``finding``, which names its table and cell, ``printed``, ``the other cells give``, at
        the paper's precision, and ``why``).
    """
    severities = [f["severity"] for f in findings]
    counts = pd.DataFrame(
        {
            "severity": list(SEVERITY_MEANINGS),
            "findings": [severities.count(s) for s in SEVERITY_MEANINGS],
            "meaning": list(SEVERITY_MEANINGS.values()),
        }
    )
    errors = pd.DataFrame(
        [
            {
                "finding": f["id"],
                "printed": _as_printed(f["found"]),
                "the other cells give": _as_printed(f["expected"]),
                "why": f["message"],
            }
            for f in findings
            if f["severity"] == "error"
        ],
        columns=["finding", "printed", "the other cells give", "why"],
    )
    return counts, errors


def _as_printed(value) -> str:
    """A number as the paper prints it (one decimal: ``2.8``, ``48.0``), anything else as its text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
