"""Sweeps, ablation/plug-in runs and claimed-gain checks (alignclip.sweeps, .sweep_gains)."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from alignclip.errors import ConfigError, InputError
from alignclip.metrics import ConfusionAccumulator
from alignclip.study import grid_runs, paper_comparison, start_study
from alignclip.sweep_gains import (
    TABLE3,
    TABLE3_CLAIMS,
    TABLE3_ROWS,
    average_gains,
    claimed_gains,
    paper_gains,
    plot_gains,
    plot_plugin,
    plugin_table,
    sweep_claims,
    wide_comparison,
)
from alignclip.sweeps import (
    TABLE4_DATASETS,
    describe_runs,
    plot_sweep,
    plugin_claims,
    plugin_runs,
    run_sweep,
    settings_table,
    sweep_comparison,
    sweep_label,
    sweep_runs,
    sweep_summary,
    sweep_table,
)

matplotlib.use("Agg")


@pytest.fixture
def ctx(tmp_path):
    return start_study(
        datasets=["potsdam", "openearthmap"], output_dir=tmp_path, smoke_images=1, smoke_size=64
    )


# ----------------------------------------------------------------------------------------- runs
def test_sweep_point_at_the_table6_value_is_the_plain_preset_run(ctx):
    runs = sweep_runs(ctx, ["alignclip-d"], "alpha", [0.1, 0.3])
    got = [(r.dataset, r.label, r.overrides) for r in runs]
    # Table 6: α = 0.3 on Potsdam, 0.1 on OpenEarthMap -> those points are the shared "alignclip-d"
    # runs
    assert got == [
        ("potsdam", "alignclip-d alpha=0.1", {"alpha": 0.1}),
        ("potsdam", "alignclip-d", {}),
        ("openearthmap", "alignclip-d", {}),
        ("openearthmap", "alignclip-d alpha=0.3", {"alpha": 0.3}),
    ]
    k = sweep_runs(ctx, ["alignclip-s"], "n_clusters", [3, 15])
    assert [r.label for r in k] == ["alignclip-s", "alignclip-s n_clusters=15"] * 2


def test_sweep_runs_reject_unknown_field_and_empty_grid(ctx):
    with pytest.raises(ConfigError, match="valid fields: .*alpha"):
        sweep_runs(ctx, ["alignclip-d"], "alpah", [0.1])
    with pytest.raises(InputError, match="no values"):
        sweep_runs(ctx, ["alignclip-d"], "beta", [])


def test_plugin_runs_fix_alpha_and_keep_the_plain_baseline(ctx):
    runs = plugin_runs(ctx, ["clip"], alpha=0.1)
    assert [(r.label, r.preset, r.overrides) for r in runs[:2]] == [
        ("clip", "clip", {}),
        ("clip+sga alpha=0.1", "clip+sga", {"alpha": 0.1}),
    ]
    assert ctx.config(runs[1].preset, "potsdam", **runs[1].overrides).sga
    assert plugin_claims(["clip", "naclip"]) == [
        ("clip", "clip+sga alpha=0.1"),
        ("naclip", "naclip+sga alpha=0.1"),
    ]
    assert sweep_label("alignclip-d", "n_clusters", 12) == "alignclip-d n_clusters=12"


# ------------------------------------------------------------------------------------ paper lookups
def _sweep_frame(rows):
    cols = ["variant", "param", "value", "dataset", "miou", "ci_low", "ci_high", "kind"]
    return pd.DataFrame(rows, columns=cols)


def test_sweep_comparison_reads_tables_7_to_9():
    res = _sweep_frame(
        [
            ("alignclip-d", "alpha", 0.3, "potsdam", 50.0, 49.0, 51.0, "reproduction"),
            ("alignclip-s", "n_clusters", 3, "vdd", 48.1, 47.0, 49.0, "reproduction"),
            (
                "alignclip-d",
                "beta",
                0.7,
                "vdd",
                40.0,
                39.0,
                41.0,
                "reproduction",
            ),  # not swept by the paper
            (
                "alignclip-d",
                "top_n",
                2,
                "vdd",
                40.0,
                39.0,
                41.0,
                "reproduction",
            ),  # Fig. 4: no numbers
        ]
    )
    cmp = sweep_comparison(res)
    assert cmp["paper"].iloc[0] == pytest.approx(47.9) and cmp["delta"].iloc[0] == pytest.approx(
        2.1
    )
    assert cmp["paper"].iloc[1] == pytest.approx(48.1) and cmp["delta"].iloc[1] == pytest.approx(
        0.0
    )
    assert math.isnan(cmp["paper"].iloc[2]) and math.isnan(cmp["paper"].iloc[3])


def test_sweep_table_and_summary_on_the_papers_own_numbers():
    rows = []
    for value in (0.1, 0.2, 0.3, 0.4, 0.5):
        for ds, paper in (
            ("openearthmap", {0.1: 40.1, 0.2: 40.1, 0.3: 39.8, 0.4: 39.3, 0.5: 38.8}),
            ("potsdam", {0.1: 47.5, 0.2: 47.6, 0.3: 47.9, 0.4: 47.8, 0.5: 47.7}),
        ):
            rows.append(
                ("alignclip-d", "alpha", value, ds, paper[value] + 1.0, 0, 100, "pipeline-check")
            )
    cmp = sweep_comparison(_sweep_frame(rows))
    table = sweep_table(cmp, "delta")
    assert list(table.columns) == ["OpenEarthMap", "Potsdam", "Avg"]
    assert (table.to_numpy() == 1.0).all()
    assert list(sweep_table(cmp, "paper", datasets=["potsdam"])["Potsdam"]) == [
        47.5,
        47.6,
        47.9,
        47.8,
        47.7,
    ]
    summary = sweep_summary(cmp).set_index("dataset")
    assert summary.loc["OpenEarthMap", "paper_best"] == "0.1/0.2"  # tie as printed in Table 7
    assert summary.loc["Potsdam", "ours_best"] == "0.3"
    assert summary.loc["OpenEarthMap", "paper_range"] == pytest.approx(1.3)
    assert TABLE4_DATASETS == ["openearthmap", "potsdam", "uavid", "vdd"]


def test_table3_gains_and_arrows():
    gains = paper_gains(TABLE3, TABLE3_CLAIMS, TABLE3_ROWS).set_index(["method", "dataset"])
    assert gains.loc[("segearth-ov+sga", "vaihingen"), "paper_delta"] == pytest.approx(32.3 - 29.1)
    assert gains.loc[("segearth-ov+cce", "loveda"), "paper_delta"] == pytest.approx(34.9 - 36.9)
    assert gains.loc[("alignclip-d", "vdd"), "paper_delta"] == pytest.approx(48.4 - 45.3)
    assert claimed_gains(TABLE3, TABLE3_CLAIMS, TABLE3_ROWS) == [1.0, 0.3, 2.2]
    assert claimed_gains(TABLE3, [("segearth-ov", "nothing")], TABLE3_ROWS) == [None]


# --------------------------------------------------------------------------------- gains on results
def _write_result(path, cms, kind="reproduction"):
    acc = ConfusionAccumulator(2)
    for i, cm in enumerate(cms):
        acc.add_matrix(np.asarray(cm, dtype=np.int64), f"img{i}")
    total = acc.total().astype(float)
    inter = np.diag(total)
    miou = float(np.mean(inter / (total.sum(0) + total.sum(1) - inter))) * 100
    path.write_text(
        json.dumps(
            {
                "kind": kind,
                "miou": miou,
                "confusion_matrix": acc.total().tolist(),
                "per_image_confusion": acc.to_compact(),
            }
        )
    )
    return miou


def _results(tmp_path, runs, kind="reproduction"):
    """``{(label, dataset): [per-image matrices]}`` -> results frame with RESULT files."""
    rows = []
    for (label, dataset), cms in runs.items():
        path = tmp_path / f"{label.replace(' ', '_')}_{dataset}.json"
        miou = _write_result(path, cms, kind)
        rows.append(
            dict(
                label=label,
                preset=label.split(" ")[0],
                dataset=dataset,
                miou=miou,
                ci_low=miou - 1,
                ci_high=miou + 1,
                n_images=len(cms),
                kind=kind,
                path=str(path),
            )
        )
    return pd.DataFrame(rows)


HALF = [[5, 5], [0, 10]]  # class 0: IoU 10/20 over two images, class 1: 20/30 -> mIoU 58.33
PERFECT = [[10, 0], [0, 10]]


def test_average_gain_is_exact_when_every_image_improves_alike(tmp_path):
    runs = {
        (lab, ds): [cm, cm]
        for ds in ("potsdam", "vdd")
        for lab, cm in (("a", HALF), ("b", PERFECT))
    }
    res = _results(tmp_path, runs)
    out = average_gains(res, [("a", "b"), ("a", "a")], claimed=[1.0, None], n_boot=200).set_index(
        "method"
    )
    gain = 100 - 100 * (0.5 + 2 / 3) / 2
    assert out.loc["b", "ours"] == pytest.approx(gain)
    assert (out.loc["b", "ci_low"], out.loc["b", "ci_high"]) == pytest.approx((gain, gain))
    assert out.loc["b", "verdict"] == "supported" and out.loc["b", "paper_in_ci"] is False
    assert out.loc["b", "n_datasets"] == 2
    assert out.loc["a", "verdict"] == "not distinguishable from zero" and pd.isna(
        out.loc["a", "paper"]
    )
    fake = _results(tmp_path, runs, kind="pipeline-check")
    assert average_gains(fake, [("a", "b")], n_boot=50)["verdict"].iloc[0] == "pipeline check"


def test_average_gain_errors(tmp_path):
    res = _results(tmp_path, {("a", "vdd"): [HALF], ("b", "potsdam"): [HALF]})
    with pytest.raises(InputError, match="no dataset has runs"):
        average_gains(res, [("a", "b")])
    with pytest.raises(InputError, match="one per claim"):
        average_gains(res, [("a", "b")], claimed=[1.0, 2.0])
    res = _results(tmp_path, {("a", "vdd"): [HALF], ("b", "vdd"): [HALF, HALF]})
    with pytest.raises(InputError, match="different images"):
        average_gains(res, [("a", "b")])


def test_sweep_claims_compare_the_best_value_with_every_other(tmp_path):
    res = _results(
        tmp_path,
        {
            ("alignclip-d", "vdd"): [PERFECT, PERFECT],
            ("alignclip-d top_n=2", "vdd"): [HALF, HALF],
            ("alignclip-d top_n=3", "vdd"): [PERFECT, PERFECT],
        },
    )
    res.insert(0, "value", [1, 2, 3])
    res.insert(0, "param", "top_n")
    res.insert(0, "variant", "alignclip-d")
    out = sweep_claims(res, best=1, n_boot=100)
    assert list(out["value"]) == [2, 3]
    assert list(out["method"]) == ["alignclip-d top_n=1"] * 2
    assert out["delta"].iloc[0] == pytest.approx(100 - 100 * (0.5 + 2 / 3) / 2)
    assert list(out["verdict"]) == ["supported", "not distinguishable from zero"]


def test_wide_comparison_and_plugin_table(tmp_path):
    runs = {
        (lab, ds): [cm]
        for ds in ("potsdam", "vdd")
        for lab, cm in (("clip", HALF), ("clip+sga alpha=0.1", PERFECT))
    }
    res = _results(tmp_path, runs, kind="pipeline-check")
    cmp = paper_comparison(res, "table2_main", {"clip": "CLIP"})
    wide = wide_comparison(cmp)
    assert list(wide.index.get_level_values("row")) == [
        "paper",
        "ours",
        "ci_low",
        "ci_high",
        "delta",
    ]
    assert list(wide.columns) == ["Potsdam", "VDD", "Avg."]
    assert wide.loc[("clip", "ours"), "VDD"] == pytest.approx(round(res["miou"].iloc[0], 2))
    raw = plugin_table(res, ["clip"], alpha=0.1, n_boot=50)
    table = raw.set_index("method")
    assert table.loc["clip", "status"] == "pipeline check"
    assert table.loc["clip", "gain"] == pytest.approx(100 - res["miou"].iloc[0])
    assert table.loc["clip", "paper_base"] == pytest.approx(11.4)  # CLIP's Table 2 average
    assert table.loc[["ProxyCLIP", "SC-CLIP", "CorrCLIP"], "paper_gain"].tolist() == [1.7, 1.9, 1.6]
    assert set(table.loc[["ProxyCLIP", "SC-CLIP", "CorrCLIP"], "status"]) == {"reported only"}
    assert plot_plugin(raw).axes[0].get_title().endswith("PIPELINE CHECK (random weights)")


def test_plots_say_pipeline_check(tmp_path):
    rows = [
        ("alignclip-d", "beta", v, ds, 40 + v, 39, 41, "pipeline-check")
        for v in (0.1, 0.3)
        for ds in ("potsdam", "vdd", "uavid")
    ]
    fig = plot_sweep(sweep_comparison(_sweep_frame(rows)), title="beta", ncols=2)
    assert "PIPELINE CHECK" in fig._suptitle.get_text()
    assert sum(ax.get_visible() for ax in fig.axes) == 3
    claims = pd.DataFrame(
        dict(
            baseline="a",
            method="b",
            dataset=["potsdam", "vdd"],
            delta=[1.0, -1.0],
            ci_low=[0.5, -2.0],
            ci_high=[1.5, 0.2],
            verdict="pipeline check",
        )
    )
    paper = pd.DataFrame(
        dict(baseline="a", method="b", dataset=["potsdam", "vdd"], paper_delta=[0.1, 0.2])
    )
    ax = plot_gains(claims, paper, title="gains").axes[0]
    assert "PIPELINE CHECK" in ax.get_title()
    matplotlib.pyplot.close("all")


# ------------------------------------------------------------------------------- end to end (smoke)
def test_run_sweep_shares_the_default_run_across_sweeps(tmp_path):
    ctx = start_study(
        datasets=["vdd"], output_dir=tmp_path, smoke_images=1, smoke_size=64, n_boot=50
    )
    threads = torch.get_num_threads()
    k = run_sweep(ctx, ["alignclip-d"], "n_clusters", [3, 2], progress=False)
    assert torch.get_num_threads() == threads
    assert list(k["label"]) == ["alignclip-d", "alignclip-d n_clusters=2"]
    assert list(k["value"]) == [3, 2] and set(k["param"]) == {"n_clusters"}
    default = tmp_path / "runs" / "alignclip-d" / "vdd.json"
    stamp = default.stat().st_mtime_ns
    b = run_sweep(ctx, ["alignclip-d"], "beta", [0.3], progress=False)  # Table 6: β = 0.3 on VDD
    assert (
        list(b["label"]) == ["alignclip-d"] and default.stat().st_mtime_ns == stamp
    )  # reused, not rerun
    assert b["miou"].iloc[0] == k["miou"].iloc[0]
    assert set(sweep_comparison(k, b)["kind"]) == {"pipeline-check"}


def test_describe_runs_and_settings_table(ctx):
    runs = grid_runs(["segearth-ov", "segearth-ov+sga", "alignclip-d"], ctx.datasets)
    desc = describe_runs(
        ctx, runs, columns=("sga", "cce", "templates", "alpha", "beta", "n_clusters")
    )
    assert desc.loc["segearth-ov", "alpha"] == "–" and desc.loc["segearth-ov", "beta"] == "–"
    assert (
        desc.loc["segearth-ov+sga", "alpha"] == "per dataset"
        and desc.loc["segearth-ov+sga", "beta"] == "–"
    )
    assert (
        desc.loc["alignclip-d", "templates"] == "remote-sensing"
        and desc.loc["alignclip-d", "n_clusters"] == 3
    )
    alpha = settings_table(ctx, runs, "alpha")
    assert list(alpha.columns) == ["Potsdam", "OpenEarthMap"]
    assert alpha.loc["alignclip-d"].tolist() == [0.3, 0.1]  # Table 6
