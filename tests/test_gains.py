"""Paired gains beside the paper's (alignclip.study.gains, .gains_report): Tables 3, 10, 12, 13 and sweep optima.

Hand-checkable cases: every image of a run has the same confusion matrix, so every bootstrap resample
gives the same difference and the interval is a point.
"""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from alignclip.errors import InputError
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.paper.names import TABLE3_ROWS
from alignclip.study.gains import (
    TABLE3,
    TABLE3_CLAIMS,
    TABLE12_PAIRS,
    average_gains,
    check_claims,
    claimed_gains,
    paired_deltas,
    paper_deltas,
    paper_gains,
    plugin_table,
    sweep_claims,
)
from alignclip.study.gains_report import (
    deltas_beside_paper,
    deltas_vs_paper,
    plot_deltas,
    plot_gains,
    plot_plugin,
    results_beside_paper,
    rounded,
    wide_comparison,
)
from alignclip.study.runs import switch_pairs, switch_runs
from alignclip.study.tables import paper_comparison

matplotlib.use("Agg")

PERFECT = [[10, 0], [0, 10]]  # mIoU 100
WORSE = [[10, 0], [5, 5]]  # IoU 10/15 and 5/10: mIoU 58.33
HALF = [[5, 5], [0, 10]]  # class 0: IoU 10/20 over two images, class 1: 20/30 -> mIoU 58.33


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


def _switch_results(tmp_path, kind):
    """SGA lowers Cityscapes (5 alike images) and changes nothing on ADE20k; Cityscapes listed first."""
    return _results(
        tmp_path,
        {
            ("base", "cityscapes"): [PERFECT] * 5,
            ("base+sga", "cityscapes"): [WORSE] * 5,
            ("base", "ade20k"): [PERFECT] * 5,
            ("base+sga", "ade20k"): [PERFECT] * 5,
        },
        kind,
    )


# ------------------------------------------------------------------------- per dataset and averaged
def test_paired_deltas_hand_case(tmp_path):
    gains = paired_deltas(
        _switch_results(tmp_path, "reproduction"), [("base", "base+sga")], claimed_sign=-1, n_boot=200
    )
    by = gains.set_index("dataset")
    drop = (10 / 15 + 5 / 10) / 2 * 100 - 100  # identical images: every resample gives the same difference
    assert list(by.index) == ["cityscapes", "ade20k", "Avg."]  # the results' order, then the average
    assert by.loc["cityscapes", "delta"] == pytest.approx(drop)
    assert by.loc["cityscapes", ["ci_low", "ci_high"]].tolist() == pytest.approx([drop, drop])
    assert by.loc["cityscapes", "verdict"] == "supported"  # a claimed drop, and a drop
    assert by.loc["ade20k", "delta"] == 0.0 and by.loc["ade20k", "verdict"] == "not distinguishable from zero"
    assert by.loc["Avg.", ["delta", "ci_low", "ci_high"]].tolist() == pytest.approx([drop / 2] * 3)
    assert by.loc["Avg.", "verdict"] == "supported" and by.loc["Avg.", "n_images"] == 10
    gain = paired_deltas(_switch_results(tmp_path, "reproduction"), [("base", "base+sga")], claimed_sign=1, n_boot=50)
    assert gain.set_index("dataset").loc["cityscapes", "verdict"] == "contradicted"


def test_pipeline_checks_get_no_verdict(tmp_path):
    gains = paired_deltas(
        _switch_results(tmp_path, "pipeline-check"), [("base", "base+sga")], claimed_sign=-1, n_boot=50
    )
    assert set(gains["verdict"]) == {"pipeline-check"}
    with pytest.raises(InputError, match="no dataset"):
        paired_deltas(_switch_results(tmp_path, "pipeline-check"), [("base", "other")])


def test_average_gain_is_exact_when_every_image_improves_alike(tmp_path):
    runs = {(lab, ds): [cm, cm] for ds in ("potsdam", "vdd") for lab, cm in (("a", HALF), ("b", PERFECT))}
    res = _results(tmp_path, runs)
    out = average_gains(res, [("a", "b"), ("a", "a")], claimed=[1.0, None], n_boot=200).set_index("method")
    gain = 100 - 100 * (0.5 + 2 / 3) / 2
    assert out.loc["b", "ours"] == pytest.approx(gain)
    assert (out.loc["b", "ci_low"], out.loc["b", "ci_high"]) == pytest.approx((gain, gain))
    assert out.loc["b", "verdict"] == "supported" and out.loc["b", "paper_in_ci"] is False
    assert out.loc["b", "n_datasets"] == 2
    assert out.loc["a", "verdict"] == "not distinguishable from zero" and pd.isna(out.loc["a", "paper"])
    fake = _results(tmp_path, runs, kind="pipeline-check")
    assert average_gains(fake, [("a", "b")], n_boot=50)["verdict"].iloc[0] == "pipeline-check"


def test_average_gains_are_the_avg_rows_of_paired_deltas_on_sorted_datasets(tmp_path):
    """One implementation: same numbers as paired_deltas with the datasets in alphabetical order."""
    rng = np.random.default_rng(0)
    runs = {
        (lab, ds): [rng.integers(0, 9, size=(2, 2)) for _ in range(4)]
        for ds in ("vdd", "potsdam", "isaid")
        for lab in ("a", "b")
    }
    res = _results(tmp_path, runs, kind="reproduction")
    avg = average_gains(res, [("a", "b")], n_boot=300, seed=3).iloc[0]
    ref = paired_deltas(res.sort_values("dataset", kind="stable"), [("a", "b")], n_boot=300, seed=3)
    ref = ref.set_index("dataset").loc["Avg."]
    assert [avg["ours"], avg["ci_low"], avg["ci_high"]] == pytest.approx([ref["delta"], ref["ci_low"], ref["ci_high"]])
    assert avg["verdict"] == ref["verdict"] and avg["n_datasets"] == 3
    unsorted = paired_deltas(res, [("a", "b")], n_boot=300, seed=3).set_index("dataset")
    assert list(unsorted.index) == ["vdd", "potsdam", "isaid", "Avg."]
    assert unsorted.loc["Avg.", "delta"] == pytest.approx(ref["delta"])  # the order moves only the seeds


def test_per_dataset_rows_equal_check_claims(tmp_path):
    rng = np.random.default_rng(1)
    runs = {
        (lab, ds): [rng.integers(0, 9, size=(2, 2)) for _ in range(4)]
        for ds in ("vdd", "potsdam")
        for lab in ("a", "b")
    }
    res = _results(tmp_path, runs)
    ours = paired_deltas(res.sort_values("dataset", kind="stable"), [("a", "b")], n_boot=100)
    ref = check_claims(res, [("a", "b")], n_boot=100)
    cols = list(ref.columns)
    pd.testing.assert_frame_equal(ours[ours["dataset"] != "Avg."][cols].reset_index(drop=True), ref)


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
    assert list(out.columns) == [
        "variant",
        "value",
        "baseline",
        "method",
        "dataset",
        "delta",
        "ci_low",
        "ci_high",
        "p_better",
        "verdict",
    ]
    with pytest.raises(InputError, match="was not swept"):
        sweep_claims(res, best=7)


def test_switch_runs():
    runs = switch_runs(["sclip"], ["ade20k", "cityscapes"], overrides={"alpha": 0.1})
    assert [(r.label, r.dataset, r.overrides) for r in runs] == [
        ("sclip", "ade20k", {}),
        ("sclip", "cityscapes", {}),
        ("sclip+sga", "ade20k", {"alpha": 0.1}),
        ("sclip+sga", "cityscapes", {"alpha": 0.1}),
    ]


def test_switch_pairs_and_rounding():
    assert switch_pairs(["sclip", "segearth-ov"]) == [("sclip", "sclip+sga"), ("segearth-ov", "segearth-ov+sga")]
    out = rounded(pd.DataFrame({"a": [-0.001, 1.236], "b": ["x", "y"]}))
    assert out["a"].tolist() == [0.0, 1.24] and str(out["a"].iloc[0]) == "0.0"


# ----------------------------------------------------------------------------------- paper's gains
def test_paper_deltas_tables_12_and_13():
    t13 = paper_deltas("table13_densecrf", [("AlignCLIP-D", "AlignCLIP-D+denseCRF")]).set_index("dataset")
    assert t13.loc["openearthmap", "delta"] == pytest.approx(0.8)
    assert t13.loc["Avg.", "delta"] == pytest.approx(0.9)
    t12 = paper_deltas("table12_natural_images", [("SC-CLIP", "SC-CLIP+SGA")]).set_index("dataset")
    assert t12.loc["pascal_voc20", "delta"] == pytest.approx(-6.4)
    assert len(t12) == 6


def test_table3_gains_and_arrows():
    gains = paper_gains(TABLE3, TABLE3_CLAIMS, TABLE3_ROWS).set_index(["method", "dataset"])
    assert gains.loc[("segearth-ov+sga", "vaihingen"), "paper_delta"] == pytest.approx(32.3 - 29.1)
    assert gains.loc[("segearth-ov+cce", "loveda"), "paper_delta"] == pytest.approx(34.9 - 36.9)
    assert gains.loc[("alignclip-d", "vdd"), "paper_delta"] == pytest.approx(48.4 - 45.3)
    assert list(gains.reset_index().columns) == ["method", "dataset", "baseline", "paper_delta"]
    assert len(gains) == 3 * 8  # no Avg. row: the averages are claimed_gains' arrows
    assert claimed_gains(TABLE3, TABLE3_CLAIMS, TABLE3_ROWS) == [1.0, 0.3, 2.2]
    assert claimed_gains(TABLE3, [("segearth-ov", "nothing")], TABLE3_ROWS) == [None]


# -------------------------------------------------------------------------------- tables and figures
def test_tables_and_figure(tmp_path):
    results = _switch_results(tmp_path, "pipeline-check")
    ours = paired_deltas(results, [("base", "base+sga")], claimed_sign=-1, n_boot=50)
    paper = paper_deltas("table12_natural_images", [("SC-CLIP", "SC-CLIP+SGA"), ("Trident", "Trident+SGA")])
    wide = deltas_beside_paper(ours, paper)
    assert list(wide.columns) == [
        "source",
        "comparison",
        "Cityscapes",
        "ADE20k",
        "COCO-Stuff",
        "Context59",
        "VOC20",
        "Avg.",
    ]
    assert list(wide["source"]) == ["paper", "paper", "ours"]
    assert pd.isna(wide.iloc[2]["COCO-Stuff"])  # not run by us
    table = results_beside_paper(results, "table12_natural_images")
    assert list(table["source"]).count("paper") == 6 and set(table["status"]) == {"reported only", "pipeline-check"}
    assert pd.isna(table.iloc[-1]["Avg"])  # two of five datasets: no average
    fig = plot_deltas(ours, paper, title="Table 12")
    assert "PIPELINE CHECK" in fig.axes[0].get_title()
    matplotlib.pyplot.close("all")


def test_deltas_vs_paper_uses_the_mean_of_the_papers_comparisons(tmp_path):
    ours = paired_deltas(_switch_results(tmp_path, "reproduction"), [("base", "base+sga")], claimed_sign=-1, n_boot=50)
    table = deltas_vs_paper(ours, paper_deltas("table12_natural_images", TABLE12_PAIRS)).set_index("dataset")
    assert table.loc["Cityscapes", "paper_delta"] == pytest.approx((-2.5 - 4.0 - 2.1) / 3)
    assert table.loc["Cityscapes", "paper_range"] == "-4.0..-2.1"
    assert not table.loc["Cityscapes", "paper_in_ci"]  # ours is a point at -41.7
    assert table.loc["ADE20k", "verdict"] == "not distinguishable from zero"
    assert list(table.index) == ["Cityscapes", "ADE20k", "Avg."]


def test_wide_comparison_and_plugin_table(tmp_path):
    runs = {
        (lab, ds): [cm] for ds in ("potsdam", "vdd") for lab, cm in (("clip", HALF), ("clip+sga alpha=0.1", PERFECT))
    }
    res = _results(tmp_path, runs, kind="pipeline-check")
    cmp = paper_comparison(res, "table2_main", {"clip": "CLIP"})
    wide = wide_comparison(cmp)
    assert list(wide.index.get_level_values("row")) == ["paper", "ours", "ci_low", "ci_high", "delta"]
    assert list(wide.columns) == ["Potsdam", "VDD", "Avg."]
    assert wide.loc[("clip", "ours"), "VDD"] == pytest.approx(round(res["miou"].iloc[0], 2))
    raw = plugin_table(res, ["clip"], alpha=0.1, n_boot=50)
    table = raw.set_index("method")
    assert table.loc["clip", "status"] == "pipeline-check"
    assert table.loc["clip", "gain"] == pytest.approx(100 - res["miou"].iloc[0])
    assert table.loc["clip", "paper_base"] == pytest.approx(11.4)  # CLIP's Table 2 average
    assert table.loc[["ProxyCLIP", "SC-CLIP", "CorrCLIP"], "paper_gain"].tolist() == [1.7, 1.9, 1.6]
    assert set(table.loc[["ProxyCLIP", "SC-CLIP", "CorrCLIP"], "status"]) == {"reported only"}
    # a Table 10 host that was run gets Table 10's row as its paper values and loses its reported-only row
    runs = {(lab, "potsdam"): [cm] for lab, cm in (("proxyclip", HALF), ("proxyclip+sga alpha=0.1", PERFECT))}
    (tmp_path / "h").mkdir()
    hosts = plugin_table(_results(tmp_path / "h", runs, kind="pipeline-check"), ["proxyclip"], 0.1, 50)
    assert list(hosts["method"]) == ["proxyclip", "SC-CLIP", "CorrCLIP"]
    assert hosts.set_index("method").loc["proxyclip", ["paper_base", "paper_gain"]].tolist() == [36.8, 1.7]
    assert plot_plugin(raw).axes[0].get_title().endswith("PIPELINE CHECK (random weights)")
    matplotlib.pyplot.close("all")


def test_plot_gains_says_pipeline_check():
    claims = pd.DataFrame(
        dict(
            baseline="a",
            method="b",
            dataset=["potsdam", "vdd"],
            delta=[1.0, -1.0],
            ci_low=[0.5, -2.0],
            ci_high=[1.5, 0.2],
            verdict="pipeline-check",
        )
    )
    paper = pd.DataFrame(dict(baseline="a", method="b", dataset=["potsdam", "vdd"], paper_delta=[0.1, 0.2]))
    ax = plot_gains(claims, paper, title="gains").axes[0]
    assert "PIPELINE CHECK" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Potsdam", "VDD"]
    matplotlib.pyplot.close("all")


def test_paper_vs_ours_figure_wraps_methods_into_rows(tmp_path):
    from alignclip.study.tables import plot_paper_vs_ours

    labels = ["clip", "maskclip", "sclip", "gem", "clearclip"]
    runs = {(lab, ds): [HALF] for lab in labels for ds in ("potsdam", "vdd")}
    cmp = paper_comparison(_results(tmp_path, runs, kind="pipeline-check"), "table2_main", labels)
    fig = plot_paper_vs_ours(cmp, title="t")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 8 and len(visible) == 5  # 2 rows of 4, the last 3 panels hidden
    assert [ax.get_title() for ax in visible] == ["CLIP", "MaskCLIP", "SCLIP", "GEM", "ClearCLIP"]
    assert fig._suptitle.get_text().endswith("PIPELINE CHECK (random weights)")
    matplotlib.pyplot.close("all")
