"""Qualitative panels (Fig. 3): image choice, pixel accuracy, panel shapes, determinism, the figure."""

import numpy as np
import pytest

from alignclip.errors import InputError
from alignclip.evaluation.metrics import pixel_accuracy
from alignclip.study import start_study
from alignclip.study.qualitative import (
    accuracy_table,
    class_names_of,
    pick_images,
    plot_panels,
    predict_panels,
)

PRESETS = ["clearclip", "segearth-ov"]


def test_pixel_accuracy_ignores_255():
    label = np.array([[0, 1], [255, 1]], np.uint8)
    pred = np.array([[0, 0], [1, 1]], np.uint8)
    assert pixel_accuracy(pred, label) == pytest.approx(200 / 3)  # 2 of the 3 labelled pixels
    assert np.isnan(pixel_accuracy(pred, np.full((2, 2), 255, np.uint8)))


def test_pick_images_is_seeded_and_bounded():
    assert pick_images(10, 3, seed=1) == pick_images(10, 3, seed=1)
    picked = pick_images(10, 3, seed=1)
    assert len(set(picked)) == 3 and picked == sorted(picked) and max(picked) < 10
    assert pick_images(2, 5, seed=0) == [0, 1]
    with pytest.raises(InputError, match="n_images"):
        pick_images(4, 0, seed=0)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return start_study(
        profile="smoke", datasets=["potsdam"], output_dir=tmp_path_factory.mktemp("q"), smoke_images=3, smoke_size=64
    )


@pytest.fixture(scope="module")
def panels(ctx):
    return predict_panels(ctx, PRESETS, "potsdam", n_images=2, seed=0)


def test_panel_shapes(panels):
    assert len(panels) == 2
    for p in panels:
        h, w = p["ground_truth"].shape
        assert p["image"].shape == (h, w, 3) and p["image"].dtype == np.uint8
        assert list(p["predictions"]) == PRESETS
        for preset in PRESETS:
            assert p["predictions"][preset].shape == (h, w)
            assert p["predictions"][preset].max() < 6
            assert 0.0 <= p["pixel_accuracy"][preset] <= 100.0
        assert p["kind"] == "pipeline-check" and p["dataset"] == "potsdam"


def test_panels_are_deterministic(ctx, panels):
    again = predict_panels(ctx, PRESETS, "potsdam", n_images=2, seed=0)
    for a, b in zip(panels, again, strict=True):
        assert a["image_id"] == b["image_id"]
        for preset in PRESETS:
            assert np.array_equal(a["predictions"][preset], b["predictions"][preset])


def test_accuracy_table_and_figure(panels):
    table = accuracy_table(panels)
    assert list(table.columns) == ["dataset", "image_id", *PRESETS] and len(table) == 2
    fig = plot_panels(panels, class_names_of(["potsdam"]))
    assert len(fig.axes) == 2 * (2 + len(PRESETS))
    assert "PIPELINE CHECK" in fig._suptitle.get_text()
    with pytest.raises(InputError, match="no entry"):
        plot_panels(panels, {"vaihingen": ["a"]})
