"""What the study notebooks call: profiles, cached evaluation runs, paper-vs-ours tables, claim checks, figures.

A notebook starts with :func:`start_study` (validates the parameters cell, prepares data), shows
:func:`banner`, runs :func:`evaluate_runs` (each RESULT.json is cached under ``output_dir/runs``, so rerunning a
notebook reuses finished evaluations with the same fingerprint), compares with the paper
(:func:`paper_comparison`), checks the paper's claimed gains with paired bootstraps (:func:`check_claims`), plots,
and writes its own JSON (:func:`write_notebook_results`).

Profiles: ``smoke`` (default) = tiny random CLIP, random upsampler, tiny VFM, fake data in each dataset's real
layout, CPU; every number is a *pipeline check*. ``full`` = ViT-B-16/openai, the SegEarth-OV JBU checkpoint, real
VFMs and the converted datasets under ``data_root/<dataset>``. A notebook declares what it reads with
``start_study(needs=...)`` (:data:`NEEDS`): only those parameters are required in the ``full`` profile (the cost
benchmark with random weights needs neither).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import SegmentorConfig, build_config
from .data import generate_fake_dataset, list_datasets, load_manifest
from .errors import ConfigError, DatasetNotFoundError, InputError
from .evaluate import evaluate, load_result, run_fingerprint
from .fileio import write_json
from .metrics import ConfusionAccumulator
from .paper import DATASET_KEYS, compare_with_paper
from .stats import bootstrap_miou

PROFILES = ("smoke", "full")
#: What a notebook may need in the ``full`` profile: ``data`` (``data_root`` with every dataset converted under
#: it) and ``weights`` (``upsampler_ckpt``; CLIP and VFM weights come from their own caches).
NEEDS = ("data", "weights")
RS_DATASETS = ["openearthmap", "loveda", "isaid", "potsdam", "vaihingen", "uavid", "udd5", "vdd"]
NATURAL_DATASETS = ["cityscapes", "ade20k", "coco_stuff171", "pascal_context59", "pascal_voc20"]
PAPER_NAME = {v: k for k, v in DATASET_KEYS.items()}
PIPELINE_BANNER = ("**PIPELINE CHECK — random weights.** This notebook ran in the `smoke` profile: a tiny randomly "
                   "initialised CLIP, a random JBU upsampler and a tiny random VFM on generated data. Its numbers "
                   "test that the code runs end to end; they are **not** reproduced results and say nothing about "
                   "the paper's claims.")
REAL_BANNER = ("**Real pretrained weights.** This notebook ran in the `full` profile (CLIP {clip}, upsampler "
               "{up}, VFM {vfm})")
NO_WEIGHTS_BANNER = "**Full profile, no pretrained checkpoint needed.** This notebook ran in the `full` profile"


@dataclass(frozen=True)
class Run:
    """One evaluation: a label for tables, a preset (``PRESET+sga`` ...), a dataset and config overrides."""

    label: str
    preset: str
    dataset: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyContext:
    """Validated notebook parameters."""

    profile: str
    datasets: tuple[str, ...]
    output_dir: Path
    data_root: Path | None
    device: str
    limit: int | None
    n_boot: int
    smoke_images: int
    smoke_size: int
    clip_pretrained: str
    upsampler_ckpt: str | None
    vfm_pretrained: str
    needs: tuple[str, ...] = NEEDS  # what the notebook declared it reads in the full profile (see NEEDS)

    @property
    def is_pipeline_check(self) -> bool:
        return self.profile == "smoke"

    @property
    def kind(self) -> str:
        return "pipeline-check" if self.is_pipeline_check else "reproduction"

    def config(self, preset: str, dataset: str | None = None, **overrides: Any) -> SegmentorConfig:
        """The configuration of ``preset`` on ``dataset`` in this profile."""
        if self.is_pipeline_check:
            over = dict(long_side=self.smoke_size, device=self.device)
            over.update(overrides)
            return build_config(preset, dataset=dataset, smoke=True, **over)
        if self.upsampler_ckpt is None and "upsampler_ckpt" not in overrides and overrides.get("upsampler") != "none":
            raise ConfigError(_MISSING_UPSAMPLER)  # the notebook declared needs without "weights"; none was given
        over = dict(pretrained=self.clip_pretrained, upsampler_ckpt=self.upsampler_ckpt,
                    vfm_pretrained=self.vfm_pretrained, device=self.device)
        over.update(overrides)
        return build_config(preset, dataset=dataset, **over)

    def dataset_root(self, dataset: str) -> Path:
        """Where ``dataset`` lives (generated on first use in the smoke profile)."""
        if self.is_pipeline_check:
            root = self.output_dir / "data" / f"{dataset}-{self.smoke_images}x{self.smoke_size}"
            if not (root / "alignclip_fake.json").is_file():
                generate_fake_dataset(dataset, root, n_images=self.smoke_images, size=self.smoke_size, seed=0)
            return root
        if self.data_root is None:  # the notebook declared needs without "data" and none was given
            raise DatasetNotFoundError(_MISSING_DATA_ROOT)
        return self.data_root / dataset


_MISSING_DATA_ROOT = ("profile='full' needs data_root: the folder holding one converted dataset per sub-folder (e.g. "
                      "data/potsdam); set it with `-p data_root /path/to/data` (see book/setup.md)")
_MISSING_UPSAMPLER = ("profile='full' needs upsampler_ckpt: the path of xclip_jbu_one_million_aid.ckpt (SegEarth-OV "
                      "repository); set it with `-p upsampler_ckpt /path/to/xclip_jbu_one_million_aid.ckpt`, or "
                      "`-p upsampler_ckpt none` for a random upsampler")


def start_study(profile: str = "smoke", datasets: Sequence[str] | None = None, output_dir: str | Path = "results",
                data_root: str | Path | None = None, device: str = "auto", limit: int | None = None,
                n_boot: int = 1000, smoke_images: int = 3, smoke_size: int = 96, clip_pretrained: str = "openai",
                upsampler_ckpt: str | None = None, vfm_pretrained: str = "default",
                needs: Sequence[str] = NEEDS) -> StudyContext:
    """Validate a notebook's parameters; one clear line when anything is wrong.

    Args:
        needs: what the notebook reads in the ``full`` profile, a subset of :data:`NEEDS` (default: both).
            With ``"data"``, every dataset must exist under ``data_root/<name>``; with ``"weights"``, the upsampler
            checkpoint must be given (a path, or ``"none"`` to run with a random upsampler on purpose). A notebook
            that needs neither (the cost benchmark with random weights) runs with no data_root and no checkpoint.
            The ``smoke`` profile needs nothing.
    """
    for name, value, types in (("profile", profile, str), ("datasets", datasets, (list, tuple, type(None))),
                               ("output_dir", output_dir, (str, Path)), ("data_root", data_root, (str, Path, type(None))),
                               ("device", device, str), ("limit", limit, (int, type(None))), ("n_boot", n_boot, int),
                               ("smoke_images", smoke_images, int), ("smoke_size", smoke_size, int),
                               ("upsampler_ckpt", upsampler_ckpt, (str, type(None))), ("needs", needs, (list, tuple))):
        if not isinstance(value, types) or isinstance(value, bool):
            expected = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise ConfigError(f"parameter {name}={value!r} has the wrong type; expected {expected}")
    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r} is not valid; choose one of {', '.join(PROFILES)}")
    unknown_needs = [n for n in needs if n not in NEEDS]
    if unknown_needs:
        raise ConfigError(f"needs={tuple(needs)!r}: unknown {', '.join(map(repr, unknown_needs))}; choose from "
                          f"{', '.join(NEEDS)} (or none)")
    needs = tuple(n for n in NEEDS if n in needs)
    datasets = tuple(RS_DATASETS if datasets is None else datasets)
    known = set(list_datasets())
    bad = [d for d in datasets if d not in known]
    if bad:
        raise ConfigError(f"unknown dataset(s) {', '.join(bad)}; choose from {', '.join(sorted(known))}")
    limit = None if limit in (None, 0) else limit  # notebooks use 0 for "all images"
    upsampler_ckpt = upsampler_ckpt or None
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"limit={limit} must be a positive number of images, or 0 for all")
    root = Path(data_root) if data_root else None
    if profile == "full" and "data" in needs:
        if root is None:
            raise DatasetNotFoundError(_MISSING_DATA_ROOT)
        missing = [d for d in datasets if not (root / d).is_dir()]
        if missing:
            m = load_manifest(missing[0])
            raise DatasetNotFoundError(f"dataset folder {root / missing[0]} not found (missing: {', '.join(missing)});"
                                       f" convert it with `alignclip data prepare {missing[0]} --raw DIR --out "
                                       f"{root / missing[0]}` (manifest {m.path.name})")
    if profile == "full" and "weights" in needs and upsampler_ckpt is None:
        raise ConfigError(_MISSING_UPSAMPLER)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if profile == "smoke":
        torch.set_num_threads(1)  # tiny models: one thread is several times faster, and results are identical
    return StudyContext(profile, datasets, out, root, device, None if limit is None else int(limit), int(n_boot),
                        int(smoke_images), int(smoke_size), clip_pretrained, upsampler_ckpt, vfm_pretrained, needs)


def banner(ctx: StudyContext):
    """A visible Markdown box saying whether the numbers below are real or pipeline checks."""
    from IPython.display import Markdown

    if ctx.is_pipeline_check:
        text = PIPELINE_BANNER
    else:
        text = (REAL_BANNER.format(clip=ctx.clip_pretrained, up=ctx.upsampler_ckpt, vfm=ctx.vfm_pretrained)
                if "weights" in ctx.needs else NO_WEIGHTS_BANNER)
        text += f" on the converted datasets under `{ctx.data_root}`." if "data" in ctx.needs else "; it reads no dataset."
    return Markdown(f"> {text}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


def result_path(ctx: StudyContext, run: Run) -> Path:
    return ctx.output_dir / "runs" / _slug(run.label) / f"{run.dataset}.json"


def evaluate_runs(ctx: StudyContext, runs: Sequence[Run], progress: bool | None = None) -> pd.DataFrame:
    """Evaluate every run (reusing cached RESULT.json files with the same fingerprint).

    Returns:
        One row per run: ``label, preset, dataset, miou, ci_low, ci_high, n_images, kind, path`` (the interval
        is the 95 % percentile bootstrap over images).
    """
    configs = [ctx.config(run.preset, run.dataset, **run.overrides) for run in runs]  # every error before any run
    rows = []
    progress = (not ctx.is_pipeline_check) if progress is None else progress  # no bar lines in smoke notebooks
    for run, cfg in tqdm(list(zip(runs, configs, strict=True)), desc="evaluations", disable=not progress):
        manifest = load_manifest(run.dataset)
        out = result_path(ctx, run)
        fingerprint = run_fingerprint(cfg, run.dataset, None, ctx.limit, manifest.classes)
        result = None
        if out.is_file():
            cached = load_result(out)
            if cached.get("provenance", {}).get("fingerprint") == fingerprint:
                result = cached
        if result is None:
            result = evaluate(cfg, run.dataset, ctx.dataset_root(run.dataset), out, limit=ctx.limit,
                              force=True, progress=False)
        acc = ConfusionAccumulator.from_compact(result["per_image_confusion"])
        ci = bootstrap_miou(acc.per_image()[1], n_boot=ctx.n_boot, seed=0)
        rows.append(dict(label=run.label, preset=run.preset, dataset=run.dataset, miou=result["miou"],
                         ci_low=ci["ci_low"], ci_high=ci["ci_high"], n_images=result["num_images"],
                         kind=result["kind"], path=str(out)))
    return pd.DataFrame(rows)


def paper_comparison(results: pd.DataFrame, table: str, method_map: dict[str, str],
                     variant: str | float | None = None) -> pd.DataFrame:
    """Paper vs ours for every label of ``results`` mapped to a paper row (``{our label: paper method}``)."""
    frames = []
    for label, paper_method in method_map.items():
        sub = results[results["label"] == label]
        if sub.empty:
            continue
        kinds = set(sub["kind"])
        kind = "reproduction" if kinds == {"reproduction"} else "pipeline-check"
        ours = {PAPER_NAME.get(d, d): float(m) for d, m in zip(sub["dataset"], sub["miou"], strict=True)}
        cmp = compare_with_paper(ours, table=table, method=paper_method, kind=kind, variant=variant)
        ci = {PAPER_NAME.get(d, d): (lo, hi) for d, lo, hi in zip(sub["dataset"], sub["ci_low"], sub["ci_high"],
                                                                  strict=True)}
        cmp["ci_low"] = [ci.get(d, (None, None))[0] for d in cmp["dataset"]]
        cmp["ci_high"] = [ci.get(d, (None, None))[1] for d in cmp["dataset"]]
        cmp.insert(0, "method", label)
        frames.append(cmp)
    if not frames:
        raise InputError(f"none of {list(method_map)} is in the results ({sorted(set(results['label']))})")
    return pd.concat(frames, ignore_index=True)


def check_claims(results: pd.DataFrame, claims: Sequence[tuple[str, str]], n_boot: int = 1000) -> pd.DataFrame:
    """Paired bootstrap of each claimed gain ``(baseline label, improved label)`` on every shared dataset.

    The verdict is "supported" (95 % interval of the gain above 0), "contradicted" (below 0) or "not
    distinguishable from zero"; pipeline-check runs get "pipeline check" instead, whatever their numbers.
    Computed by :func:`alignclip.gains.claim_rows` (the one implementation of paired per-image gains).
    """
    from .gains import claim_rows  # gains builds on this module: imported here, not at the top

    return claim_rows(results, claims, n_boot)


def plot_paper_vs_ours(comparison: pd.DataFrame, title: str = ""):
    """Grouped bars: paper vs ours per dataset (and method), ours with its 95 % bootstrap interval."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = comparison[comparison["dataset"] != "Avg."]
    methods = list(dict.fromkeys(df["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(max(5.0, 3.2 * len(df["dataset"].unique()) / 2) ,
                                                        3.6), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods, strict=True):
        sub = df[df["method"] == method]
        long = sub.melt(id_vars=["dataset"], value_vars=["paper", "ours"], var_name="source", value_name="mIoU")
        sns.barplot(data=long, x="dataset", y="mIoU", hue="source", ax=ax, palette=["#9e9e9e", "#1f77b4"])
        xs = range(len(sub))
        lo = (sub["ours"] - sub["ci_low"].astype(float)).clip(lower=0)
        hi = (sub["ci_high"].astype(float) - sub["ours"]).clip(lower=0)
        ax.errorbar([x + 0.2 for x in xs], sub["ours"], yerr=[lo, hi], fmt="none", ecolor="black", capsize=3)
        ax.set_title(method)
        ax.set_xticks(list(xs), list(sub["dataset"]), rotation=40, ha="right")
        ax.set_xlabel("")
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    kind = set(df["kind"])
    suffix = " — PIPELINE CHECK (random weights)" if kind != {"reproduction"} else ""
    fig.suptitle((title or "paper vs ours") + suffix)
    fig.legend(handles, labels, loc="upper right", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def grid_runs(presets: Sequence[str], datasets: Sequence[str], overrides: dict[str, Any] | None = None,
              label: str | None = None) -> list[Run]:
    """Every preset on every dataset (labels = preset names unless ``label`` is given)."""
    return [Run(label or p, p, d, dict(overrides or {})) for p in presets for d in datasets]


#: Our preset → the paper's row name in Table 2.
PRESET_TO_PAPER = {"clip": "CLIP", "maskclip": "MaskCLIP", "sclip": "SCLIP", "clearclip": "ClearCLIP",
                   "naclip": "NACLIP", "segearth-ov": "SegEarth-OV", "alignclip-d": "AlignCLIP-D",
                   "alignclip-s": "AlignCLIP-S"}


def main_table(results: pd.DataFrame, table: str = "table2_main",
               label_to_paper: dict[str, str] | None = None) -> pd.DataFrame:
    """Wide table in the paper's row order: ``paper`` and ``ours`` mIoU per dataset and average.

    Paper rows with no run of ours keep the paper's numbers, marked ``reported only``.
    """
    from .paper import load_table

    label_to_paper = label_to_paper or PRESET_TO_PAPER
    paper_to_label = {v: k for k, v in label_to_paper.items()}
    paper = load_table(table)
    datasets = [c for c in paper.columns if c in DATASET_KEYS]
    rows = []
    for _, prow in paper.iterrows():
        method = prow["method"]
        label = paper_to_label.get(method)
        sub = results[results["label"] == label] if label else results.iloc[0:0]
        ours = {PAPER_NAME.get(d, d): m for d, m in zip(sub["dataset"], sub["miou"], strict=True)}
        status = ("reported only" if sub.empty else
                  ("reproduction" if set(sub["kind"]) == {"reproduction"} else "pipeline check"))
        for source in ("paper", "ours"):
            if source == "ours" and sub.empty:
                continue
            values = {d: (float(prow[d]) if source == "paper" else ours.get(d)) for d in datasets}
            present = [v for v in values.values() if v is not None]
            values["Avg"] = (float(prow["Avg"]) if source == "paper" else
                             (sum(present) / len(present) if len(present) == len(datasets) else None))
            rows.append({"method": method, "source": source, "status": status, **values})
    return pd.DataFrame(rows)


def summary_lines(results: pd.DataFrame, digits: int = 2) -> str:
    """Deterministic text of every run's mIoU (for the notebooks' regression-checked cells)."""
    lines = []
    for _, r in results.sort_values(["label", "dataset"]).iterrows():
        lines.append(f"{r['label']:<24s} {r['dataset']:<18s} mIoU {r['miou']:.{digits}f} "
                     f"[{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}] n={r['n_images']} {r['kind']}")
    return "\n".join(lines)


def write_notebook_results(ctx: StudyContext, name: str, payload: dict[str, Any]) -> Path:
    """Write ``output_dir/<name>.json`` atomically with the profile and kind stamped in."""
    def _records(obj: Any) -> Any:
        return obj.to_dict(orient="records") if isinstance(obj, pd.DataFrame) else obj

    body = {"notebook": name, "profile": ctx.profile, "kind": ctx.kind,
            **{k: _records(v) for k, v in payload.items()}}
    return write_json(ctx.output_dir / f"{name}.json", json.loads(json.dumps(body, default=str)), overwrite=True)
