"""Sweeps and ablation/plug-in runs (alignclip.study.sweeps); their gains are tested in test_gains.py."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import torch

from alignclip.errors import ConfigError, InputError
from alignclip.paper.names import TABLE4_DATASETS
from alignclip.study import grid_runs, start_study
from alignclip.study.sweeps import (
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
    return start_study(datasets=["potsdam", "openearthmap"], output_dir=tmp_path, smoke_images=1, smoke_size=64)


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
    assert cmp["paper"].iloc[0] == pytest.approx(47.9) and cmp["delta"].iloc[0] == pytest.approx(2.1)
    assert cmp["paper"].iloc[1] == pytest.approx(48.1) and cmp["delta"].iloc[1] == pytest.approx(0.0)
    assert math.isnan(cmp["paper"].iloc[2]) and math.isnan(cmp["paper"].iloc[3])


def test_sweep_table_and_summary_on_the_papers_own_numbers():
    rows = []
    for value in (0.1, 0.2, 0.3, 0.4, 0.5):
        for ds, paper in (
            ("openearthmap", {0.1: 40.1, 0.2: 40.1, 0.3: 39.8, 0.4: 39.3, 0.5: 38.8}),
            ("potsdam", {0.1: 47.5, 0.2: 47.6, 0.3: 47.9, 0.4: 47.8, 0.5: 47.7}),
        ):
            rows.append(("alignclip-d", "alpha", value, ds, paper[value] + 1.0, 0, 100, "pipeline-check"))
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


def test_plot_sweep_says_pipeline_check():
    rows = [
        ("alignclip-d", "beta", v, ds, 40 + v, 39, 41, "pipeline-check")
        for v in (0.1, 0.3)
        for ds in ("potsdam", "vdd", "uavid")
    ]
    fig = plot_sweep(sweep_comparison(_sweep_frame(rows)), title="beta", ncols=2)
    assert "PIPELINE CHECK" in fig._suptitle.get_text()
    assert sum(ax.get_visible() for ax in fig.axes) == 3
    matplotlib.pyplot.close("all")


# ------------------------------------------------------------------------------- end to end (smoke)
def test_run_sweep_shares_the_default_run_across_sweeps(tmp_path):
    ctx = start_study(datasets=["vdd"], output_dir=tmp_path, smoke_images=1, smoke_size=64, n_boot=50)
    threads = torch.get_num_threads()
    k = run_sweep(ctx, ["alignclip-d"], "n_clusters", [3, 2], progress=False)
    assert torch.get_num_threads() == threads
    assert list(k["label"]) == ["alignclip-d", "alignclip-d n_clusters=2"]
    assert list(k["value"]) == [3, 2] and set(k["param"]) == {"n_clusters"}
    default = Path(k["path"].iloc[0])  # the default run's RESULT.json
    assert len(list((tmp_path / "runs" / "alignclip-d").glob("vdd-*.json"))) == 2  # one file per fingerprint
    stamp = default.stat().st_mtime_ns
    b = run_sweep(ctx, ["alignclip-d"], "beta", [0.3], progress=False)  # Table 6: β = 0.3 on VDD
    assert list(b["label"]) == ["alignclip-d"] and default.stat().st_mtime_ns == stamp  # reused, not rerun
    assert b["miou"].iloc[0] == k["miou"].iloc[0]
    assert set(sweep_comparison(k, b)["kind"]) == {"pipeline-check"}


def test_describe_runs_and_settings_table(ctx):
    runs = grid_runs(["segearth-ov", "segearth-ov+sga", "alignclip-d"], ctx.datasets)
    desc = describe_runs(ctx, runs, columns=("sga", "cce", "templates", "alpha", "beta", "n_clusters"))
    assert desc.loc["segearth-ov", "alpha"] == "–" and desc.loc["segearth-ov", "beta"] == "–"
    assert desc.loc["segearth-ov+sga", "alpha"] == "per dataset" and desc.loc["segearth-ov+sga", "beta"] == "–"
    assert desc.loc["alignclip-d", "templates"] == "remote-sensing" and desc.loc["alignclip-d", "n_clusters"] == 3
    alpha = settings_table(ctx, runs, "alpha")
    assert list(alpha.columns) == ["Potsdam", "OpenEarthMap"]
    assert alpha.loc["alignclip-d"].tolist() == [0.3, 0.1]  # Table 6
