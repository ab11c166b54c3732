"""Tables, target checks and figures of a :func:`alignclip.evaluation.bench.run_bench` result (paper Table 11, App. A.6).

Absolute milliseconds and megabytes depend on the machine (the paper used RTX 3090 GPUs); the ratios of every
method to SegEarth-OV measured on the same machine in the same run are what can be compared with the paper.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from alignclip.errors import ConfigError, InputError
from alignclip.evaluation.bench import bench_configs, growth, run_bench
from alignclip.kinds import PIPELINE_CHECK, PIPELINE_CHECK_LABEL, kind_of, labelled
from alignclip.paper.names import TABLE11_ROWS
from alignclip.paper.tables import load_table

__all__ = [
    "BASELINE",
    "EFFICIENCY_TARGET",
    "FRAME_COLUMNS",
    "SMOKE_GEOMETRY",
    "SMOKE_GROWTH_SIZES",
    "SMOKE_SIZE",
    "WEIGHTS",
    "BENCH_COLUMNS",
    "BENCH_HEADERS",
    "bench_frame",
    "bench_table",
    "GROWTH_COLUMNS",
    "TABLE11_COLUMNS",
    "check_targets",
    "load_measured_bench",
    "measured_summary",
    "measured_table",
    "MEASURED_BENCH",
    "cost_note",
    "deterministic_summary",
    "plot_breakdown",
    "plot_growth",
    "plot_table11",
    "run_header",
    "study_bench",
    "study_configs",
    "study_growth",
    "table11_comparison",
]

BASELINE = "segearth-ov"
EFFICIENCY_TARGET = "segearth-ov efficiency (reference GFLOP/s / matmul GFLOP/s)"
FRAME_COLUMNS = [
    "preset",
    "n_windows",
    "ms_per_image",
    "masks_ms",
    "peak_mem_mb",
    "weights_mb",
    "activation_mb",
    "gflop_per_image",
    "gflop_clip",
    "gflop_upsampler",
    "gflop_vfm",
    "gflop_rest",
    "ref_upsampler_gflop",
    "reference_gflop_per_image",
    "achieved_gflops",
    "efficiency",
    "reference_efficiency",
    "ms_ratio",
    "ci_low",
    "ci_high",
    "mem_ratio",
    "gflop_ratio",
    "label_agreement",
]


def bench_frame(result: dict[str, Any]) -> pd.DataFrame:
    """One row per preset with the numeric fields of a bench result (ratios relative to the first preset)."""
    frame = pd.DataFrame(result["presets"])
    ci = [
        c if isinstance(c, list | tuple) else (float("nan"), float("nan"))
        for c in frame.get("ms_ratio_ci", [None] * len(frame))
    ]
    frame["ci_low"], frame["ci_high"] = [c[0] for c in ci], [c[1] for c in ci]  # of ms_ratio (paired bootstrap)
    breakdown = frame.get("breakdown_ms", [None] * len(frame))
    frame["masks_ms"] = [b.get("masks", 0.0) if isinstance(b, dict) else float("nan") for b in breakdown]
    return frame.reindex(columns=FRAME_COLUMNS)  # older files lack the reference fields and the intervals


#: The columns of :func:`bench_table` (what a reader compares; the JSON and :func:`bench_frame` keep every field).
BENCH_COLUMNS = [
    "preset",
    "ms_per_image",
    "masks_ms",
    "peak_mem_mb",
    "gflop_per_image",
    "reference_efficiency",
    "ms_ratio",
    "ci_low",
    "ci_high",
    "mem_ratio",
]
BENCH_HEADERS = {
    "paper_ms": "paper ms",
    "paper_mem_mb": "paper MB",
    "paper_ms_ratio": "paper time ratio",
    "paper_mem_ratio": "paper memory ratio",
    "ours_ms": "ours ms",
    "ours_mem_mb": "ours MB",
    "ours_ms_ratio": "ours time ratio",
    "ours_mem_ratio": "ours memory ratio",
    "long_side": "image side (px)",
    "n_windows": "windows",
    "ms_per_window": "ms / window",
    "activation_mb": "working MB",
    "ms_per_image": "ms / image",
    "masks_ms": "of which masks (ms)",
    "peak_mem_mb": "peak MB",
    "gflop_per_image": "GFLOP / image",
    "reference_efficiency": "share of matmul rate",
    "ms_ratio": "time vs first",
    "mem_ratio": "memory vs first",
}


#: What notebook 09 shows of :func:`table11_comparison` and of the growth table (the JSON keeps every field).
TABLE11_COLUMNS = [
    "method",
    "paper_ms",
    "paper_mem_mb",
    "paper_ms_ratio",
    "paper_mem_ratio",
    "ours_ms",
    "ours_mem_mb",
    "ours_ms_ratio",
    "ci_low",
    "ci_high",
    "ours_mem_ratio",
]
GROWTH_COLUMNS = ["long_side", "n_windows", "ms_per_image", "ms_per_window", "activation_mb", "peak_mem_mb"]


def bench_table(result: dict[str, Any]) -> pd.DataFrame:
    """:func:`bench_frame` narrowed to :data:`BENCH_COLUMNS` (the time ratio's paired interval in
    ``ci_low``/``ci_high``); show it with ``for_reading(..., headers=BENCH_HEADERS)``."""
    return bench_frame(result)[BENCH_COLUMNS]


def _baseline(result: dict[str, Any]) -> dict[str, Any]:
    for rec in result["presets"]:
        if rec["preset"] == BASELINE:
            return rec
    raise InputError(
        f"the bench result has no {BASELINE!r} preset (has "
        f"{', '.join(r['preset'] for r in result['presets'])}); rerun with --presets {BASELINE} ..."
    )


def run_header(result: dict[str, Any]) -> str:
    """One line on the machine and its load during the run (timings of a loaded machine are not comparable)."""
    env, rate = result["environment"], result["matmul_gflops"]
    load = [env.get(k, {}) for k in ("load_before", "load_after")]
    pressure = ", ".join(f"{x.get('cpu_pressure_avg10', float('nan')):.0f} %" for x in load)
    return (
        f"{env['device_name']}; dense fp32 matmul {rate['before']:.1f} / {rate['after']:.1f} GFLOP/s (before / "
        f"after); 1-min load {load[0].get('loadavg_1min', float('nan')):.1f} / "
        f"{load[1].get('loadavg_1min', float('nan')):.1f}; CPU pressure from other tasks {pressure}"
    )


def table11_comparison(result: dict[str, Any]) -> pd.DataFrame:
    """Paper Table 11 beside ours: time, memory and both as ratios to SegEarth-OV of the same source.

    Returns:
        One row per paper row we measured: ``method, preset, paper_ms, paper_mem_mb, paper_ms_ratio,
        paper_mem_ratio, ours_ms, ours_mem_mb, ours_ms_ratio, ours_mem_ratio, ms_ratio_delta, mem_ratio_delta``.
    """
    paper = load_table("table11_compute").set_index("method")
    base_p, base_o = paper.loc["SegEarth-OV"], _baseline(result)
    rows = []
    for rec in result["presets"]:
        method = TABLE11_ROWS.get(rec["preset"])
        if method is None:
            continue
        p = paper.loc[method]
        pr_ms = p["time_ms_per_image"] / base_p["time_ms_per_image"]
        pr_mem = p["memory_mb"] / base_p["memory_mb"]
        or_ms = rec["ms_per_image"] / base_o["ms_per_image"]
        or_mem = rec["peak_mem_mb"] / base_o["peak_mem_mb"]
        paired = result["presets"][0] is base_o and rec.get("ms_ratio_ci") is not None  # intervals are to the first
        lo, hi = rec["ms_ratio_ci"] if paired else (float("nan"), float("nan"))
        rows.append(
            dict(
                method=method,
                preset=rec["preset"],
                paper_ms=float(p["time_ms_per_image"]),
                paper_mem_mb=float(p["memory_mb"]),
                paper_ms_ratio=pr_ms,
                paper_mem_ratio=pr_mem,
                ours_ms=rec["ms_per_image"],
                ours_mem_mb=rec["peak_mem_mb"],
                ours_ms_ratio=or_ms,
                ci_low=lo,
                ci_high=hi,
                ours_mem_ratio=or_mem,
                ms_ratio_delta=or_ms - pr_ms,
                mem_ratio_delta=or_mem - pr_mem,
            )
        )
    return pd.DataFrame(rows)


def check_targets(result: dict[str, Any], pipeline_check: bool = False) -> pd.DataFrame:
    """The CPU targets of the compute-cost issue, each with its measured value, threshold and verdict.

    - SegEarth-OV reaches >= 70 % of the dense matmul rate, counting the reference algorithm's FLOPs (CLIP as
      executed, the upsampler in SegEarth-OV's order: the issue's 36 + 39 GFLOP per window; decision D27; the
      executed FLOPs' ``efficiency`` when the result has no reference count);
    - SegEarth-OV peak memory <= 3 GB;
    - SGA costs <= 3 % time over SegEarth-OV;
    - CCE's time ratio <= its FLOP ratio + 0.10 (it costs no more than its VFM's share of the FLOPs plus 10 %);
    - AlignCLIP-D peak memory <= 1.9x SegEarth-OV.
    Targets whose presets were not run are left out. Time-ratio targets are judged on their paired bootstrap
    interval (``ci_low``, ``ci_high``): ``met`` "met" or "missed" when the whole interval lies on one side of the
    threshold, "not resolved" otherwise; the other targets by their value. ``verdict`` is ``met``, or
    "pipeline-check" for runs of the tiny models (whose costs say nothing about the real ones).
    """
    recs = {r["preset"]: r for r in result["presets"]}
    base = recs.get(BASELINE)
    columns = ["target", "value", "ci_low", "ci_high", "threshold", "met", "verdict"]
    if base is None:
        return pd.DataFrame(columns=columns)
    reference = base.get("reference_efficiency")

    def ratio_ci(preset: str, shift: float = 0.0) -> tuple[float, float]:
        """The time ratio's interval of ``preset`` to the baseline (both runs interleaved), shifted by ``shift``."""
        ci = recs[preset].get("ms_ratio_ci") if recs[BASELINE] is result["presets"][0] else None
        return (float("nan"), float("nan")) if ci is None else (ci[0] + shift, ci[1] + shift)

    nan = (float("nan"), float("nan"))
    rows = [
        (EFFICIENCY_TARGET, base["efficiency"] if reference is None else reference, nan, 0.70, ">="),
        ("segearth-ov peak memory (MB)", base["peak_mem_mb"], nan, 3072.0, "<="),
    ]
    if "segearth-ov+sga" in recs:
        value = recs["segearth-ov+sga"]["ms_per_image"] / base["ms_per_image"]
        rows.append(("sga time ratio", value, ratio_ci("segearth-ov+sga"), 1.03, "<="))
    if "segearth-ov+cce" in recs:
        cce = recs["segearth-ov+cce"]
        shift = -(cce["gflop_per_image"] / base["gflop_per_image"] + 0.10)
        value = cce["ms_per_image"] / base["ms_per_image"] + shift
        rows.append(("cce time ratio - (flop ratio + 0.10)", value, ratio_ci("segearth-ov+cce", shift), 0.0, "<="))
    if "alignclip-d" in recs:
        rows.append(
            ("alignclip-d memory ratio", recs["alignclip-d"]["peak_mem_mb"] / base["peak_mem_mb"], nan, 1.9, "<=")
        )
    out = pd.DataFrame(
        [
            dict(target=t, value=v, ci_low=ci[0], ci_high=ci[1], threshold=th, met=_judge(v, ci, th, op))
            for t, v, ci, th, op in rows
        ],
        columns=columns[:-1],
    )
    out["verdict"] = PIPELINE_CHECK if pipeline_check else out["met"]
    return out


def _judge(value: float, ci: tuple[float, float], threshold: float, op: str) -> str:
    """ "met" / "missed" by the value when there is no interval; with one, "met" or "missed" only when the whole
    interval lies on one side of the threshold, else "not resolved" (the run cannot tell)."""
    ok = (lambda v: v >= threshold) if op == ">=" else (lambda v: v <= threshold)
    lo, hi = ci
    if lo != lo or hi != hi:  # NaN: no interval (a memory or rate target)
        return "met" if ok(value) else "missed"
    if ok(lo) and ok(hi):
        return "met"
    if not ok(lo) and not ok(hi):
        return "missed"
    return "not resolved"


def deterministic_summary(result: dict[str, Any], growth: pd.DataFrame | None = None) -> str:
    """Text that two runs print identically: GFLOP per image and window counts (no timings, no memory)."""
    lines = []
    for rec in result["presets"]:
        ref = rec["ref_upsampler_gflop"]
        ref_text = f"{ref:.2f}" if ref is not None else "-"
        lines.append(
            f"{rec['preset']:<30s} windows {rec['n_windows']:3d}  GFLOP/image {rec['gflop_per_image']:9.2f}"
            f"  (clip {rec['gflop_clip']:.2f}, upsampler {rec['gflop_upsampler']:.2f}, "
            f"vfm {rec['gflop_vfm']:.2f}, rest {rec['gflop_rest']:.2f}; upsampler reference order {ref_text})"
        )
    if growth is not None:
        for _, row in growth.iterrows():
            lines.append(
                f"growth {row['preset']:<23s} long side {int(row['long_side']):5d}: {int(row['n_windows']):4d} windows"
            )
    return "\n".join(lines)


def _title(text: str, pipeline_check: bool) -> str:
    return labelled(text, kind_of(pipeline_check))


def plot_table11(comparison: pd.DataFrame, pipeline_check: bool = False):
    """Bars of the time and memory ratios to SegEarth-OV, paper vs ours (ratios are machine-independent)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = pd.concat(
        [
            comparison.assign(source=src, ratio=comparison[f"{src}_{what}_ratio"], measure=label)
            for src in ("paper", "ours")
            for what, label in (("ms", "time / SegEarth-OV"), ("mem", "memory / SegEarth-OV"))
        ]
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=False)
    for ax, measure in zip(axes, ("time / SegEarth-OV", "memory / SegEarth-OV"), strict=True):
        sns.barplot(
            data=long[long["measure"] == measure],
            x="method",
            y="ratio",
            hue="source",
            ax=ax,
            palette=["#9e9e9e", "#1f77b4"],
        )
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(measure)
        ax.set_xlabel("")
        ax.set_ylabel("ratio to SegEarth-OV")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(_title("Table 11: cost relative to SegEarth-OV, paper (RTX 3090) vs ours", pipeline_check))
    fig.tight_layout()
    return fig


def plot_breakdown(result: dict[str, Any], pipeline_check: bool = False):
    """Stacked bars: where the time of one image goes, per preset (CLIP, a method's mask generation, upsampler, VFM,
    rest of CCE, other)."""
    import matplotlib.pyplot as plt

    parts = ["clip", "masks", "upsampler", "vfm", "cce_rest", "other"]
    rows = [
        {"preset": r["preset"], **{k: r["breakdown_ms"].get(k, 0.0) for k in parts}}
        for r in result["presets"]
        if r.get("breakdown_ms")
    ]
    if not rows:
        raise InputError("the bench result has no time breakdown; rerun without --no-breakdown")
    frame = pd.DataFrame(rows).set_index("preset")
    fig, ax = plt.subplots(figsize=(9, 3.8))
    frame.plot.barh(stacked=True, ax=ax, colormap="tab10")
    ax.invert_yaxis()
    ax.set_xlabel("ms per image (one run)")
    ax.set_ylabel("")
    ax.set_title(_title("Where the time of one image goes", pipeline_check))
    fig.tight_layout()
    return fig


def plot_growth(growth: pd.DataFrame, pipeline_check: bool = False):
    """Time vs number of windows (with a least-squares line) and memory vs image side (weights, image buffers)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    sns.lineplot(data=growth, x="n_windows", y="ms_per_image", hue="preset", marker="o", ax=ax_t)
    for preset, sub in growth.groupby("preset"):
        slope, icpt = np.polyfit(sub["n_windows"], sub["ms_per_image"], 1)
        xs = np.array([0, sub["n_windows"].max()])
        ax_t.plot(xs, icpt + slope * xs, linestyle=":", color="grey", label=f"{preset}: {slope:.1f} ms/window fit")
    first = growth.iloc[0]
    ax_t.set_xlabel(
        f"windows per image ({first['crop']}² px, stride {first['stride']}, batches of {first['window_batch']})"
    )
    ax_t.set_ylabel("ms per image")
    ax_t.set_title("time grows linearly with the windows")
    ax_t.legend(fontsize=8)
    mem = growth.melt(
        id_vars=["preset", "long_side"],
        value_vars=["peak_mem_mb", "image_buffers_mb", "weights_mb"],
        var_name="quantity",
        value_name="MB",
    )
    sns.lineplot(data=mem, x="long_side", y="MB", hue="quantity", style="preset", marker="o", ax=ax_m)
    ax_m.set_xscale("log", base=2)
    ax_m.set_xticks(sorted(growth["long_side"].unique()), [str(s) for s in sorted(growth["long_side"].unique())])
    ax_m.set_xlabel("image side in pixels (square, no resize)")
    ax_m.set_ylabel("MB")
    ax_m.set_title("peak memory vs image size")
    fig.suptitle(_title("Growth with image size", pipeline_check))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------- notebook
#: Smoke profile: 64-px windows with stride 32 on 128-px images keep the paper's 9-window layout (448/224/112), on
#: multiples of the tiny models' patch 16 (Trident splices windows on the patch grid).
SMOKE_GEOMETRY = dict(long_side=128, crop=64, stride=32)
SMOKE_SIZE = 128
SMOKE_GROWTH_SIZES = (64, 128, 256, 512)  # 1, 9, 49, 225 windows, as 224, 448, 896, 1792 with 224-px windows
WEIGHTS = ("random", "released")


def study_configs(ctx, presets, weights: str = "random", window_batch: int | str = 0) -> dict:
    """``{preset spec: config}`` of a study context (smoke: tiny models in the 9-window layout; full: real sizes,
    random weights unless ``weights="released"``: the cost is the same). ``window_batch`` > 0 or ``"auto"``
    overrides the windows per forward (1 = one window at a time, as the reference code's slide inference); 0
    leaves the config's (``"auto"`` by default: 1 on CPU, 32 on GPU, resolved by the segmentor)."""
    if weights not in WEIGHTS:
        raise ConfigError(f"weights={weights!r} is not valid; choose one of {', '.join(WEIGHTS)}")
    over: dict[str, Any] = {"device": ctx.device}
    if window_batch:
        over["window_batch"] = window_batch if window_batch == "auto" else int(window_batch)
    if ctx.is_smoke:
        return bench_configs(presets, smoke=True, **SMOKE_GEOMETRY, **over)
    if weights == "random":
        return bench_configs(presets, random_weights=True, **over)
    return bench_configs(
        presets,
        pretrained=ctx.clip_pretrained,
        upsampler_ckpt=ctx.upsampler_ckpt,
        vfm_pretrained=ctx.vfm_pretrained,
        **over,
    )


def study_bench(
    ctx,
    presets,
    images: int = 2,
    size: int = 448,
    weights: str = "random",
    bench_json: str = "",
    window_batch: int | str = 0,
    repeats: int = 5,
) -> dict[str, Any]:
    """Run the benchmark for a notebook, or (full profile) read an ``alignclip bench`` JSON given as ``bench_json``."""
    if bench_json and not ctx.is_pipeline_check:
        path = Path(bench_json)
        if not path.is_file():
            raise InputError(
                f"bench_json {path} not found; run `alignclip bench --random-weights --json {path}` "
                "first or leave bench_json empty to benchmark here"
            )
        body = json.loads(path.read_text())
        if "presets" not in body:
            raise InputError(
                f"{path} is not an alignclip bench result (no 'presets'); pass the --json of `alignclip bench`"
            )
        return body
    configs = study_configs(ctx, presets, weights, window_batch)
    size = SMOKE_SIZE if ctx.is_smoke else size
    return run_bench(list(configs), configs=configs, images=images, repeats=repeats, size=size)


def study_growth(ctx, preset: str, sizes, weights: str = "random", window_batch: int | str = 0) -> pd.DataFrame:
    """:func:`alignclip.evaluation.bench.growth` for a notebook (smoke: :data:`SMOKE_GROWTH_SIZES` with the tiny models)."""
    config = study_configs(ctx, [preset], weights, window_batch)[preset]
    return growth(preset, SMOKE_GROWTH_SIZES if ctx.is_smoke else tuple(sizes), config=config)


def cost_note(ctx, weights: str = "random"):
    """A Markdown box saying what the timings of this notebook are (and are not)."""
    from IPython.display import Markdown

    if ctx.is_smoke:
        text = (
            f"**Cost benchmark, {PIPELINE_CHECK_LABEL}.** Tiny random models on 128-px images with 64-px windows: these "
            "timings test the harness; they say nothing about the cost of the real models."
        )
    elif weights == "random" or ctx.profile == "rehearsal":
        text = (
            "**Cost benchmark with real-size models and random weights.** Weights do not change the work: "
            "time, memory and FLOPs are those of the released models. No segmentation quality is measured."
        )
    else:
        text = "**Cost benchmark with the released weights** (CLIP, JBU upsampler, VFMs of the full profile)."
    return Markdown(f"> {text} Absolute times are this machine's; compare the ratios with the paper's.")


#: The full-profile benchmark of record on the project's CPU (an ``alignclip bench --random-weights`` JSON shipped
#: with the package), summarised by :func:`measured_summary` in notebook 09 and the README.
MEASURED_BENCH = Path(__file__).resolve().parent / "data" / "bench_cpu.json"


def load_measured_bench(path: str | Path | None = None) -> dict[str, Any]:
    """The bench result of record (:data:`MEASURED_BENCH`) or another ``alignclip bench`` JSON."""
    path = Path(path) if path else MEASURED_BENCH
    if not path.is_file():
        raise InputError(f"bench result {path} not found; run `alignclip bench --random-weights --json {path}`")
    return json.loads(path.read_text())


def _ratio_text(rec: dict[str, Any]) -> str:
    ci = rec.get("ms_ratio_ci")
    interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f"{rec['ms_ratio']:.2f}×{interval} time, {rec['mem_ratio']:.2f}× memory"


def measured_summary(result: dict[str, Any]) -> str:
    """Markdown bullets of a real-size benchmark, every number read from ``result`` (no number typed by hand)."""
    env, settings = result["environment"], result["settings"]
    base = _baseline(result)
    lines = [
        f"Measured {'on ' + result['date'] + ' ' if 'date' in result else ''}on {env['device_name']}, {base['precision']}, "
        f"{'random weights of real size' if base['random_weights'] else 'released weights'}, "
        f"{settings['size']}² images ({base['n_windows']} windows of 224²), {settings['repeats']} interleaved passes "
        f"over {settings['images']} image{'s' if settings['images'] != 1 else ''} after {settings['warmup']} warm-up; dense fp32 matmul "
        f"{result['matmul_gflops']['mean']:.0f} GFLOP/s in the same run:",
        "",
        f"- **SegEarth-OV: {base['ms_per_image'] / 1e3:.2f} s per image and {base['peak_mem_mb']:.0f} MB**, "
        f"{base['gflop_per_image']:.0f} GFLOP executed per image"
        + (
            f" ({base['reference_gflop_per_image']:.0f} in the reference algorithm's order, done at "
            f"{100 * base['reference_efficiency']:.0f} % of the matmul rate)"
            if base.get("reference_efficiency") is not None
            else f" at {100 * base['efficiency']:.0f} % of the matmul rate"
        )
        + ".",
    ]
    for rec in result["presets"]:
        if rec is base:
            continue
        lines.append(
            f"- `{rec['preset']}`: {rec['ms_per_image'] / 1e3:.2f} s per image, {rec['peak_mem_mb']:.0f} MB; "
            f"{_ratio_text(rec)} of SegEarth-OV (95 % paired interval), {rec['gflop_ratio']:.2f}× its FLOPs."
        )
    targets = result.get("targets") or []
    if targets:
        verdicts = "; ".join(
            f"{t['target']}: {t['met']} ({t['value']:.3g}, threshold {t['threshold']:g})" for t in targets
        )
        lines += ["", f"Targets: {verdicts}."]
    return "\n".join(lines)


def measured_table(result: dict[str, Any]) -> str:
    """A Markdown table of a benchmark (one row per preset; time ratios with their paired 95 % interval)."""
    rows = [
        "| preset | s / image | peak MB | GFLOP / image | time vs SegEarth-OV [95 % CI] | memory vs SegEarth-OV |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for rec in result["presets"]:
        ci = rec.get("ms_ratio_ci")
        interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        rows.append(
            f"| `{rec['preset']}` | {rec['ms_per_image'] / 1e3:.2f} | {rec['peak_mem_mb']:,.0f} | "
            f"{rec['gflop_per_image']:,.0f} | {rec['ms_ratio']:.2f}{interval} | {rec['mem_ratio']:.2f} |"
        )
    return "\n".join(rows)
