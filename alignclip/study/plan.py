"""What the study costs before it runs: evaluations, images, device-hours and disk per notebook (``alignclip study
plan``).

Each job's time is its images × its windows per image × a time per window of its preset, taken from a benchmark
(``alignclip bench --out BENCH.json`` on the device that will run the study; the package ships this project's CPU
measurement, :func:`alignclip.study.bench.load_measured_bench`) or from the paper's Table 11 (``bench="paper"``: its
ms per image on the authors' GPU, taken as the cost of a 448² image, 9 windows). A preset the benchmark does not
hold takes its base preset's time (``PRESET+sga`` → ``PRESET``), else SegEarth-OV's; the ``basis`` column says
which. Windows per image follow each dataset's converted image size (manifest ``image_size``), the processing size
(``long_side``) and the sliding windows (``crop``, ``stride``) of the job's configuration. Images come from the
manifests (``num_eval_images``, else ``images_estimate``: marked estimated). Disk: RESULT.json files (per-image
confusion matrices, which the study keeps) and, for reference, the predicted masks if saved
(``alignclip evaluate --save-predictions``; the study saves none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import open_clip
import pandas as pd

from alignclip.data import load_manifest
from alignclip.models.backbones import resolve_backbone
from alignclip.models.clip import register_model_configs
from alignclip.paper.names import TABLE11_ROWS
from alignclip.paper.tables import load_table
from alignclip.study.jobs import Job, job_context, job_done, list_jobs

__all__ = [
    "PAPER_BENCH",
    "bench_times",
    "format_plan",
    "clip_window_flops",
    "full_study_plan",
    "load_bench_file",
    "plan_frame",
    "plan_table",
    "plot_plan",
    "windows_per_image",
]

PAPER_BENCH = "paper"
_PAPER_WINDOWS = 9  # a 448² image in 224 windows, stride 112
_RESULT_BYTES_BASE = 6000  # a RESULT.json's fixed part (provenance, summary)
_RESULT_BYTES_PER_ENTRY = 8  # per image and non-zero confusion entry (JSON text)
_CLASSES_PER_IMAGE = 12  # classes present in one image, at most (its matrix is at most this squared)
_MASK_BYTES_PER_PIXEL = 0.1  # PNG label maps of real predictions, roughly


def _grid(length: int, crop: int, stride: int) -> int:
    return max(math.ceil((length - crop) / stride), 0) + 1


def windows_per_image(size: tuple[int, int], long_side: int | None, crop: int, stride: int) -> int:
    """Sliding windows over an image of ``size`` (H, W) resized to ``long_side`` (None: kept)."""
    h, w = size
    if long_side is not None:
        scale = long_side / max(h, w)
        h, w = int(h * scale + 0.5), int(w * scale + 0.5)
    return _grid(h, crop, stride) * _grid(w, crop, stride)


def bench_times(bench: Mapping[str, Any] | str) -> tuple[dict[str, float], str]:
    """``({preset: ms per window}, source)`` of a bench result (``alignclip bench`` JSON) or of the paper."""
    if bench == PAPER_BENCH:
        t11 = load_table("table11")
        presets = {row: preset for preset, row in TABLE11_ROWS.items()}  # Table 11's rows -> presets
        per = {
            presets[m]: float(ms) / _PAPER_WINDOWS
            for m, ms in zip(t11["method"], t11["time_ms_per_image"], strict=True)
            if m in presets and ":" not in presets[m]  # a variant with overrides is not a preset of the study
        }
        return per, "the paper's Table 11 (authors' GPU)"
    per = {}
    for rec in bench["presets"]:
        name = str(rec["preset"])
        if ":" in name:  # a variant with overrides (e.g. +cce:vfm=sam_vitb) is not a preset of the study
            continue
        per[name] = float(rec["ms_per_image"]) / max(int(rec.get("n_windows") or _PAPER_WINDOWS), 1)
    env = bench.get("environment", {})
    return per, f"alignclip bench on {env.get('device_name', env.get('device', 'an unnamed device'))}"


def clip_window_flops(backbone: str, crop: int = 224) -> float | None:
    """Multiply-adds of a CLIP vision tower on one ``crop``² window (``24·N·w² + 4·N²·w`` per block, N tokens of
    width w), from its open_clip config; None when the config cannot be read."""
    named = resolve_backbone(backbone)
    arch = named.arch if named is not None else backbone
    try:
        register_model_configs()
        cfg = open_clip.get_model_config(arch)["vision_cfg"]
        n = (crop // int(cfg["patch_size"])) ** 2 + 1
        w, layers = int(cfg["width"]), int(cfg["layers"])
    except (KeyError, TypeError, ValueError):
        return None
    return float(layers * (24 * n * w * w + 4 * n * n * w))


def _ms_per_window(preset: str, times: Mapping[str, float], backbone: str = "ViT-B-16") -> tuple[float, str]:
    """A preset's ms per window from the benchmark (measured on CLIP ViT-B/16), scaled by the CLIP tower's FLOPs for
    another backbone (the whole window's time scaled: an estimate, said in ``basis``)."""
    if preset in times:
        ms, basis = times[preset], "measured"
    else:
        base = preset.split("+")[0]
        ms, basis = (times[base], f"as {base}") if base in times else (times["segearth-ov"], "as segearth-ov")
    ref, own = clip_window_flops("ViT-B-16"), clip_window_flops(backbone)
    if backbone not in ("ViT-B-16", "clip-b16") and ref and own and not str(backbone).startswith("tiny"):
        ratio = own / ref
        ms, basis = ms * ratio, f"{basis} × {ratio:.2f} ({backbone}'s FLOPs)"
    return ms, basis


def plan_frame(jobs: Sequence[Job], bench: Mapping[str, Any] | str, check_cache: bool = True) -> pd.DataFrame:
    """One row per job: its cost (``windows``, ``hours``, ``basis``), disk (``results_mb``, ``masks_mb``), whether
    its images are an estimate and whether the cache already holds it."""
    times, source = bench_times(bench)
    if "segearth-ov" not in times:
        raise ValueError(f"the benchmark ({source}) has no segearth-ov row; bench it first")
    rows = []
    for job in jobs:
        ctx = job_context(job)
        cfg = ctx.config(job.preset, job.dataset, **job.overrides)
        manifest = load_manifest(job.dataset)
        images = job.images  # counted when the job was listed (manifest, estimate, smoke images, limit)
        estimated = manifest.planned_images[1] and ctx.profile == "full"
        if ctx.is_smoke:
            size = (ctx.smoke_size, ctx.smoke_size)
        else:
            size = manifest.image_size or (cfg.long_side or 448, cfg.long_side or 448)
        windows = windows_per_image(size, cfg.long_side, cfg.crop, cfg.stride)
        ms, basis = _ms_per_window(job.preset, times, cfg.backbone)
        passes = 2 if job.kind == "crf" else 1  # the CRF pass adds its own cost; counted as a second pass
        n = images or 0
        h, w = size
        rows.append(
            dict(
                notebook=job.notebooks[0],
                notebooks=job.notebooks,
                preset=job.preset,
                dataset=job.dataset,
                images=images,
                images_estimated=estimated,
                windows=windows,
                hours=n * windows * ms * passes / 3.6e6,
                basis=basis,
                results_mb=len(job.results)
                * (
                    _RESULT_BYTES_BASE
                    + n * min(manifest.num_classes, _CLASSES_PER_IMAGE) ** 2 * _RESULT_BYTES_PER_ENTRY
                )
                / 1e6,
                masks_mb=n * h * w * _MASK_BYTES_PER_PIXEL * len(job.results) / 1e6,
                cached=job_done(job, ctx) if check_cache else False,
            )
        )
    frame = pd.DataFrame(rows)
    frame.attrs["source"] = source
    return frame


def plan_table(frame: pd.DataFrame, notebooks: Sequence[str] | None = None) -> pd.DataFrame:
    """Per notebook and in total: evaluations (all it reads, and those first listed by it), images, device-hours
    (of the evaluations it lists first, so the column adds up to the total), disk, cached evaluations."""
    names = list(notebooks or sorted({n for ns in frame["notebooks"] for n in ns}))

    def row(name: str, reads: pd.DataFrame, own: pd.DataFrame) -> dict[str, Any]:
        return {
            "Notebook": name,
            "Evaluations": len(reads),
            "New evaluations": len(own),
            "Images": int(own["images"].fillna(0).sum()),
            "Device-hours": own["hours"].sum(),
            "Results (MB)": own["results_mb"].sum(),
            "Masks if saved (GB)": own["masks_mb"].sum() / 1e3,
            "Cached": f"{int(reads['cached'].sum())} of {len(reads)}",
        }

    rows = [row(n, frame[[n in ns for ns in frame["notebooks"]]], frame[frame["notebook"] == n]) for n in names]
    rows.append(row("Total", frame, frame))
    table = pd.DataFrame(rows)
    table.attrs.update(frame.attrs)
    table.attrs["estimated_datasets"] = sorted(set(frame.loc[frame["images_estimated"], "dataset"]))
    return table


def plot_plan(table: pd.DataFrame, title: str = ""):
    """Horizontal bars of device-hours per notebook (the evaluations each lists first)."""
    import matplotlib.pyplot as plt

    body = table[table["Notebook"] != "Total"]
    column = next(c for c in table.columns if "hours" in c.lower())
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(body) + 1.2))
    ax.barh(body["Notebook"], body[column], color="#4c72b0")
    ax.invert_yaxis()
    ax.set_xlabel(f"{column} (evaluations first listed by the notebook)")
    for y, v in enumerate(body[column]):
        ax.text(v, y, f" {v:.1f}", va="center", fontsize=9)
    ax.set_title(title or f"Estimated cost of the study ({table.attrs.get('source', '')})", fontsize=10)
    ax.margins(x=0.15)
    fig.tight_layout()
    return fig


def format_plan(table: pd.DataFrame) -> str:
    """The plan as aligned text for the command line."""
    show = table.copy()
    show["Device-hours"] = show["Device-hours"].map(lambda v: f"{v:.2f}")
    show["Results (MB)"] = show["Results (MB)"].map(lambda v: f"{v:.1f}")
    show["Masks if saved (GB)"] = show["Masks if saved (GB)"].map(lambda v: f"{v:.2f}")
    text = show.to_string(index=False)
    notes = [f"time per window from {table.attrs.get('source', '?')}"]
    if table.attrs.get("estimated_datasets"):
        notes.append(f"image counts estimated for {', '.join(table.attrs['estimated_datasets'])} (manifest notes)")
    return text + "\n" + "; ".join(notes)


def load_bench_file(path: str | Path) -> dict[str, Any]:
    """An ``alignclip bench`` JSON result (one-line InputError otherwise)."""
    import json

    from alignclip.errors import InputError

    path = Path(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(body.get("presets"), list):
            raise ValueError("no 'presets' list")
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(
            f"--bench {path} is not an alignclip bench result ({err}); write one with `alignclip bench --out {path}`"
        ) from None
    return body


def full_study_plan(notebooks: Sequence[str] | None = None) -> pd.DataFrame:
    """The full-profile study's plan with two time columns: the paper's GPU times (Table 11) and this project's CPU
    benchmark (:func:`alignclip.study.bench.load_measured_bench`); evaluations, images and disk as :func:`plan_table`.
    """
    from alignclip.study.bench import load_measured_bench

    jobs = list_jobs(notebooks, {"profile": "full", "upsampler_ckpt": "none"})
    gpu = plan_table(plan_frame(jobs, PAPER_BENCH, check_cache=False))
    cpu = plan_table(plan_frame(jobs, load_measured_bench(), check_cache=False))
    table = gpu.drop(columns=["Cached"]).rename(columns={"Device-hours": "GPU-hours (Table 11 times)"})
    table.insert(5, "CPU-hours (2-core CPU)", cpu["Device-hours"].to_numpy())
    table.attrs.update(gpu.attrs, source="GPU: the paper's Table 11 times; CPU: this project's benchmark")
    return table
