"""Dataset evaluation: streaming confusion matrices (mmsegmentation IoUMetric semantics), resumable, multi-process.

``evaluate(...)`` segments every image of a dataset split, keeps one confusion matrix per image (so any
dataset-level metric, bootstrap included, can be recomputed later), and writes RESULT.json atomically with full
provenance. Progress is saved every ``save_every`` images in ``RESULT.json.partial/``; rerunning the same command
continues where it stopped and never counts an image twice. Under ``torchrun`` each process takes the shard of a
``DistributedSampler`` and the matrices are all-reduced (gloo on CPU, NCCL on GPU).

The loop itself is :func:`evaluate_heads`: one pass over a dataset that scores several outputs ("heads", e.g. the
plain labels and the dense-CRF labels of :func:`alignclip.evaluation.crf.evaluate_with_crf`), each with its own
RESULT.json, fingerprint and partial state. :func:`cached_result` is the one check that a RESULT.json can be reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from alignclip.data import Sample, load_manifest, manifest_sha256, open_dataset
from alignclip.errors import InputError
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.evaluation.metrics import iou_from_confusion
from alignclip.io.files import write_json
from alignclip.io.images import write_mask
from alignclip.io.provenance import code_sha256, device_description, git_commit, package_versions
from alignclip.kinds import RESULT_NOTES, kind_of
from alignclip.pipeline.config import SegmentorConfig
from alignclip.pipeline.segmentor import Prediction, Segmentor
from alignclip.version import __version__

__all__ = [
    "DistInfo",
    "Head",
    "LabelsFn",
    "build_result",
    "cached_result",
    "evaluate",
    "evaluate_heads",
    "init_distributed",
    "load_result",
    "plain_labels",
    "run_fingerprint",
    "shard_indices",
]

#: ``labels_fn(segmentor, sample, prediction) -> labels [H, W]`` of a :class:`Head`; ``prediction`` is
#: ``segmentor.predict(sample.image)`` (logits kept) when some head of the pass needs the logits, else None.
LabelsFn = Callable[[Segmentor, Sample, Prediction | None], np.ndarray]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def shard_indices(n: int, info: DistInfo) -> list[int]:
    """This process's indices of a ``DistributedSampler`` (no shuffle), without its padding repeats."""
    if info.world_size == 1:
        return list(range(n))
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank, shuffle=False)
    # the sampler pads by repeating the first indices; position rank + j * world >= n is padding
    return [i for j, i in enumerate(sampler) if info.rank + j * info.world_size < n]


def run_fingerprint(
    config: SegmentorConfig, dataset: str, split: str | None, limit: int | None, classes: tuple[str, ...]
) -> str:
    """Hash of everything that changes the numbers (a resume, and a notebook's cached run, must match it): the
    configuration, dataset, split, limit, classes, the manifest and the package's code (:func:`code_sha256`).

    ``window_batch`` is left out: it only groups windows for speed (results agree to float rounding), so a run
    may resume with another batch size or on another machine's "auto".
    """
    settings = {k: v for k, v in config.to_dict().items() if k != "window_batch"}
    blob = json.dumps(
        {
            "config": settings,
            "dataset": dataset,
            "split": split,
            "limit": limit,
            "classes": classes,
            "manifest": manifest_sha256(dataset),
            "version": __version__,
            "code": code_sha256(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plain_labels(segmentor: Segmentor, sample: Sample, prediction: Prediction | None) -> np.ndarray:
    """The segmentor's labels ``[H, W]`` of ``sample``: ``prediction.labels`` when the pass already predicted the image
    for another head, else ``segmentor.segment(sample.image)`` (bounded memory: no logits kept)."""
    return prediction.labels if prediction is not None else segmentor.segment(sample.image)


@dataclass(frozen=True)
class Head:
    """One output scored by a pass of :func:`evaluate_heads`.

    Attributes:
        out: its RESULT.json path; progress is saved in ``out.partial/`` (one folder per head).
        fingerprint: what its numbers depend on (e.g. :func:`run_fingerprint`); a partial state with another one is
            refused, and it is written as ``provenance.fingerprint`` (see :func:`cached_result`).
        labels_fn: ``(segmentor, sample, prediction) -> labels [H, W]`` (see :data:`LabelsFn`).
        provenance_extra: keys added to the result's ``provenance`` after ``fingerprint`` (JSON values).
        needs_logits: the labels need the logits: each image is then predicted once (``segmentor.predict``) and
            the prediction is given to every head; when no head needs them, ``prediction`` is None.
        save_predictions: folder for one mask PNG of this head's labels per image (class indices), or None.
    """

    out: Path
    fingerprint: str
    labels_fn: LabelsFn = plain_labels
    provenance_extra: Mapping[str, Any] = field(default_factory=dict)
    needs_logits: bool = False
    save_predictions: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.save_predictions is not None:
            object.__setattr__(self, "save_predictions", Path(self.save_predictions))

    @property
    def partial_dir(self) -> Path:
        """``out.partial/``: the saved per-rank matrices and ``meta.json`` (the fingerprint) of an unfinished run."""
        return self.out.with_name(self.out.name + ".partial")


@dataclass
class _HeadState:
    """One head's matrices in a pass: ``done`` (every rank's saved ones) and ``mine`` (this rank's, saved)."""

    head: Head
    done: ConfusionAccumulator
    mine: ConfusionAccumulator
    my_file: Path


def _load_partials(partial_dir: Path, fingerprint: str, num_classes: int) -> ConfusionAccumulator:
    done = ConfusionAccumulator(num_classes)
    meta_path = partial_dir / "meta.json"
    if not meta_path.is_file():
        return done
    meta = json.loads(meta_path.read_text())
    if meta.get("fingerprint") != fingerprint:
        raise InputError(
            f"partial results in {partial_dir} come from a different configuration or dataset; delete "
            f"that folder or rerun with --force to start over"
        )
    for f in sorted(partial_dir.glob("rank*.npz")):
        done.merge(ConfusionAccumulator.load_npz(f))
    return done


def cached_result(out: str | Path, fingerprint: str) -> dict[str, Any] | None:
    """The RESULT.json at ``out`` when it exists and its ``provenance.fingerprint`` is ``fingerprint``, else None.

    The one reuse check of a cached run (the study's runs and its +CRF runs call it); a file that exists but is
    not a RESULT.json raises :class:`~alignclip.errors.InputError` (see :func:`load_result`).
    """
    out = Path(out)
    if not out.is_file():
        return None
    result = load_result(out)
    return result if result.get("provenance", {}).get("fingerprint") == fingerprint else None


def evaluate(
    config: SegmentorConfig,
    dataset: str,
    data_root: str | Path,
    out: str | Path,
    split: str | None = None,
    limit: int | None = None,
    save_predictions: str | Path | None = None,
    force: bool = False,
    save_every: int = 20,
    progress: bool = True,
    segmentor: Segmentor | None = None,
) -> dict[str, Any]:
    """Evaluate ``config`` on a dataset and write RESULT.json (see the module docstring).

    Args:
        config: the method (e.g. ``build_config("alignclip-d", dataset="potsdam")``).
        dataset: manifest name (``alignclip data list``).
        data_root: the converted dataset root (mmsegmentation layout).
        out: RESULT.json path; an existing file is refused unless ``force``.
        split: overrides the manifest's evaluation split.
        limit: evaluate only the first ``limit`` images (in sorted order).
        save_predictions: folder for one mask PNG per image (class indices).
        force: overwrite ``out`` and discard partial results.
        save_every: images between two progress saves.
        segmentor: a ready segmentor to reuse (its classes must be the dataset's).

    Returns:
        The result dictionary written to ``out`` (on every process).
    """
    fingerprint = run_fingerprint(config, dataset, split, limit, load_manifest(dataset).classes)
    head = Head(
        Path(out), fingerprint, plain_labels, save_predictions=Path(save_predictions) if save_predictions else None
    )
    return evaluate_heads(
        config,
        dataset,
        data_root,
        [head],
        split=split,
        limit=limit,
        force=force,
        save_every=save_every,
        progress=progress,
        segmentor=segmentor,
    )[0]


def evaluate_heads(
    config: SegmentorConfig,
    dataset: str,
    data_root: str | Path,
    heads: Sequence[Head],
    split: str | None = None,
    limit: int | None = None,
    force: bool = False,
    save_every: int = 20,
    progress: bool = True,
    segmentor: Segmentor | None = None,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """Score every head on a dataset in ONE pass and write one RESULT.json per head (resumable, torchrun-aware).

    Each image is read once; when some head ``needs_logits`` it is predicted once (``segmentor.predict``) and the
    prediction goes to every head, else each head's ``labels_fn`` gets None (the plain head then calls
    ``segmentor.segment``). Progress is saved every ``save_every`` images in each head's ``out.partial/``,
    fingerprint-checked per head. On a rerun an image is skipped only when every head already has it; a head that
    lacks it (an interruption between two heads' saves) gets it recomputed, so no image is counted twice or missed.
    Under ``torchrun`` each process takes its ``DistributedSampler`` shard and the per-image matrices are gathered.

    Args:
        config: the method; every head's result records it.
        dataset: manifest name (``alignclip data list``).
        data_root: the converted dataset root (mmsegmentation layout).
        heads: the outputs, with distinct ``out`` paths; existing files are refused unless ``force``.
        split: overrides the manifest's evaluation split.
        limit: evaluate only the first ``limit`` images (in sorted order).
        force: overwrite the heads' files and discard their partial results.
        save_every: images between two progress saves.
        progress: show a progress bar.
        segmentor: a ready segmentor to reuse (its classes must be the dataset's).
        desc: the progress bar's label (default: the dataset name).

    Returns:
        The result dictionaries written, in the order of ``heads`` (on every process).
    """
    heads = list(heads)
    if not heads:
        raise InputError("evaluate_heads needs at least one Head; pass e.g. [Head(out, fingerprint)]")
    if len({h.out.resolve() for h in heads}) != len(heads):
        raise InputError(f"heads share a RESULT.json path ({[str(h.out) for h in heads]}); give each head its own out")
    for head in heads:
        if head.out.exists() and not force:
            raise InputError(f"{head.out} exists; pass --force to overwrite it, or choose another --out")
    manifest = load_manifest(dataset)
    data = open_dataset(dataset, data_root, split)
    n_total = len(data) if limit is None else min(limit, len(data))
    seg = segmentor or Segmentor(config, list(manifest.classes))
    info = init_distributed(seg.device)
    if force and info.is_main:
        for head in heads:
            if head.partial_dir.exists():
                shutil.rmtree(head.partial_dir)
    if info.world_size > 1:
        dist.barrier()
    states = []
    for head in heads:
        done = _load_partials(head.partial_dir, head.fingerprint, manifest.num_classes)
        mine = ConfusionAccumulator(manifest.num_classes)
        my_file = head.partial_dir / f"rank{info.rank}.npz"
        if my_file.is_file():  # this rank's earlier work is already inside `done`; keep saving it with the new
            mine.merge(ConfusionAccumulator.load_npz(my_file))
        states.append(_HeadState(head, done, mine, my_file))
    if info.world_size > 1:
        dist.barrier()  # every rank has read the same partial state before any rank saves new work
    if info.is_main:
        for head in heads:
            head.partial_dir.mkdir(parents=True, exist_ok=True)
            write_json(
                head.partial_dir / "meta.json", {"fingerprint": head.fingerprint, "dataset": dataset}, overwrite=True
            )
    indices = shard_indices(n_total, info)
    started = time.time()
    ids = data.image_ids
    # resumed images are skipped before being read; an image some head lacks is redone for that head only
    todo = [i for i in indices if any(ids[i] not in s.done for s in states)]
    desc = desc or dataset
    bar = tqdm(
        todo,
        desc=f"{desc} rank {info.rank}" if info.world_size > 1 else desc,
        unit="img",
        disable=not progress,
        file=sys.stderr,
    )
    since_save = 0
    for i in bar:
        lacking = [s for s in states if ids[i] not in s.done]
        sample = data[i]
        prediction = seg.predict(sample.image) if any(s.head.needs_logits for s in lacking) else None
        for s in lacking:
            labels = s.head.labels_fn(seg, sample, prediction)
            s.mine.update(labels, sample.label, sample.image_id)
            if s.head.save_predictions is not None:
                write_mask(s.head.save_predictions / f"{sample.image_id}.png", labels, overwrite=True)
        since_save += 1
        if since_save >= save_every:
            for s in states:
                s.mine.save_npz(s.my_file)
            since_save = 0
    for s in states:
        s.mine.save_npz(s.my_file)
    totals = [_gather(s.done, s.mine, info, manifest.num_classes) for s in states]
    wall = time.time() - started
    results = None
    if info.is_main:
        results = []
        for s, acc in zip(states, totals, strict=True):
            result = build_result(acc, seg, config, dataset, split, limit, wall, info.world_size)
            result["provenance"]["fingerprint"] = s.head.fingerprint
            result["provenance"].update(s.head.provenance_extra)
            write_json(s.head.out, result, overwrite=force)
            results.append(result)
        for head in heads:  # only once every head's RESULT.json is written
            shutil.rmtree(head.partial_dir, ignore_errors=True)
    if info.world_size > 1:
        holder = [results]
        dist.broadcast_object_list(holder, src=0)
        results = holder[0]
    return results


def _gather(
    done: ConfusionAccumulator, mine: ConfusionAccumulator, info: DistInfo, num_classes: int
) -> ConfusionAccumulator:
    """Merge every process's per-image matrices; the dataset matrix is also all-reduced as a cross-check.

    ``done`` holds every rank's saved matrices (the same on every rank), ``mine`` this rank's saved and new ones;
    the ``mine`` of different ranks are disjoint.
    """
    if info.world_size == 1:
        total = ConfusionAccumulator(num_classes)
        total.merge(mine)
        for image_id, cm in zip(*done.per_image(), strict=True):
            if image_id not in total:
                total.add_matrix(cm, image_id)
        return total
    new = ConfusionAccumulator(num_classes)
    ids_mine, cms_mine = mine.per_image()
    for image_id, cm in zip(ids_mine, cms_mine, strict=True):
        new.add_matrix(cm, image_id)
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, new.to_compact())
    total = ConfusionAccumulator(num_classes)
    for part in gathered:
        acc = ConfusionAccumulator.from_compact(part)
        for image_id, cm in zip(*acc.per_image(), strict=True):
            if image_id not in total:
                total.add_matrix(cm, image_id)
    resumed_only = np.zeros((num_classes, num_classes), dtype=np.int64)  # saved by a rank this run does not have
    for image_id, cm in zip(*done.per_image(), strict=True):
        if image_id not in total:
            total.add_matrix(cm, image_id)
            resumed_only += cm
    reduced = torch.from_numpy(new.total().astype(np.int64))
    dist.all_reduce(reduced)
    # every image is in exactly one process's `mine` or only in `done`, so the reduced matrices + those are the total
    check = reduced.numpy() + resumed_only
    if not np.array_equal(check, total.total()):
        raise RuntimeError("all-reduced confusion matrix differs from the gathered per-image matrices")
    return total


def build_result(
    acc: ConfusionAccumulator,
    seg: Segmentor,
    config: SegmentorConfig,
    dataset: str,
    split: str | None,
    limit: int | None,
    wall_s: float,
    world_size: int,
) -> dict[str, Any]:
    """RESULT.json content."""
    manifest = load_manifest(dataset)
    cm = acc.total()
    metrics = (
        iou_from_confusion(cm)
        if cm.sum()
        else {"miou": None, "per_class_iou": [None] * len(cm), "aacc": None, "macc": None}
    )
    kind = kind_of(seg.is_random)
    return {
        "kind": kind,
        "note": RESULT_NOTES[kind],
        "dataset": dataset,
        "split": split or manifest.split,
        "miou": metrics["miou"],
        "per_class_iou": dict(zip(manifest.classes, metrics["per_class_iou"], strict=True)),
        "aacc": metrics["aacc"],
        "macc": metrics["macc"],
        "num_images": len(acc),
        "expected_images": manifest.num_eval_images if limit is None else min(limit, manifest.num_eval_images or limit),
        "classes": list(manifest.classes),
        "confusion_matrix": cm.tolist(),
        "per_image_confusion": acc.to_compact(),
        "provenance": {
            "config": config.to_dict(),
            "limit": limit,
            "manifest": str(manifest.path.name),
            "manifest_sha256": manifest_sha256(dataset),
            "weights": seg.weights_identity(),
            "git_commit": git_commit(),
            "code_sha256": code_sha256(),
            "versions": package_versions(),
            "device": device_description(seg.device),
            "world_size": world_size,
            "wall_time_s": round(wall_s, 3),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a RESULT.json (one-line error when missing or not a result)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"result file {path} not found; create it with `alignclip evaluate ... --out {path}`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if "confusion_matrix" not in data or "kind" not in data:
        raise InputError(f"{path} is not an alignclip RESULT.json (no confusion_matrix/kind)")
    return data
