"""The study as jobs: every evaluation the notebooks run, listed without running them, and run in shards.

``alignclip study jobs [NOTEBOOK ...] --out jobs.jsonl`` lists each notebook's evaluations (:data:`NOTEBOOK_RUNS`:
the same run builders the notebook calls, with the notebook's parameters: its defaults and ``-p`` overrides), one
:class:`Job` per distinct evaluation (a run shared by several notebooks, e.g. AlignCLIP-D in Tables 2, 3 and 7-9, is
one job naming all of them). ``alignclip study run-jobs jobs.jsonl --shard I/N`` runs the jobs ``i`` with
``i % N == I - 1`` (on any machine sharing the output folder): each writes its RESULT.json atomically into the
study's runs cache (:mod:`alignclip.study.runs`), a job already done is skipped, an interrupted one resumes. Under
``torchrun`` every rank runs every job of the shard together (:func:`alignclip.evaluation.evaluate.evaluate` splits
the images across ranks). ``alignclip notebook run-all --cache-only`` then renders the notebooks from the cache.

Notebooks 00, 01, 02, 09 and 11 compute in the notebook itself (the audit, feature statistics, the benchmark,
qualitative panels): they have no jobs and run with ``run-all`` as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm  # text bars on stderr (tqdm.auto warns in notebooks without ipywidgets)

from alignclip.data import load_manifest
from alignclip.errors import ConfigError, InputError
from alignclip.evaluation.crf import crf_fingerprint
from alignclip.io.files import atomic_write
from alignclip.ops.crf import check_crf_params
from alignclip.paper.names import TABLE3_ROWS
from alignclip.study.backbones import study_runs
from alignclip.study.context import StudyContext, start_study
from alignclip.study.crf import crf_pair, crf_paths
from alignclip.study.decisions import decision_runs, select_decisions
from alignclip.study.notebooks import list_notebooks, notebook_parameters, notebook_path, resolve_parameters
from alignclip.study.runs import Run, grid_runs, result_path, run_fingerprint_of, run_result, switch_runs
from alignclip.study.sweeps import plugin_runs, smoke_threads, sweep_runs

__all__ = [
    "JOBS_FORMAT",
    "NOTEBOOK_RUNS",
    "Job",
    "check_current",
    "job_context",
    "job_done",
    "list_jobs",
    "notebook_jobs",
    "parse_shard",
    "read_jobs",
    "run_jobs",
    "shard_jobs",
    "study_context",
    "write_jobs",
]

JOBS_FORMAT = "alignclip-jobs/1"

#: The parameters of :func:`~alignclip.study.context.start_study` a notebook passes through when it declares them.
_CONTEXT_KEYS = (
    "profile",
    "datasets",
    "output_dir",
    "data_root",
    "device",
    "limit",
    "n_boot",
    "smoke_images",
    "smoke_size",
    "clip_pretrained",
    "upsampler_ckpt",
    "vfm_pretrained",
)
_CRF_KEYS = ("n_iter", "sxy_gaussian", "compat_gaussian", "sxy_bilateral", "srgb", "compat_bilateral")


@dataclass(frozen=True)
class CrfRun:
    """Notebook 10's unit of work: ``preset`` with and without dense CRF on ``dataset`` (one pass)."""

    preset: str
    dataset: str
    params: dict[str, Any]


def _runs_05(ctx: StudyContext, p: Mapping[str, Any]) -> list[Run]:
    sweeps = (("alpha", "alphas"), ("beta", "betas"), ("n_clusters", "clusters"))
    return [run for param, key in sweeps for run in sweep_runs(ctx, p["variants"], param, p[key])]


def _runs_10(ctx: StudyContext, p: Mapping[str, Any]) -> list[CrfRun]:
    params = check_crf_params({k: p[k] for k in _CRF_KEYS if k in p})
    return [CrfRun(p["preset"], d, params) for d in ctx.datasets]


#: ``{notebook: (ctx, parameters) -> runs}``: what each evaluating notebook evaluates, built by the functions its
#: cells call (``tests/test_jobs.py`` renders each notebook from the jobs' cache alone, so a notebook that
#: evaluates anything else fails there).
NOTEBOOK_RUNS: dict[str, Callable[[StudyContext, Mapping[str, Any]], Sequence[Run | CrfRun]]] = {
    "03_main_table": lambda ctx, p: grid_runs(p["methods"], ctx.datasets),
    "04_component_ablation": lambda ctx, p: grid_runs(list(TABLE3_ROWS), ctx.datasets),
    "05_sensitivity": _runs_05,
    "06_top_n_prototypes": lambda ctx, p: sweep_runs(ctx, [p["preset"]], "top_n", p["top_ns"]),
    "07_natural_image_negatives": lambda ctx, p: switch_runs(
        list(p["bases"]) + list(p["extra_bases"]), ctx.datasets, "sga", {"alpha": p["alpha"]}
    ),
    "08_sga_plugin": lambda ctx, p: plugin_runs(ctx, list(p["methods"]) + list(p["extra_methods"]), p["sga_alpha"]),
    "10_dense_crf": _runs_10,
    "12_decisions": lambda ctx, p: decision_runs(ctx, select_decisions(p["decisions"] or None, ctx.is_smoke)),
    "13_backbones": lambda ctx, p: study_runs(ctx, p["backbones"] or None, p["backbone_weights"], p["vfms"] or None),
}


@dataclass(frozen=True)
class Job:
    """One evaluation of the study (a line of ``jobs.jsonl``).

    Attributes:
        key: the job's identity (kind, fingerprints and context): equal keys are the same evaluation.
        kind: ``"eval"`` (one RESULT.json) or ``"crf"`` (a method with and without dense CRF, two files, one pass).
        preset, dataset, overrides: what is evaluated (``PRESET+sga`` ..., config overrides).
        fingerprint: the run's :func:`~alignclip.evaluation.evaluate.run_fingerprint` (configuration, dataset,
            limit, classes, code): a job listed before a code change is refused after it.
        context: the :func:`~alignclip.study.context.start_study` parameters it runs under (profile, output folder,
            data root, limit, smoke sizes, weights).
        notebooks, labels: the notebooks that read it and the labels they give it.
        images: the images it evaluates (the manifest's count, or the smoke profile's), None when not known.
        crf: the CRF parameters of a ``"crf"`` job.
        results: the cached files it writes, relative to the context's ``output_dir``.
    """

    key: str
    kind: str
    preset: str
    dataset: str
    overrides: dict[str, Any]
    fingerprint: str
    context: dict[str, Any]
    notebooks: tuple[str, ...]
    labels: tuple[str, ...]
    images: int | None
    crf: dict[str, Any] | None = None
    results: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.update(notebooks=list(self.notebooks), labels=list(self.labels), results=list(self.results))
        return {"format": JOBS_FORMAT, **body}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Job:
        names = set(cls.__dataclass_fields__)
        fields_ = {k: v for k, v in body.items() if k in names}
        for k in ("notebooks", "labels", "results"):
            fields_[k] = tuple(fields_.get(k, ()))
        return cls(**fields_)


def study_context(params: Mapping[str, Any], device: str | None = None) -> StudyContext:
    """The study context of a notebook's parameters (only those :func:`start_study` takes), without its data checks:
    jobs are listed before the data are converted; running a job reads the data and fails in one line if absent."""
    kwargs = {k: params[k] for k in _CONTEXT_KEYS if k in params}
    if device is not None:
        kwargs["device"] = device
    return start_study(**kwargs, needs=("weights",) if kwargs.get("upsampler_ckpt") else ())


def _images(ctx: StudyContext, dataset: str) -> int | None:
    if ctx.is_smoke:
        n = ctx.smoke_images
    else:
        n = load_manifest(dataset).planned_images[0]
    if n is None:
        return ctx.limit
    return n if ctx.limit is None else min(n, ctx.limit)


def _key(kind: str, fingerprint: str, crf: Mapping[str, Any] | None, context: Mapping[str, Any]) -> str:
    where = {k: context.get(k) for k in ("profile", "output_dir", "data_root", "smoke_images", "smoke_size")}
    blob = json.dumps([kind, fingerprint, crf, where], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def notebook_jobs(name: str, params: Mapping[str, Any] | None = None) -> list[Job]:
    """The jobs of one notebook with its parameters (defaults, then ``params``; an empty list for a notebook that
    evaluates nothing through the runs cache)."""
    stem = notebook_path(name).stem
    if stem not in NOTEBOOK_RUNS:
        return []
    values = resolve_parameters(stem, params)
    ctx = study_context(values)
    context = {k: values[k] for k in _CONTEXT_KEYS if k in values}
    # the resolved profile settings, whether the notebook declares them or not (03 runs on the default smoke data)
    context.update(datasets=list(ctx.datasets), smoke_images=ctx.smoke_images, smoke_size=ctx.smoke_size)
    jobs = []
    for run in NOTEBOOK_RUNS[stem](ctx, values):
        if isinstance(run, CrfRun):
            fp = run_fingerprint_of(ctx, Run(run.preset, run.preset, run.dataset))
            paths = crf_paths(ctx, run.preset, run.dataset, fp, run.params)
            kind, preset, overrides, crf, label = "crf", run.preset, {}, dict(run.params), run.preset
        else:
            fp = run_fingerprint_of(ctx, run)
            paths = (result_path(ctx, run, fp),)
            kind, preset, overrides, crf, label = "eval", run.preset, dict(run.overrides), None, run.label
        jobs.append(
            Job(
                key=_key(kind, fp, crf, context),
                kind=kind,
                preset=preset,
                dataset=run.dataset,
                overrides=overrides,
                fingerprint=fp,
                context=context,
                notebooks=(stem,),
                labels=(label,),
                images=_images(ctx, run.dataset),
                crf=crf,
                results=tuple(str(p.relative_to(ctx.output_dir)) for p in paths),
            )
        )
    return jobs


def list_jobs(notebooks: Sequence[str] | None = None, params: Mapping[str, Any] | None = None) -> list[Job]:
    """Every job of ``notebooks`` (default: all), deduplicated in first-seen order; ``params`` apply to the
    notebooks that declare them (as ``alignclip notebook run-all -p``)."""
    names = [notebook_path(n).stem for n in (notebooks or list_notebooks())]
    params = dict(params or {})
    used: set[str] = set()
    merged: dict[str, Job] = {}
    for name in names:
        declared = notebook_parameters(notebook_path(name))
        mine = {k: v for k, v in params.items() if k in declared}
        used.update(mine)
        for job in notebook_jobs(name, mine):
            old = merged.get(job.key)
            if old is None:
                merged[job.key] = job
                continue
            merged[job.key] = Job(
                **{
                    **asdict(old),
                    "notebooks": tuple(dict.fromkeys(old.notebooks + job.notebooks)),
                    "labels": tuple(dict.fromkeys(old.labels + job.labels)),
                    "results": old.results,
                }
            )
    unused = sorted(set(params) - used)
    if unused:
        raise ConfigError(f"parameter(s) {', '.join(unused)} declared by none of the notebooks {', '.join(names)}")
    return list(merged.values())


def write_jobs(jobs: Iterable[Job], path: str | Path, force: bool = False) -> Path:
    """Write ``jobs.jsonl`` atomically (an existing file only with ``force``)."""
    text = "".join(json.dumps(job.to_json(), sort_keys=True, default=str) + "\n" for job in jobs)
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=force)


def read_jobs(path: str | Path) -> list[Job]:
    """The jobs of a ``jobs.jsonl`` file (one-line InputError for a missing or malformed file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"jobs file {path} not found; write it with `alignclip study jobs --out {path}`")
    jobs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
            if body.get("format") != JOBS_FORMAT:
                raise ValueError(f"format {body.get('format')!r}, expected {JOBS_FORMAT}")
            jobs.append(Job.from_json(body))
        except (ValueError, TypeError, AttributeError) as err:
            raise InputError(
                f"{path} line {n} is not a job ({err}); write the file anew with `alignclip study jobs`"
            ) from None
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 1 <= I <= N (one-line ConfigError otherwise)."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r} must be I/N, e.g. 1/4 (the first of four shards)") from None
    if not 1 <= i <= n:
        raise ConfigError(
            f"--shard {text!r}: I must be between 1 and N (e.g. 1/{max(n, 1)} to {max(n, 1)}/{max(n, 1)})"
        )
    return i, n


def shard_jobs(jobs: Sequence[Job], shard: int, shards: int) -> list[Job]:
    """The jobs of shard ``shard`` of ``shards`` (1-based): every ``shards``-th job, so costly notebooks spread."""
    return [job for i, job in enumerate(jobs) if i % shards == shard - 1]


_CONTEXTS: dict[str, StudyContext] = {}


def job_context(job: Job, device: str | None = None) -> StudyContext:
    """The job's study context, built once per distinct context and device (jobs share a handful)."""
    key = json.dumps([job.context, device], sort_keys=True, default=str)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = study_context(job.context, device)
    return _CONTEXTS[key]


def _fingerprints(job: Job) -> list[str]:
    return [job.fingerprint] if job.kind == "eval" else [job.fingerprint, crf_fingerprint(job.fingerprint, job.crf)]


def job_done(job: Job, ctx: StudyContext | None = None, check_data: bool = False) -> bool:
    """Whether every result file of the job is cached under its fingerprint; with ``check_data``, also for the data
    now under the study's data root (as the notebooks check; it reads the data's file list)."""
    from alignclip.evaluation.evaluate import cached_result
    from alignclip.study.runs import study_data_fingerprint

    ctx = ctx or job_context(job, None)
    data_fp = study_data_fingerprint(job.dataset, ctx.dataset_root(job.dataset), ctx.limit) if check_data else None
    return all(
        cached_result(ctx.output_dir / rel, fp, data_fp) is not None
        for rel, fp in zip(job.results, _fingerprints(job), strict=True)
    )


def check_current(jobs: Sequence[Job], device: str | None = None) -> None:
    """One-line ConfigError, before any work, when a job's fingerprint is not what this code and configuration give
    (the package, a manifest or the jobs file changed since the jobs were listed)."""
    stale = []
    for job in jobs:
        ctx = job_context(job, device)
        fp = run_fingerprint_of(ctx, Run(job.preset, job.preset, job.dataset, dict(job.overrides)))
        if fp != job.fingerprint:
            stale.append((job, fp))
    if stale:
        job, fp = stale[0]
        raise ConfigError(
            f"{len(stale)} of {len(jobs)} jobs were listed under other code or settings (first: {job.preset} on "
            f"{job.dataset}, listed as {job.fingerprint}, now {fp}); list the jobs anew with `alignclip study jobs`"
        )


def run_jobs(
    jobs: Sequence[Job], device: str | None = None, progress: bool = True, stop_on_error: bool = False
) -> dict[str, int]:
    """Run the jobs one after the other (each resumable; results cached atomically; done ones skipped).

    Returns:
        ``{"done": n, "skipped": n, "failed": n}``; a failing job is reported on stderr and the others go on
        (``stop_on_error`` raises instead).
    """
    import sys

    from alignclip.errors import AlignCLIPError

    check_current(jobs, device)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    for job in tqdm(list(jobs), desc="jobs", disable=not progress):
        ctx = job_context(job, device)
        try:
            if job_done(job, ctx, check_data=True):
                counts["skipped"] += 1
                continue
            with smoke_threads(ctx):
                if job.kind == "crf":
                    crf_pair(ctx, job.preset, job.dataset, dict(job.crf or {}))
                else:
                    run = Run(job.labels[0], job.preset, job.dataset, dict(job.overrides))
                    run_result(ctx, run)
            counts["done"] += 1
        except AlignCLIPError as err:
            if stop_on_error:
                raise
            counts["failed"] += 1
            print(f"job {job.key} ({job.preset} on {job.dataset}) failed: {err}", file=sys.stderr, flush=True)
    return counts


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of a ``torchrun`` launch (0, 1 otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)
