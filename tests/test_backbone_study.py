"""The backbone study (notebook 13): its runs per profile, gains, tables and the prediction's verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alignclip.errors import ConfigError
from alignclip.kinds import PIPELINE_CHECK, REPRODUCTION
from alignclip.models.backbones import BACKBONES
from alignclip.study import (
    STUDY_BACKBONES,
    STUDY_VFMS,
    backbone_average_table,
    backbone_gain_table,
    backbone_gains,
    backbone_miou_table,
    backbone_runs,
    backbone_setup_table,
    evaluate_runs,
    plot_backbone_gains,
    prediction_summary,
    prediction_verdicts,
    start_study,
    study_backbones,
    study_runs,
    vfm_gain_table,
    vfm_gains,
    vfm_runs,
)
from alignclip.study.gains import AVG
from alignclip.study.jobs import notebook_jobs


def _ctx(tmp_path, profile="smoke", datasets=("vdd",)):
    return start_study(profile=profile, datasets=list(datasets), output_dir=tmp_path, upsampler_ckpt="none")


def test_every_named_backbone_is_studied_and_clip_b16_twice():
    keys = [b.key for b in study_backbones()]
    assert keys == list(STUDY_BACKBONES) and len(keys) == len(BACKBONES) + 1
    assert keys[:2] == ["clip-b16", "clip-b16 (no upsampler)"]
    assert [b.upsampler for b in study_backbones()].count("jbu_one") == 1
    with pytest.raises(ConfigError, match="unknown backbone.*'nope'.*choose from clip-b16"):
        study_backbones(["nope"])


def test_runs_per_profile_use_the_stand_in_the_architecture_or_the_weights(tmp_path):
    runs = {r.label: r for r in backbone_runs(_ctx(tmp_path), ["clip-b16", "remoteclip-b32", "skyclip-l14"])}
    assert len(runs) == 12  # 3 backbones x 4 rows x 1 dataset
    assert runs["clip-b16 baseline"].overrides == {}  # the other notebooks' SegEarth-OV run, shared
    assert runs["remoteclip-b32 +SGA"].overrides == {"backbone": "tiny-b32", "upsampler": "none"}
    assert runs["skyclip-l14 +SGA+CCE"].preset == "segearth-ov+sga+cce"
    assert runs["skyclip-l14 +CCE"].overrides["backbone"] == "tiny-l14"
    rehearsal = {r.label: r for r in backbone_runs(_ctx(tmp_path, "rehearsal"), ["remoteclip-b32"])}
    assert rehearsal["remoteclip-b32 baseline"].overrides == {"backbone": "remoteclip-b32", "upsampler": "none"}
    full = start_study(profile="smoke", datasets=["vdd"], output_dir=tmp_path)
    object.__setattr__(full, "profile", "full")  # the run builder only reads the profile
    over = {r.label: r.overrides for r in backbone_runs(full, ["skyclip-b32"], {"skyclip-b32": "/w/epoch_20.pt"})}
    assert over["skyclip-b32 baseline"] == {
        "backbone": "skyclip-b32",
        "pretrained": "/w/epoch_20.pt",
        "upsampler": "none",
    }
    with pytest.raises(ConfigError, match="backbone_weights names unknown backbone"):
        backbone_runs(full, None, {"remoteclip": "/x.pt"})


def test_vfm_runs_share_the_default_vfm_and_stand_in_the_others(tmp_path):
    runs = vfm_runs(_ctx(tmp_path))
    labels = [r.label for r in runs]
    assert labels[:2] == ["clip-b16 baseline", "clip-b16 +SGA"]
    assert len(runs) == 2 + 2 * len(STUDY_VFMS)
    by = {r.label: r.overrides for r in runs}
    assert by["clip-b16 +CCE"] == {}  # the default VFM's run is the backbone table's own
    assert by["vfm:dinov2_vitb14_reg +CCE"]["vfm_pretrained"] == "none"
    assert by["vfm:sam_vitb +SGA+CCE"]["vfm"] == "tiny_sam"
    with pytest.raises(ConfigError, match="unknown VFM"):
        vfm_runs(_ctx(tmp_path), ["dinov9"])


def test_setup_table_says_grid_upsampler_and_weights(tmp_path):
    table = backbone_setup_table(_ctx(tmp_path), ["clip-b16", "remoteclip-b32", "clip-l14"]).set_index("backbone")
    assert table.loc["remoteclip-b32", "architecture"] == "ViT-B-32 (7×7)"
    assert table.loc["clip-l14", "architecture"] == "ViT-L-14 (16×16)"
    assert table.loc["clip-b16", "upsampler"] == "jbu_one" and table.loc["remoteclip-b32", "upsampler"] == "none"
    assert table.loc["remoteclip-b32", "remote_sensing"] == "yes"
    assert table.loc["remoteclip-b32", "weights"] == "random, tiny stand-in tiny-b32"


def test_study_end_to_end_on_tiny_models(tmp_path):
    ctx = _ctx(tmp_path)
    runs = study_runs(ctx, ["clip-b16", "remoteclip-b32"], None, ["dino_vitb16", "dino_vitb8"])
    results = evaluate_runs(ctx, runs, progress=False)
    assert len(results) == len({r.label for r in runs}) == 2 * 4 + 2  # shared runs listed once
    table = backbone_miou_table(results)
    assert list(table.index) == [
        (b, r) for b in ("clip-b16", "remoteclip-b32") for r in ("baseline", "+SGA", "+CCE", "+SGA+CCE")
    ]
    assert np.allclose(table[AVG], table["VDD"])  # one dataset: its average is itself
    avg = backbone_average_table(results)
    assert list(avg.columns) == ["baseline", "+SGA", "+CCE", "+SGA+CCE"] and list(avg.index) == [
        "clip-b16",
        "remoteclip-b32",
    ]
    assert math.isclose(avg.loc["remoteclip-b32", "+CCE"], table.loc[("remoteclip-b32", "+CCE"), "VDD"])
    gains = backbone_gains(results, n_boot=50)
    avg = gains[gains["dataset"] == AVG].set_index(["backbone", "module"])
    row = table.loc[("remoteclip-b32", "+SGA"), "VDD"] - table.loc[("remoteclip-b32", "baseline"), "VDD"]
    assert math.isclose(avg.loc[("remoteclip-b32", "+SGA"), "delta"], row, abs_tol=1e-6)
    assert set(gains["verdict"]) == {PIPELINE_CHECK}
    wide = backbone_gain_table(gains)
    assert list(wide.columns) == ["backbone", "remote_sensing", "gain +SGA", "gain +CCE", "gain +SGA+CCE"]
    assert wide["gain +SGA"].str.match(r"^[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]$").all()
    vg = vfm_gain_table(vfm_gains(results, n_boot=50))
    assert list(vg["VFM"]) == ["DINO ViT-B/16", "DINO ViT-B/8"] and list(vg["patch"]) == [16, 8]
    assert prediction_verdicts(gains)[0].startswith("Pipeline check")


def _gains(values: dict[tuple[str, str], tuple[float, float]]) -> pd.DataFrame:
    """Average-gain rows (delta, half-width of the interval) as paired_deltas gives them, all reproductions."""
    rows = [
        dict(backbone=b, module=m, dataset=AVG, delta=d, ci_low=d - h, ci_high=d + h, kind=REPRODUCTION)
        for (b, m), (d, h) in values.items()
    ]
    return pd.DataFrame(rows)


def test_prediction_verdicts_by_hand():
    # SGA: +0.5 with the two remote-sensing CLIPs, +2.0 with the two general CLIPs without upsampler: difference -1.5;
    # each interval is +-0.98 (se 0.5): group se = sqrt(2 * 0.25) / 2 = 0.354 each, se of the difference 0.5
    h = 0.5 * 1.959964
    gains = _gains(
        {
            ("remoteclip-b32", "+SGA"): (0.5, h),
            ("georsclip-b32", "+SGA"): (0.5, h),
            ("clip-b16 (no upsampler)", "+SGA"): (2.0, h),
            ("clip-l14", "+SGA"): (2.0, h),
            ("clip-b16", "+SGA"): (9.0, h),  # with its upsampler: not in the comparison
        }
    )
    vfm = pd.DataFrame(
        [
            dict(vfm="dino_vitb16", module="CCE", dataset=AVG, delta=0.3, ci_low=0.1, ci_high=0.5, kind=REPRODUCTION),
            dict(
                vfm="dinov2_vitb14_reg",
                module="CCE",
                dataset=AVG,
                delta=0.4,
                ci_low=0.0,
                ci_high=0.8,
                kind=REPRODUCTION,
            ),
        ]
    )
    sga, cce = prediction_verdicts(gains, vfm)
    assert "the 2 remote-sensing CLIPs minus that with the 2 general CLIPs is -1.50" in sga
    assert "-2.48 to -0.52" in sga and "supports the prediction" in sga
    assert "+0.10 points" in cce and "cannot tell" in cce  # se = hypot(0.102, 0.204) = 0.228: -0.35 to +0.55
    flipped = prediction_verdicts(_gains({("remoteclip-b32", "+SGA"): (3.0, h), ("clip-l14", "+SGA"): (1.0, h)}))
    assert "contradicts the prediction" in flipped[0]


def test_notebook_13_lists_its_jobs():
    jobs = notebook_jobs(
        "13", {"datasets": "['vdd']", "backbones": "['clip-b16', 'skyclip-b32']", "vfms": "['dino_vitb8']"}
    )
    assert len(jobs) == 2 * 4 + 2  # the default-VFM rows are the backbone rows
    assert {j.preset for j in jobs} == {"segearth-ov", "segearth-ov+sga", "segearth-ov+cce", "segearth-ov+sga+cce"}


def test_the_cost_plan_scales_other_backbones_by_their_flops():
    from alignclip.study.plan import _ms_per_window, clip_window_flops

    # per block 24·N·w² + 4·N²·w; B/16: N = 197, B/32: N = 50, both w = 768 and 12 blocks
    ratio = (24 * 50 * 768 + 4 * 50 * 50) / (24 * 197 * 768 + 4 * 197 * 197)
    assert math.isclose(clip_window_flops("remoteclip-b32") / clip_window_flops("ViT-B-16"), ratio)
    assert math.isclose(ratio, 0.2460, abs_tol=1e-4)
    ms, basis = _ms_per_window("segearth-ov+sga", {"segearth-ov": 100.0}, "remoteclip-b32")
    assert math.isclose(ms, 100.0 * ratio) and basis == "as segearth-ov × 0.25 (remoteclip-b32's FLOPs)"
    assert _ms_per_window("segearth-ov", {"segearth-ov": 100.0}, "ViT-B-16") == (100.0, "measured")
    assert _ms_per_window("segearth-ov", {"segearth-ov": 100.0}, "clip-l14")[0] > 400.0


def test_prediction_summary_is_a_markdown_list():
    gains = _gains({("remoteclip-b32", "+SGA"): (1.0, 0.5), ("clip-l14", "+SGA"): (1.0, 0.5)})
    gains.loc[0, "kind"] = PIPELINE_CHECK
    text = prediction_summary(gains).data
    assert text.startswith("- Pipeline check") and text.count("\n- ") == 0


def test_the_gain_figure_draws_a_point_outside_its_interval():
    """Found by the rehearsal (one image per dataset): a percentile interval that does not hold its point."""
    gains = _gains({("remoteclip-b32", "+SGA"): (1.0, 0.5), ("clip-l14", "+SGA"): (1.0, 0.5)})
    gains.loc[0, ["ci_low", "ci_high"]] = [1.2, 1.6]  # the point below its interval
    fig = plot_backbone_gains(gains)
    assert "PIPELINE CHECK" not in fig.axes[0].get_title()  # every row a reproduction here


def test_notebook_13_takes_backbone_weights_as_a_dict_parameter():
    from alignclip.study.notebooks import check_parameters, notebook_path

    path = notebook_path("13")
    assert check_parameters(path, {"backbone_weights": "{'skyclip-b32': 'a.pt'}"}) == {
        "backbone_weights": {"skyclip-b32": "a.pt"}
    }
    with pytest.raises(ConfigError, match="backbone_weights=.*wrong type; expected dict"):
        check_parameters(path, {"backbone_weights": "[1, 2]"})
