"""Speed and memory benchmark (alignclip.evaluation.bench, alignclip.study.bench, alignclip bench): tiny models, small images."""

import argparse
import json

import numpy as np
import pytest
import torch

from alignclip.cli.bench import register_bench
from alignclip.errors import AlignCLIPError, ConfigError
from alignclip.evaluation.bench import (
    DEFAULT_CLASSES,
    bench_images,
    build_segmentors,
    growth,
    parse_bench_preset,
    run_bench,
)
from alignclip.evaluation.probes import (
    PeakMemory,
    _sdpa_cpu_flops,
    count_flops,
    matmul_gflops,
    time_breakdown,
)
from alignclip.pipeline.config import build_config
from alignclip.study.bench import (
    EFFICIENCY_TARGET,
    check_targets,
    deterministic_summary,
    table11_comparison,
)

SMALL = dict(long_side=48, crop=48, stride=24)  # one 48x48 window: the whole pipeline in milliseconds
RECORD_FIELDS = {
    "preset",
    "ms_per_image",
    "ms_all",
    "peak_mem_mb",
    "weights_mb",
    "activation_mb",
    "gflop_per_image",
    "gflop_clip",
    "gflop_upsampler",
    "gflop_vfm",
    "gflop_rest",
    "ref_upsampler_gflop",
    "achieved_gflops",
    "efficiency",
    "n_windows",
    "breakdown_ms",
    "precision",
    "random_weights",
    "ms_ratio",
    "mem_ratio",
    "gflop_ratio",
    "host_syncs_per_image",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the many small ops of the tiny pipeline stall badly when other processes share the
    CPU with a multi-threaded pool; the timings are not checked here, only the fields and the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def result():
    return run_bench(
        ["segearth-ov", "segearth-ov+sga", "segearth-ov+cce"],
        smoke=True,
        size=64,
        images=2,
        warmup=1,
        repeats=2,
        device="cpu",
        **SMALL,
    )


def _parser():
    parser = argparse.ArgumentParser(prog="alignclip")
    register_bench(parser.add_subparsers(dest="command", required=True))
    return parser


def test_bench_result_has_every_field(result):
    assert [r["preset"] for r in result["presets"]] == ["segearth-ov", "segearth-ov+sga", "segearth-ov+cce"]
    assert result["presets"][0]["label_agreement"] == 1.0  # the first preset against itself
    for rec in result["presets"]:
        assert RECORD_FIELDS <= set(rec)
        assert len(rec["ms_all"]) == 4 and rec["ms_per_image"] > 0  # 2 images x 2 interleaved passes
        assert 0.0 <= rec["label_agreement"] <= 1.0
        lo, hi = rec["ms_ratio_ci"]
        assert lo <= hi and (rec["preset"] != "segearth-ov" or lo == hi == 1.0)
        assert rec["n_windows"] == 1 and rec["precision"] == "fp32" and rec["random_weights"]
        assert rec["weights_mb"] > 0 and rec["peak_mem_mb"] >= rec["weights_mb"]
        parts = rec["gflop_clip"] + rec["gflop_upsampler"] + rec["gflop_vfm"] + rec["gflop_rest"]
        assert rec["gflop_per_image"] == pytest.approx(parts) and rec["gflop_clip"] > 0 and rec["gflop_rest"] > 0
        assert rec["achieved_gflops"] == pytest.approx(rec["gflop_per_image"] / (rec["ms_per_image"] / 1e3))
        assert rec["host_syncs_per_image"] is None  # CPU
    assert result["presets"][2]["gflop_vfm"] > 0 == result["presets"][0]["gflop_vfm"]
    rate = result["matmul_gflops"]
    assert rate["before"] > 0 and rate["mean"] == pytest.approx((rate["before"] + rate["after"]) / 2)
    env = result["environment"]
    assert env["device"] == "cpu" and env["torch_threads"] >= 1
    assert {"loadavg_1min"} <= set(env["load_before"]) and "python" in env["versions"]
    json.dumps(result)  # JSON-ready


def test_ratios_are_relative_to_the_first_preset(result):
    first, *rest = result["presets"]
    assert first["ms_ratio"] == first["mem_ratio"] == first["gflop_ratio"] == 1.0
    for rec in rest:
        assert rec["ms_ratio"] == pytest.approx(rec["ms_per_image"] / first["ms_per_image"])
        assert rec["mem_ratio"] == pytest.approx(rec["peak_mem_mb"] / first["peak_mem_mb"])
        assert rec["gflop_ratio"] == pytest.approx(rec["gflop_per_image"] / first["gflop_per_image"])


def test_flops_are_deterministic_and_reference_counts_follow_the_architecture(result):
    seg = build_segmentors({"a": build_config("segearth-ov", smoke=True, device="cpu", **SMALL)}, DEFAULT_CLASSES)["a"]
    image = bench_images(1, 64)[0]
    again = count_flops(seg, image)
    rec = result["presets"][0]
    assert again["total"] == pytest.approx(rec["gflop_per_image"], rel=1e-9)
    side = seg.preprocess(image).shape[-1] // seg.clip.patch_size  # one window of side x side patches
    assert rec["ref_upsampler_gflop"] == pytest.approx(seg.upsampler.reference_flops(1, side, side) / 1e9)
    reference = rec["gflop_per_image"] - rec["gflop_upsampler"] + rec["ref_upsampler_gflop"]
    assert rec["reference_gflop_per_image"] == pytest.approx(reference)
    assert rec["reference_efficiency"] == pytest.approx(rec["efficiency"] * reference / rec["gflop_per_image"])


def test_sdpa_flop_formula_by_hand():
    # QK^T: 2*B*H*L*S*E, PV: 2*B*H*L*S*Ev -> 2*1*2*3*5*4 + 2*1*2*3*5*6 = 240 + 360
    assert _sdpa_cpu_flops((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 6)) == 600


def test_matmul_rate_and_peak_memory_see_a_known_allocation():
    assert matmul_gflops("cpu", n=256, reps=2) > 0
    meter = PeakMemory(torch.device("cpu"))
    with meter.measure():
        block = torch.ones(50 * 2**20 // 4)  # 50 MiB, touched
        del block
    assert 45 * 2**20 <= meter.peak_bytes <= 120 * 2**20


def test_time_breakdown_adds_up():
    seg = build_segmentors({"d": build_config("alignclip-d", smoke=True, device="cpu", **SMALL)}, DEFAULT_CLASSES)["d"]
    parts = time_breakdown(seg, bench_images(1, 64)[0])
    assert all(parts[k] > 0 for k in ("clip", "upsampler", "vfm", "total"))
    assert parts["clip"] + parts["upsampler"] + parts["vfm"] + parts["cce_rest"] + parts["other"] == pytest.approx(
        parts["total"]
    )


def test_growth_window_counts_are_monotone():
    table = growth("segearth-ov", (48, 96, 144), smoke=True, device="cpu", crop=48, stride=24)
    assert table["n_windows"].tolist() == [1, 9, 25]  # ((s - 48 + 23) // 24 + 1) ** 2
    assert table["long_side"].tolist() == [48, 96, 144]
    assert (table["ms_per_image"] > 0).all() and table["image_buffers_mb"].is_monotonic_increasing
    assert (table["peak_mem_mb"] >= table["weights_mb"]).all()
    assert table["window_batch"].tolist() == [1, 1, 1]  # window_batch="auto", resolved on the CPU


def test_parse_bench_preset():
    assert parse_bench_preset("segearth-ov+cce:vfm=sam_vitb, n_clusters=4") == (
        "segearth-ov+cce",
        {"vfm": "sam_vitb", "n_clusters": 4},
    )
    assert parse_bench_preset("alignclip-d") == ("alignclip-d", {})
    with pytest.raises(ConfigError, match="key=value"):
        parse_bench_preset("alignclip-d:vfm")


def test_cli_bad_preset_gives_one_line_config_error():
    args = _parser().parse_args(
        ["bench", "--smoke", "--presets", "segearth-ov", "nonsense+sga", "--json", "unused.json"]
    )
    with pytest.raises(ConfigError) as info:
        args.func(args)
    message = str(info.value)
    assert "\n" not in message and "nonsense" in message and "segearth-ov" in message


def test_cli_bad_preset_through_main(capsys):
    from alignclip.cli import main as cli

    assert cli.main(["bench", "--smoke", "--presets", "nonsense", "--json", "unused.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown preset 'nonsense'") and "\n" not in err


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = _parser().parse_args(
        [
            "bench",
            "--smoke",
            "--presets",
            "segearth-ov",
            "--size",
            "64",
            "--images",
            "1",
            "--warmup",
            "0",
            "--set",
            "long_side=48",
            "--set",
            "crop=48",
            "--set",
            "stride=24",
            "--device",
            "cpu",
            "--no-breakdown",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert args.func(args) == 0
    body = json.loads(out.read_text())
    assert body["presets"][0]["preset"] == "segearth-ov" and body["presets"][0]["breakdown_ms"] is None
    assert {t["target"] for t in body["targets"]} >= {"segearth-ov peak memory (MB)"}
    assert "bench written to" in capsys.readouterr().out
    with pytest.raises(AlignCLIPError, match="exists"):
        args.func(args)  # no --force


def _fake_result():
    def rec(preset, ms, mem, gflop, eff=0.5):
        return dict(
            preset=preset,
            ms_per_image=ms,
            peak_mem_mb=mem,
            gflop_per_image=gflop,
            efficiency=eff,
            n_windows=9,
            gflop_clip=gflop,
            gflop_upsampler=0.0,
            gflop_vfm=0.0,
            gflop_rest=0.0,
            ref_upsampler_gflop=None,
        )

    return {
        "presets": [
            rec("segearth-ov", 100.0, 1000.0, 10.0, eff=0.8),
            rec("segearth-ov+sga", 102.0, 1001.0, 10.0),
            rec("segearth-ov+cce", 135.0, 1500.0, 12.0),
            rec("alignclip-d", 150.0, 2000.0, 12.0),
        ]
    }


def test_table11_ratios_by_hand():
    cmp = table11_comparison(_fake_result()).set_index("method")
    assert cmp.loc["AlignCLIP-D", "paper_ms_ratio"] == pytest.approx(16 / 12)
    assert cmp.loc["AlignCLIP-D", "paper_mem_ratio"] == pytest.approx(2661 / 1392)
    assert cmp.loc["AlignCLIP-D", "ours_ms_ratio"] == pytest.approx(1.5)
    assert cmp.loc["AlignCLIP-D", "ours_mem_ratio"] == pytest.approx(2.0)
    assert cmp.loc["DINO +CCE", "ms_ratio_delta"] == pytest.approx(1.35 - 16 / 12)
    assert list(cmp.index) == ["SegEarth-OV", "DINO +SGA", "DINO +CCE", "AlignCLIP-D"]


def test_check_targets_by_hand():
    targets = check_targets(_fake_result()).set_index("target")["met"].to_dict()
    assert targets[EFFICIENCY_TARGET] == "met"  # 0.8 >= 0.7 (no reference count: the executed efficiency)
    result = _fake_result()
    result["presets"][0]["reference_efficiency"] = 0.65
    assert check_targets(result).set_index("target")["met"][EFFICIENCY_TARGET] == "missed"  # 0.65 < 0.7
    assert targets["segearth-ov peak memory (MB)"] == "met"  # 1000 <= 3072
    assert targets["sga time ratio"] == "met"  # 1.02 <= 1.03 (no interval: judged by the value)
    assert targets["cce time ratio - (flop ratio + 0.10)"] == "missed"  # 1.35 > 1.2 + 0.1
    assert targets["alignclip-d memory ratio"] == "missed"  # 2.0 > 1.9
    verdicts = check_targets(_fake_result(), pipeline_check=True)["verdict"]
    assert set(verdicts) == {"pipeline-check"}
    assert check_targets(_fake_result())["verdict"].tolist() == ["met", "met", "met", "missed", "missed"]


@pytest.mark.parametrize(
    "ci,verdict",
    [([0.99, 1.02], "met"), ([1.00, 1.06], "not resolved"), ([1.04, 1.09], "missed")],
)
def test_time_targets_are_judged_on_their_interval(ci, verdict):
    result = _fake_result()
    result["presets"][1]["ms_ratio_ci"] = ci  # segearth-ov+sga against the first preset, segearth-ov
    row = check_targets(result).set_index("target").loc["sga time ratio"]
    assert row["met"] == verdict and (row["ci_low"], row["ci_high"]) == tuple(ci)
    result["presets"][2]["ms_ratio_ci"] = [1.25, 1.31]  # cce: minus (12/10 + 0.10) gives [-0.05, 0.01]
    cce = check_targets(result).set_index("target").loc["cce time ratio - (flop ratio + 0.10)"]
    assert cce["ci_low"] == pytest.approx(-0.05) and cce["ci_high"] == pytest.approx(0.01)
    assert cce["met"] == "not resolved"


def test_ratio_interval_by_hand():
    from alignclip.evaluation.bench import ratio_interval

    base = [100.0, 100.0, 100.0, 100.0, 100.0]
    assert ratio_interval(base, [110.0] * 5, n_boot=200) == pytest.approx([1.1, 1.1])  # no spread: exact
    # a load change that slows run 3 of both presets alike cancels in the paired ratio
    lo, hi = ratio_interval([100, 100, 300, 100, 100], [105, 105, 315, 105, 105], n_boot=500)
    assert lo == pytest.approx(1.05) and hi == pytest.approx(1.05)
    lo, hi = ratio_interval([100, 102, 98, 101, 99], [100, 110, 90, 105, 95], n_boot=500)
    assert lo < 1.0 < hi
    with pytest.raises(ConfigError, match="paired runs"):
        ratio_interval([1.0, 2.0], [1.0])


def test_deterministic_summary_has_no_timings():
    text = deterministic_summary(_fake_result())
    assert "GFLOP/image" in text and "ms" not in text and "MB" not in text


def _agreement(precision: str, device: str, size: int, **over) -> float:
    cfgs = {p: build_config("alignclip-d", smoke=True, device=device, precision=p, **over) for p in ("fp32", precision)}
    segs = build_segmentors(cfgs, DEFAULT_CLASSES)
    image = bench_images(1, size, seed=3)[0]
    return float(np.mean(segs["fp32"].segment(image) == segs[precision].segment(image)))


def test_cpu_bf16_autocast_agrees_with_fp32():
    assert _agreement("bf16", "cpu", 96, long_side=96, crop=48, stride=24) >= 0.99


@pytest.mark.gpu
def test_cuda_fp16_agrees_with_fp32():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    assert _agreement("fp16", "cuda", 448) >= 0.995


@pytest.mark.gpu
def test_cuda_window_loop_has_no_host_syncs():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from alignclip.evaluation.probes import host_syncs

    seg = build_segmentors({"d": build_config("alignclip-d", smoke=True, device="cuda")}, DEFAULT_CLASSES)["d"]
    image = bench_images(1, 448, seed=2)[0]
    seg.predict(image)  # warm-up: lazy CUDA initialisation may synchronise once
    # a 448² image has 9 windows in one batch: the labels of its single strip come back to the host once
    assert host_syncs(seg, image) <= 2


def test_measured_summary_reads_every_number_from_the_result():
    from alignclip.study.bench import measured_summary

    result = _fake_result()
    for rec in result["presets"]:
        rec.update(precision="fp32", random_weights=True, reference_efficiency=None, reference_gflop_per_image=None)
        rec.update(ms_ratio=rec["ms_per_image"] / 100.0, mem_ratio=rec["peak_mem_mb"] / 1000.0, gflop_ratio=1.0)
    result["presets"][3]["ms_ratio_ci"] = [1.41, 1.62]
    result.update(
        date="2026-12-03",
        environment=dict(device_name="a test CPU"),
        settings=dict(size=448, repeats=5, images=2, warmup=1),
        matmul_gflops=dict(mean=214.0),
        targets=[dict(target="sga time ratio", met="not resolved", value=1.02, threshold=1.03)],
    )
    text = measured_summary(result)
    assert text.startswith("Measured on 2026-12-03 on a test CPU, fp32, random weights of real size")
    assert "**SegEarth-OV: 0.10 s per image and 1000 MB**" in text and "at 80 % of the matmul rate" in text
    assert "`alignclip-d`: 0.15 s per image, 2000 MB; 1.50× [1.41, 1.62] time, 2.00× memory" in text
    assert "sga time ratio: not resolved (1.02, threshold 1.03)" in text
    from alignclip.study.bench import measured_table

    table = measured_table(result).splitlines()
    assert len(table) == 2 + len(result["presets"])
    assert table[5] == "| `alignclip-d` | 0.15 | 2,000 | 12 | 1.50 [1.41, 1.62] | 2.00 |"


def test_random_weights_reach_a_methods_own_vfm():
    """--random-weights (and bench_configs(random_weights=True)) also set the VFM of ProxyCLIP/CASS to random."""
    from alignclip.cli.bench import bench_configs_from_args
    from alignclip.evaluation.bench import bench_configs

    assert bench_configs(["proxyclip"], random_weights=True)["proxyclip"].encoder_vfm_pretrained == "none"
    args = _parser().parse_args(["bench", "--random-weights", "--presets", "cass", "segearth-ov", "--json", "b.json"])
    configs = bench_configs_from_args(args)
    assert configs["cass"].encoder_vfm_pretrained == "none" and configs["cass"].pretrained == "none"


def test_bench_table_for_readers(result):
    from alignclip.study import BENCH_HEADERS, bench_table, for_reading
    from alignclip.study.bench import BENCH_COLUMNS

    table = bench_table(result)
    assert list(table.columns) == BENCH_COLUMNS and table.loc[0, "ci_low"] == table.loc[0, "ci_high"] == 1.0
    shown = for_reading(table, headers=BENCH_HEADERS).data
    assert "time vs first [95 % CI]" in shown.columns and "ci_low" not in shown.columns
