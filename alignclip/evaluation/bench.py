"""Speed and memory benchmark of the presets side by side (paper Table 11, App. A.6).

:func:`run_bench` builds every preset once in one process (one CLIP model shared by all presets that use the same
backbone), then times them round-robin on the same images, so a change of machine load during the run touches every
preset alike. Per preset it reports:

- ``ms_per_image``: median wall time of :meth:`Segmentor.predict` (resize, windows, upsampler, SGA, CCE,
  post-processing, labels on the host) over ``repeats`` passes of ``images`` images after ``warmup`` untimed runs,
  every run of every preset interleaved with the others'; on CUDA the device is synchronised before and after each
  image. ``ms_ratio`` (to the first preset) comes with ``ms_ratio_ci``, a paired bootstrap 95 % interval.
- ``label_agreement``: the share of the first image's pixels given the same label as by the first preset (for
  ``P`` against ``P:precision=bf16``: the low precision's pixel agreement with fp32, measured in the same run).
- ``peak_mem_mb`` = ``weights_mb + activation_mb``: the bytes of every model the preset holds (CLIP with its text
  tower, upsampler, VFM) plus the largest rise of memory during one image. CUDA: ``max_memory_allocated`` minus the
  allocation before the image. CPU: the process's peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``
  before each image; a 1 ms RSS-sampling thread where that file is unavailable) minus the RSS before the image.
  ``ru_maxrss`` is not used: it never decreases, so after a heavier preset it would hide a lighter one's peak.
- ``gflop_per_image``: matmul/conv/attention FLOPs executed for one image, counted with
  :class:`torch.utils.flop_counter.FlopCounterMode` (elementwise work is not counted); split into the CLIP image
  encoder, upsampler, VFM and the rest (K-Means, propagation, logits). Executed FLOPs include the zero taps of the
  upsampler's dense per-tile kernels. ``ref_upsampler_gflop`` counts the upsampler in SegEarth-OV's order from its architecture (useful taps only, the
  final 1x1 conv at full resolution), the work the original algorithm needs.
- ``reference_gflop_per_image``: the executed FLOPs with the upsampler's replaced by ``ref_upsampler_gflop``, and
  ``reference_efficiency`` = that work per second / the matmul rate: how fast the reference algorithm's work gets
  done (the exact reorderings of the upsampler make it larger than ``efficiency``).
- ``achieved_gflops`` = GFLOP / seconds per image and ``efficiency`` = achieved / the dense fp32 matmul rate measured
  in the same process (a 2048³ matmul timed before and after the presets).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch

from alignclip.errors import ConfigError
from alignclip.evaluation.probes import (
    PeakMemory,
    count_flops,
    host_syncs,
    matmul_gflops,
    model_bytes,
    reference_upsampler_gflop,
    sync_device,
    time_breakdown,
)
from alignclip.io.provenance import device_description, package_versions
from alignclip.models.clip import create_clip
from alignclip.ops.windows import window_boxes
from alignclip.pipeline.config import SegmentorConfig, build_config, parse_field_value
from alignclip.pipeline.runtime import resolve_device
from alignclip.pipeline.segmentor import Segmentor

__all__ = [
    "DEFAULT_CLASSES",
    "DEFAULT_PRESETS",
    "GROWTH_SIZES",
    "RANDOM_WEIGHTS",
    "bench_configs",
    "bench_images",
    "build_segmentors",
    "growth",
    "parse_bench_preset",
    "ratio_interval",
    "run_bench",
]

DEFAULT_PRESETS = ("segearth-ov", "segearth-ov+sga", "segearth-ov+cce", "alignclip-d", "alignclip-s")
#: Six Potsdam-like classes (one with a synonym): the number of queries, not the names, sets the cost.
DEFAULT_CLASSES = ("road,parking lot", "building", "low vegetation", "tree", "car", "clutter")
GROWTH_SIZES = (448, 896, 1792, 3584)
#: Random weights for every model of a preset. SAM 2 (CorrCLIP's masks) has no random-weight build here: its
#: deterministic stand-in generator is used, so a random-weights run leaves SAM 2's mask time out (its own stage).
RANDOM_WEIGHTS = dict(
    pretrained="none",
    upsampler_ckpt="none",
    vfm_pretrained="none",
    encoder_vfm_pretrained="none",
    trident_sam_pretrained="none",
    corrclip_mask_generator="tiny",
)
_MB = 2.0**20


# ---------------------------------------------------------------------------------------------------- inputs
def parse_bench_preset(spec: str) -> tuple[str, dict[str, Any]]:
    """``PRESET[+sga|+cce][:key=value,...]`` → (preset, field overrides); e.g. ``segearth-ov+cce:vfm=sam_vitb``.

    Each value is parsed with its field's type (:func:`~alignclip.pipeline.config.parse_field_value`): unknown fields
    and wrong types (``sga=maybe``, ``n_clusters=2.5``) raise a one-line :class:`ConfigError` naming the spec.
    """
    preset, _, extra = spec.partition(":")
    over: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in extra.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"bench preset {spec!r}: {item!r} must be key=value (e.g. segearth-ov+cce:vfm=sam_vitb)")
        try:
            over[key.strip()] = parse_field_value(key.strip(), value)
        except ConfigError as err:
            raise ConfigError(f"bench preset {spec!r}: {err}") from None
    return preset.strip(), over


def bench_images(n: int, height: int, width: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """``n`` seeded RGB uint8 images ``[H, W, 3]``: smooth random fields (image content does not change the cost)."""
    width = width or height
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, 3, max(2, height // 32), max(2, width // 32))).astype(np.float32)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(height, width), mode="bilinear", align_corners=False
    )
    return [np.ascontiguousarray(im.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()) for im in up]


# ---------------------------------------------------------------------------------------------------- building
def bench_configs(
    presets: Sequence[str], *, smoke: bool = False, random_weights: bool = False, **overrides: Any
) -> dict[str, SegmentorConfig]:
    """``{preset spec: config}``; ``random_weights`` sets pretrained/upsampler_ckpt/vfm_pretrained/encoder_vfm_pretrained
    (and Trident's trident_sam_pretrained) to none.

    With ``smoke``, presets whose VFM is SAM get the tiny SAM-layout model (``tiny_sam``) instead of ``tiny``.
    """
    if not presets:
        raise ConfigError("no presets to benchmark; pass --presets P [P ...] (e.g. segearth-ov alignclip-d)")
    base = dict(RANDOM_WEIGHTS) if random_weights and not smoke else {}
    base.update(overrides)
    out = {}
    for spec in presets:
        preset, extra = parse_bench_preset(spec)
        cfg = build_config(preset, smoke=smoke, **{**base, **extra})
        if smoke and build_config(preset, **extra).vfm == "sam_vitb":
            cfg = cfg.replace(vfm="tiny_sam")  # keep the SAM code path with the tiny model
        out[spec] = cfg
    return out


def build_segmentors(configs: dict[str, SegmentorConfig], classes: Sequence[str]) -> dict[str, Segmentor]:
    """One :class:`Segmentor` per config, sharing CLIP models (and their text embeddings) where possible."""
    clips: dict[tuple, Any] = {}
    segs = {}
    for label, cfg in configs.items():  # text embeddings are shared with the model (pipeline.runtime)
        key = (cfg.backbone, cfg.pretrained, str(resolve_device(cfg.device)))
        if key not in clips:
            clips[key] = create_clip(cfg.backbone, cfg.pretrained, resolve_device(cfg.device))
        segs[label] = Segmentor(cfg, classes, clip=clips[key])
    return segs


# ---------------------------------------------------------------------------------------------------- runs
def _time_predict(
    seg: Segmentor, image: np.ndarray, meter: PeakMemory, keep_logits: bool = True
) -> tuple[float, float]:
    """(milliseconds, activation MB) of one prediction."""
    with meter.measure():
        sync_device(seg.device)
        t0 = time.perf_counter()
        seg.predict(image, keep_logits=keep_logits)
        sync_device(seg.device)
        ms = 1e3 * (time.perf_counter() - t0)
    return ms, meter.peak_bytes / _MB


def _load() -> dict[str, float]:
    """1-minute load average and (Linux) the share of time runnable tasks waited for a CPU (other processes)."""
    out = {"loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")}
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/pressure/cpu") as f:
            out["cpu_pressure_avg10"] = float(f.readline().split()[1].split("=")[1])
    return out


def _environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = dict(
        device=str(device),
        device_name=device_description(device),
        torch_threads=torch.get_num_threads(),
        cpu_count=psutil.cpu_count(),
        platform=platform.platform(),
        versions=package_versions(),
    )
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def run_bench(
    presets: Sequence[str] = DEFAULT_PRESETS,
    *,
    configs: dict[str, SegmentorConfig] | None = None,
    smoke: bool = False,
    random_weights: bool = False,
    size: int = 448,
    images: int = 2,
    warmup: int = 1,
    repeats: int = 5,
    n_boot: int = 2000,
    classes: Sequence[str] = DEFAULT_CLASSES,
    reference_flops: bool = True,
    breakdown: bool = True,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Time and measure ``presets`` side by side on the same ``images`` generated ``size × size`` images.

    Args:
        presets: preset specs (:func:`parse_bench_preset`); ratios are relative to the first one.
        configs: ready configurations ``{label: config}`` used instead of ``presets``/``smoke``/``overrides``.
        smoke: tiny random models (pipeline check).
        random_weights: real-size models with random weights (same cost as the released weights, no files).
        size: side of the square test images (resized to the config's ``long_side`` like any input).
        images: distinct images per pass; ``repeats``: timed passes over them after ``warmup`` untimed runs. Every
            timed run of every preset is interleaved (A B C A B C ...), so the ``images × repeats`` runs of two
            presets are paired; ``ms_per_image`` is their median.
        n_boot: bootstrap resamples of the paired runs for each time ratio's 95 % interval (``ms_ratio_ci``).
        classes: class names (their number of queries sets the text side of the cost).
        reference_flops: also count the upsampler's FLOPs in the reference order.
        breakdown: one more run per preset timing its parts (:func:`time_breakdown`).
        log: progress callback (e.g. ``print``).
        overrides: config fields for every preset (e.g. ``device="cpu"``, ``window_batch=4``).

    Returns:
        JSON-ready dict: ``presets`` (one record per preset, in order), ``matmul_gflops`` (before/after/mean),
        ``environment``, ``settings``.
    """
    if images < 1 or warmup < 0 or size < 16 or repeats < 1 or n_boot < 1:
        raise ConfigError(
            f"images={images}, warmup={warmup}, repeats={repeats}, n_boot={n_boot}, size={size}: need images >= 1, "
            f"warmup >= 0, repeats >= 1 (5 or more to resolve a few per cent), n_boot >= 1, size >= 16"
        )
    say = log or (lambda _msg: None)
    if configs is None:
        configs = bench_configs(presets, smoke=smoke, random_weights=random_weights, **overrides)
    devices = {str(resolve_device(c.device)) for c in configs.values()}
    if len(devices) != 1:
        raise ConfigError(f"presets resolve to several devices {sorted(devices)}; pass one --device")
    device = torch.device(devices.pop())
    say(f"building {len(configs)} presets on {device}")
    t_build = time.perf_counter()
    segs = build_segmentors(configs, classes)
    build_s = time.perf_counter() - t_build
    pics = bench_images(images, size, seed=0)
    load_before = _load()
    rate_before = matmul_gflops(device)
    say(f"dense fp32 matmul: {rate_before:.1f} GFLOP/s")
    meter = PeakMemory(device)
    times: dict[str, list[float]] = {k: [] for k in segs}
    acts: dict[str, list[float]] = {k: [] for k in segs}
    schedule = [0] * warmup + [i for _ in range(repeats) for i in range(images)]  # image index of each run
    for r, i in enumerate(schedule):  # interleaved: every preset sees the same load, run r of each is paired
        for label, seg in segs.items():
            ms, act = _time_predict(seg, pics[i], meter)
            if r >= warmup:
                times[label].append(ms)
                acts[label].append(act)
            what = "warm-up" if r < warmup else f"pass {(r - warmup) // images + 1} image {i + 1}"
            say(f"  {what} {label}: {ms:.0f} ms, +{act:.0f} MB")
    rate_after = matmul_gflops(device)
    load_after = _load()
    labels = {label: seg.predict(pics[0], keep_logits=False).labels for label, seg in segs.items()}
    first_labels = next(iter(labels.values()))
    rate = (rate_before + rate_after) / 2
    records = []
    for label, seg in segs.items():
        flops = count_flops(seg, pics[0])
        ref_up = reference_upsampler_gflop(seg, pics[0]) if reference_flops else None
        ms = statistics.median(times[label])
        weights_mb = model_bytes(seg) / _MB
        activation_mb = max(acts[label])
        h, w = seg.processing_size(pics[0])
        achieved = flops["total"] / (ms / 1e3)
        # the work of the reference algorithm: executed FLOPs with the upsampler's replaced by its reference count
        ref_total = None if not reference_flops else flops["total"] - flops["upsampler"] + (ref_up or 0.0)
        records.append(
            dict(
                preset=label,
                ms_per_image=ms,
                ms_all=times[label],
                peak_mem_mb=weights_mb + activation_mb,
                weights_mb=weights_mb,
                activation_mb=activation_mb,
                gflop_per_image=flops["total"],
                gflop_clip=flops["clip"],
                gflop_upsampler=flops["upsampler"],
                gflop_vfm=flops["vfm"],
                gflop_rest=flops["rest"],
                ref_upsampler_gflop=ref_up,
                achieved_gflops=achieved,
                efficiency=achieved / rate,
                reference_gflop_per_image=ref_total,
                reference_efficiency=None if ref_total is None else ref_total / (ms / 1e3) / rate,
                n_windows=len(window_boxes(h, w, seg.config.crop, seg.config.stride)),
                window_batch=seg.window_batch,
                host_syncs_per_image=host_syncs(seg, pics[0]),
                # share of pixels of the first image labelled as the first preset labels them (a precision's
                # agreement with fp32 when the presets differ only in precision)
                label_agreement=float(np.mean(labels[label] == first_labels)),
                breakdown_ms=time_breakdown(seg, pics[0]) if breakdown else None,
                precision={torch.float16: "fp16", torch.bfloat16: "bf16"}.get(seg.autocast_dtype, "fp32"),
                random_weights=seg.is_random,
                weights=seg.weights_identity(),
            )
        )
    first = records[0]
    for rec in records:
        rec.update(
            ms_ratio=rec["ms_per_image"] / first["ms_per_image"],
            ms_ratio_ci=ratio_interval(times[first["preset"]], times[rec["preset"]], n_boot=n_boot),
            mem_ratio=rec["peak_mem_mb"] / first["peak_mem_mb"],
            gflop_ratio=rec["gflop_per_image"] / first["gflop_per_image"],
        )
    return dict(
        date=datetime.date.today().isoformat(),
        presets=records,
        matmul_gflops=dict(before=rate_before, after=rate_after, mean=rate),
        environment={**_environment(device), "load_before": load_before, "load_after": load_after},
        settings=dict(
            size=size,
            images=images,
            warmup=warmup,
            repeats=repeats,
            n_boot=n_boot,
            classes=list(classes),
            smoke=smoke,
            random_weights=random_weights,
            overrides={k: str(v) for k, v in overrides.items()},
            build_s=build_s,
            memory_method=_memory_method(meter),
        ),
    )


def ratio_interval(
    base_ms: Sequence[float], other_ms: Sequence[float], n_boot: int = 2000, seed: int = 0
) -> list[float]:
    """95 % percentile bootstrap interval of median(other) / median(base) over paired runs.

    Run ``j`` of both presets ran back to back on the same image, so the runs are resampled jointly: a load change
    that slows run ``j`` of both cancels out of the ratio.
    """
    a, b = np.asarray(base_ms, dtype=float), np.asarray(other_ms, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ConfigError(f"ratio_interval needs paired runs of equal number, got {a.size} and {b.size}")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    ratios = np.median(b[idx], axis=1) / np.median(a[idx], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return [float(lo), float(hi)]


def _memory_method(meter: PeakMemory) -> str:
    if meter.device.type == "cuda":
        return "weights + cuda max_memory_allocated rise per image"
    return (
        "weights + peak RSS rise per image ("
        + ("VmHWM reset by clear_refs" if meter._hwm else "1 ms RSS sampling")
        + ")"
    )


def growth(
    preset: str = "segearth-ov",
    sizes: Sequence[int] = GROWTH_SIZES,
    *,
    config: SegmentorConfig | None = None,
    smoke: bool = False,
    random_weights: bool = False,
    classes: Sequence[str] = DEFAULT_CLASSES,
    repeats: int = 1,
    keep_logits: bool = False,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Time and memory of one preset on square images of growing side, without resizing (``long_side=None``).

    Args:
        preset: a preset spec (:func:`parse_bench_preset`).
        config: a ready configuration used instead of ``preset``/``smoke``/``overrides`` (its ``long_side`` is
            set to None).
        sizes: image sides in pixels (the long side; images are square).
        repeats: timed runs per size (median), after one untimed run at the smallest size.
        keep_logits: measure :meth:`Segmentor.predict` keeping the full logits (False: labels written band by band,
            as ``alignclip segment`` does, so memory does not grow with the image).
        overrides: config fields (e.g. ``device``, ``window_batch``).

    Returns:
        One row per size: ``long_side, crop, stride, window_batch, n_windows, ms_per_image, ms_per_window, activation_mb, weights_mb,
        peak_mem_mb, image_buffers_mb, keep_logits`` (``image_buffers_mb``: the buffers of
        :meth:`Segmentor.predict` that grow with the pixels: the ``[H, W]`` uint8 label map, plus the ``[Q, H, W]``
        fp32 logits with ``keep_logits``; the windows stream in bands of rows and are normalised on demand, so
        neither a count map nor a float image of the whole tile exists).
        ``window_batch`` is the resolved number (``"auto"`` → 1 on CPU, 32 on GPU).
    """
    if repeats < 1 or not sizes:
        raise ConfigError(f"growth needs sizes and repeats >= 1, got sizes={list(sizes)}, repeats={repeats}")
    say = log or (lambda _msg: None)
    if config is not None:
        cfg = {preset: config.replace(long_side=None)}
    else:
        cfg = bench_configs([preset], smoke=smoke, random_weights=random_weights, **{**overrides, "long_side": None})
    seg = build_segmentors(cfg, classes)[preset]
    meter = PeakMemory(seg.device)
    seg.predict(bench_images(1, min(sizes), seed=1)[0])
    weights_mb = model_bytes(seg) / _MB
    n_queries = len(seg.classes.queries)
    rows = []
    for side in sizes:
        image = bench_images(1, side, seed=1)[0]
        runs = [_time_predict(seg, image, meter, keep_logits) for _ in range(repeats)]
        ms = statistics.median(r[0] for r in runs)
        act = max(r[1] for r in runs)
        n_windows = len(window_boxes(side, side, seg.config.crop, seg.config.stride))
        rows.append(
            dict(
                preset=preset,
                long_side=side,
                crop=seg.config.crop,
                stride=seg.config.stride,
                window_batch=seg.window_batch,
                n_windows=n_windows,
                ms_per_image=ms,
                ms_per_window=ms / n_windows,
                activation_mb=act,
                weights_mb=weights_mb,
                peak_mem_mb=weights_mb + act,
                keep_logits=keep_logits,
                image_buffers_mb=side * side * (4 * n_queries * keep_logits + 1) / _MB,
            )
        )
        say(f"  {preset} {side}x{side}: {n_windows} windows, {ms:.0f} ms, +{act:.0f} MB")
    return pd.DataFrame(rows)
