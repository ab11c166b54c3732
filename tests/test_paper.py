"""Tests for alignclip.paper.tables: the shipped paper tables and the paper-vs-ours comparison."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from alignclip.errors import ConfigError, InputError
from alignclip.paper.names import PACKAGE_DATASET, RS_COLUMNS
from alignclip.paper.tables import compare_with_paper, list_tables, load_table, paper_row

EXPECTED_TABLES = [
    "table1_intra_class_similarity",
    "table2_main",
    "table3_component_ablation",
    "table6_hyperparameters",
    "table7_alpha_sensitivity",
    "table8_beta_sensitivity",
    "table9_clusters_sensitivity",
    "table10_sga_plugin",
    "table11_compute",
    "table12_natural_images",
    "table13_densecrf",
]


def test_list_tables_in_table_order():
    assert list_tables() == EXPECTED_TABLES


@pytest.mark.parametrize("name", EXPECTED_TABLES)
def test_every_table_loads_with_numbers(name):
    df = load_table(name)
    assert isinstance(df, pd.DataFrame) and len(df) >= 2
    for col in df.columns:
        if col in RS_COLUMNS or col == "Avg":
            assert df[col].dtype.kind == "f"
            assert ((df[col] >= 0) & (df[col] <= 100)).all()


def test_rs_tables_have_the_eight_datasets_in_paper_order():
    for name in (
        "table2_main",
        "table3_component_ablation",
        "table7_alpha_sensitivity",
        "table10_sga_plugin",
        "table13_densecrf",
    ):
        cols = [c for c in load_table(name).columns if c in RS_COLUMNS]
        assert cols == RS_COLUMNS


def test_short_name_and_unknown_table():
    assert load_table("table2").equals(load_table("table2_main"))
    with pytest.raises(ConfigError, match="table2_main"):
        load_table("table99_nope")


def test_dataset_keys_cover_all_paper_columns():
    assert [PACKAGE_DATASET[d] for d in RS_COLUMNS] == [
        "openearthmap",
        "loveda",
        "isaid",
        "potsdam",
        "vaihingen",
        "uavid",
        "udd5",
        "vdd",
    ]
    natural = [c for c in load_table("table12_natural_images").columns if c not in ("method", "Avg")]
    assert [PACKAGE_DATASET[c] for c in natural] == [
        "cityscapes",
        "ade20k",
        "coco_stuff171",
        "pascal_context59",
        "pascal_voc20",
    ]


def test_paper_row_main_and_keyed_tables():
    row = paper_row("table2_main", "AlignCLIP-D")
    assert row["LoveDA"] == 39.5 and row["Avg"] == 41.3 and "venue" not in row
    assert paper_row("table3_component_ablation", "SegEarth-OV")["Vaihingen"] == 29.1
    assert paper_row("table6_hyperparameters", "AlignCLIP-D", "alpha")["LoveDA"] == 0.7
    assert paper_row("table7_alpha_sensitivity", "AlignCLIP-S", 0.3)["Vaihingen"] == 34.6
    assert paper_row("table9_clusters_sensitivity", "AlignCLIP-D", "15")["Avg"] == 41.0
    assert paper_row("table9_clusters_sensitivity", "AlignCLIP-D", 3.0)["Avg"] == 41.3


def test_paper_row_unknown_method_lists_methods():
    with pytest.raises(ConfigError, match="SegEarth-OV") as err:
        paper_row("table2_main", "NoSuchCLIP")
    assert "AlignCLIP-D" in str(err.value)
    with pytest.raises(ConfigError, match="AlignCLIP-S"):
        paper_row("table3_component_ablation", "AlignCLIP-S")
    with pytest.raises(ConfigError, match="0.1, 0.2"):
        paper_row("table7_alpha_sensitivity", "AlignCLIP-D")  # variant required
    with pytest.raises(ConfigError, match="0.1, 0.2"):
        paper_row("table7_alpha_sensitivity", "AlignCLIP-D", 0.7)


def test_compare_with_paper_hand_made():
    ours = {"loveda": 39.0, "Vaihingen": 35.0, "vdd": 48.4}
    df = compare_with_paper(ours)
    assert list(df.columns) == ["dataset", "paper", "ours", "delta", "kind", "note"]
    assert list(df["dataset"]) == ["LoveDA", "Vaihingen", "VDD", "Avg."]
    assert list(df["paper"][:3]) == [39.5, 34.5, 48.4]
    assert df["delta"][:3].round(6).tolist() == [-0.5, 0.5, 0.0]
    avg = df.iloc[-1]
    assert math.isclose(avg["paper"], (39.5 + 34.5 + 48.4) / 3)
    assert math.isclose(avg["ours"], (39.0 + 35.0 + 48.4) / 3)
    assert math.isclose(avg["delta"], 0.0, abs_tol=1e-9)
    assert "3/8" in avg["note"] and "OpenEarthMap" in avg["note"]
    # The label is on every row, Avg included, so a pipeline check cannot pass for a reproduction.
    assert (df["kind"] == "pipeline-check").all()


def test_compare_with_paper_all_datasets_and_other_row():
    ours = {k: 40.0 for k in RS_COLUMNS}
    df = compare_with_paper(ours, method="SegEarth-OV", kind="reproduction")
    assert len(df) == 9 and (df["kind"] == "reproduction").all()
    avg = df.iloc[-1]
    assert math.isclose(avg["paper"], 39.125)
    assert "8/8" in avg["note"] and "39.1" in avg["note"]


def test_compare_with_paper_errors():
    with pytest.raises(ConfigError, match="AlignCLIP-D"):
        compare_with_paper({"loveda": 1.0}, method="NoSuchCLIP")
    with pytest.raises(ConfigError, match="loveda"):
        compare_with_paper({"lovedaa": 1.0})
    with pytest.raises(InputError, match="percent"):
        compare_with_paper({"loveda": 139.5})
    with pytest.raises(InputError, match="percent"):
        compare_with_paper({"loveda": float("nan")})
    with pytest.raises(InputError, match="twice"):
        compare_with_paper({"loveda": 39.0, "LoveDA": 39.0})
    with pytest.raises(InputError):
        compare_with_paper({})
    with pytest.raises(ConfigError, match="kind"):
        compare_with_paper({"loveda": 39.0}, kind="")
    with pytest.raises(ConfigError, match="not a kind of run"):
        compare_with_paper({"loveda": 39.0}, kind="pipeline check")


def test_compare_with_paper_natural_images():
    df = compare_with_paper(
        {"coco_stuff171": 26.0, "pascal_voc20": 84.3}, table="table12_natural_images", method="SC-CLIP"
    )
    assert list(df["dataset"]) == ["COCO-Stuff", "VOC20", "Avg."]
    assert df["delta"][:2].round(6).tolist() == [-0.6, 0.0]
