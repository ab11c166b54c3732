"""The decisions study (notebook 12): runs, paired effects, the reading table and the forest plot."""

import matplotlib
import pytest

from alignclip.errors import ConfigError
from alignclip.pipeline.config import SegmentorConfig
from alignclip.study import start_study
from alignclip.study.decisions import (
    DECISIONS,
    decision_effects,
    decision_label,
    decision_runs,
    decision_table,
    plot_decision_forest,
    select_decisions,
)
from alignclip.study.runs import evaluate_runs

matplotlib.use("Agg")


def test_every_decision_is_a_valid_configuration():
    fields = set(SegmentorConfig.__dataclass_fields__)
    for d in DECISIONS:
        assert set(d.alternative) <= fields, d
        assert d.name.startswith(d.key + " ")


def test_selection():
    assert {d.key for d in select_decisions(None, smoke=True)} == {d.key for d in DECISIONS} - {"D10"}
    assert [d.key for d in select_decisions(["D7", "D9"], smoke=True)] == ["D7", "D9"]
    with pytest.raises(ConfigError, match="unknown decision"):
        select_decisions(["D99"], smoke=True)


@pytest.fixture(scope="module")
def effects(tmp_path_factory):
    ctx = start_study(
        datasets=["potsdam"], output_dir=tmp_path_factory.mktemp("decisions"), n_boot=100, smoke_images=3, smoke_size=64
    )
    decisions = select_decisions(["D7", "D9"], smoke=True)
    runs = decision_runs(ctx, decisions)
    # the default run is shared by both decisions of alignclip-d: 1 default + 2 alternatives
    assert sorted(r.label for r in runs) == sorted(["alignclip-d"] + [decision_label(d) for d in decisions])
    return decision_effects(evaluate_runs(ctx, runs), decisions, n_boot=100)


def test_effects_rows_and_verdicts(effects):
    assert list(effects["decision"]) == ["D7", "D7", "D9", "D9"]
    assert list(effects["dataset"]) == ["potsdam", "Avg.", "potsdam", "Avg."]
    assert set(effects["verdict"]) == {"pipeline-check"}  # random weights: no verdict
    assert (effects["ci_low"] <= effects["ci_high"]).all()


def test_reading_table_and_forest(effects):
    table = decision_table(effects)
    assert list(table.columns) == [
        "decision",
        "question",
        "preset",
        "alternative",
        "potsdam",
        "average (95 % CI)",
        "verdict",
    ]
    assert table["average (95 % CI)"].str.match(r"^[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]$").all()
    fig = plot_decision_forest(effects)
    assert "PIPELINE CHECK" in fig.axes[0].get_title()
