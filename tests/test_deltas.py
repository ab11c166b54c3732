"""Paired differences beside the paper's (Tables 12-13): hand-checkable deltas, verdicts on the claimed sign, tables."""

import json

import numpy as np
import pandas as pd
import pytest

from alignclip.deltas import (
    TABLE12_PAIRS,
    deltas_beside_paper,
    deltas_vs_paper,
    paired_deltas,
    paper_deltas,
    plot_deltas,
    results_beside_paper,
    rounded,
    switch_pairs,
    switch_runs,
)
from alignclip.errors import InputError
from alignclip.metrics import ConfusionAccumulator

PERFECT = np.array([[10, 0], [0, 10]])  # mIoU 100
WORSE = np.array([[10, 0], [5, 5]])  # IoU 10/15 and 5/10: mIoU 58.33


def _result(path, cm, kind, n=5):
    acc = ConfusionAccumulator(2)
    for i in range(n):
        acc.add_matrix(cm, f"img{i}")
    path.write_text(json.dumps({"kind": kind, "confusion_matrix": acc.total().tolist(),
                                "per_image_confusion": acc.to_compact()}))
    return str(path)


def _results(tmp_path, kind):
    rows = []
    for label, dataset, cm in (("base", "cityscapes", PERFECT), ("base+sga", "cityscapes", WORSE),
                               ("base", "ade20k", PERFECT), ("base+sga", "ade20k", PERFECT)):
        path = _result(tmp_path / f"{label}_{dataset}.json", cm, kind)
        rows.append(dict(label=label, dataset=dataset, miou=0.0, kind=kind, path=path))
    return pd.DataFrame(rows)


def test_paired_deltas_hand_case(tmp_path):
    gains = paired_deltas(_results(tmp_path, "reproduction"), [("base", "base+sga")], claimed_sign=-1, n_boot=200)
    by = gains.set_index("dataset")
    drop = (10 / 15 + 5 / 10) / 2 * 100 - 100  # identical images: every resample gives the same difference
    assert by.loc["cityscapes", "delta"] == pytest.approx(drop)
    assert by.loc["cityscapes", ["ci_low", "ci_high"]].tolist() == pytest.approx([drop, drop])
    assert by.loc["cityscapes", "verdict"] == "supported"  # a claimed drop, and a drop
    assert by.loc["ade20k", "delta"] == 0.0 and by.loc["ade20k", "verdict"] == "not distinguishable from zero"
    assert by.loc["Avg.", ["delta", "ci_low", "ci_high"]].tolist() == pytest.approx([drop / 2] * 3)
    assert by.loc["Avg.", "verdict"] == "supported" and by.loc["Avg.", "n_images"] == 10
    gain = paired_deltas(_results(tmp_path, "reproduction"), [("base", "base+sga")], claimed_sign=1, n_boot=50)
    assert gain.set_index("dataset").loc["cityscapes", "verdict"] == "contradicted"


def test_pipeline_checks_get_no_verdict(tmp_path):
    gains = paired_deltas(_results(tmp_path, "pipeline-check"), [("base", "base+sga")], claimed_sign=-1, n_boot=50)
    assert set(gains["verdict"]) == {"pipeline check"}
    with pytest.raises(InputError, match="no dataset"):
        paired_deltas(_results(tmp_path, "pipeline-check"), [("base", "other")])


def test_paper_deltas_tables_12_and_13():
    t13 = paper_deltas("table13_densecrf", [("AlignCLIP-D", "AlignCLIP-D+denseCRF")]).set_index("dataset")
    assert t13.loc["openearthmap", "delta"] == pytest.approx(0.8)
    assert t13.loc["Avg.", "delta"] == pytest.approx(0.9)
    t12 = paper_deltas("table12_natural_images", [("SC-CLIP", "SC-CLIP+SGA")]).set_index("dataset")
    assert t12.loc["pascal_voc20", "delta"] == pytest.approx(-6.4)
    assert len(t12) == 6


def test_tables_and_figure(tmp_path):
    results = _results(tmp_path, "pipeline-check")
    ours = paired_deltas(results, [("base", "base+sga")], claimed_sign=-1, n_boot=50)
    paper = paper_deltas("table12_natural_images", [("SC-CLIP", "SC-CLIP+SGA"), ("Trident", "Trident+SGA")])
    wide = deltas_beside_paper(ours, paper)
    assert list(wide.columns) == ["source", "comparison", "Cityscapes", "ADE20k", "COCO-Stuff", "Context59",
                                  "VOC20", "Avg."]
    assert list(wide["source"]) == ["paper", "paper", "ours"]
    assert pd.isna(wide.iloc[2]["COCO-Stuff"])  # not run by us
    table = results_beside_paper(results, "table12_natural_images")
    assert list(table["source"]).count("paper") == 6 and set(table["status"]) == {"reported only", "pipeline check"}
    assert pd.isna(table.iloc[-1]["Avg"])  # two of five datasets: no average
    fig = plot_deltas(ours, paper, title="Table 12")
    assert "PIPELINE CHECK" in fig.axes[0].get_title()


def test_switch_runs():
    runs = switch_runs(["sclip"], ["ade20k", "cityscapes"], overrides={"alpha": 0.1})
    assert [(r.label, r.dataset, r.overrides) for r in runs] == [
        ("sclip", "ade20k", {}), ("sclip", "cityscapes", {}),
        ("sclip+sga", "ade20k", {"alpha": 0.1}), ("sclip+sga", "cityscapes", {"alpha": 0.1})]


def test_switch_pairs_and_rounding():
    assert switch_pairs(["sclip", "segearth-ov"]) == [("sclip", "sclip+sga"), ("segearth-ov", "segearth-ov+sga")]
    out = rounded(pd.DataFrame({"a": [-0.001, 1.236], "b": ["x", "y"]}))
    assert out["a"].tolist() == [0.0, 1.24] and str(out["a"].iloc[0]) == "0.0"


def test_deltas_vs_paper_uses_the_mean_of_the_papers_comparisons(tmp_path):
    ours = paired_deltas(_results(tmp_path, "reproduction"), [("base", "base+sga")], claimed_sign=-1, n_boot=50)
    table = deltas_vs_paper(ours, paper_deltas("table12_natural_images", TABLE12_PAIRS)).set_index("dataset")
    assert table.loc["Cityscapes", "paper_delta"] == pytest.approx((-2.5 - 4.0 - 2.1) / 3)
    assert table.loc["Cityscapes", "paper_range"] == "-4.0..-2.1"
    assert not table.loc["Cityscapes", "paper_in_ci"]  # ours is a point at -41.7
    assert table.loc["ADE20k", "verdict"] == "not distinguishable from zero"
    assert list(table.index) == ["Cityscapes", "ADE20k", "Avg."]
