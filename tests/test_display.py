"""Tables for people (alignclip.study.display.for_reading)."""

import numpy as np
import pandas as pd

from alignclip.study.display import for_reading


def _comparison():
    return pd.DataFrame(
        dict(
            method=["segearth-ov"] * 2,
            dataset=["potsdam", "Avg."],
            paper=[47.1, 39.1],
            ours=[7.04, 8.1],
            delta=[-40.06, -31.0],
            kind=["pipeline-check"] * 2,
            note=["", "x"],
            ci_low=[6.56, np.nan],
            ci_high=[8.37, np.nan],
            paper_in_ci=[False, False],
        )
    )


def test_interval_in_one_cell_paper_names_and_readable_headers():
    st = for_reading(_comparison())
    data = st.data
    assert list(data["ours, mIoU (%) [95 % CI]"]) == ["7.04 [6.56, 8.37]", "8.10"]
    assert list(data["dataset"]) == ["Potsdam", "Avg."]  # the paper's spelling
    assert "ci_low" not in data and "ci high" not in data
    html = st.to_html()
    assert "47.1<" in html and "47.10" not in html  # the paper's precision
    assert "95 % percentile bootstrap interval" in st.caption


def test_booleans_never_read_as_evidence_on_a_pipeline_check():
    data = for_reading(_comparison()).data
    assert set(data["paper in our CI"]) == {"pipeline-check"}
    real = _comparison().assign(kind="reproduction", paper_in_ci=[True, False])
    assert list(for_reading(real).data["paper in our CI"]) == ["yes", "no"]


def test_no_index_and_pipeline_check_greyed():
    html = for_reading(_comparison().set_index("method")).to_html()
    assert "segearth-ov" in html  # the index became a column
    assert "font-style: italic" in html


def test_paper_rows_of_a_mixed_table_at_the_paper_precision():
    table = pd.DataFrame(
        dict(method=["CLIP", "CLIP"], source=["paper", "ours"], status=["pipeline-check"] * 2, Potsdam=[14.5, 3.1234])
    )
    html = for_reading(table).to_html()
    assert ">14.5<" in html and ">3.12<" in html
