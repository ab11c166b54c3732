"""Dataset evaluation: streaming confusion matrices (mmsegmentation IoUMetric semantics), resumable, multi-process.

``evaluate(...)`` segments every image of a dataset split, keeps one confusion matrix per image (so any
dataset-level metric, bootstrap included, can be recomputed later), and writes RESULT.json atomically with full
provenance. Progress is saved every ``save_every`` images in ``RESULT.json.partial/``; rerunning the same command
continues where it stopped and never counts an image twice. Under ``torchrun`` each process takes the shard of a
``DistributedSampler`` and the matrices are all-reduced (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from alignclip.data import load_manifest, manifest_sha256, open_dataset
from alignclip.errors import InputError
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.evaluation.metrics import iou_from_confusion
from alignclip.io.files import write_json
from alignclip.io.images import write_mask
from alignclip.io.provenance import code_sha256, device_description, git_commit, package_versions
from alignclip.pipeline.config import SegmentorConfig
from alignclip.pipeline.segmentor import Segmentor
from alignclip.version import __version__

KIND_REPRODUCTION = "reproduction"
KIND_PIPELINE = "pipeline-check"


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


def run_fingerprint(config: SegmentorConfig, dataset: str, split: str | None, limit: int | None,
                    classes: tuple[str, ...]) -> str:
    """Hash of everything that changes the numbers (a resume, and a notebook's cached run, must match it): the
    configuration, dataset, split, limit, classes, the manifest and the package's code (:func:`code_sha256`).

    ``window_batch`` is left out: it only groups windows for speed (results agree to float rounding), so a run
    may resume with another batch size or on another machine's "auto".
    """
    settings = {k: v for k, v in config.to_dict().items() if k != "window_batch"}
    blob = json.dumps({"config": settings, "dataset": dataset, "split": split, "limit": limit,
                       "classes": classes, "manifest": manifest_sha256(dataset), "version": __version__,
                       "code": code_sha256()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_partials(partial_dir: Path, fingerprint: str, num_classes: int) -> ConfusionAccumulator:
    done = ConfusionAccumulator(num_classes)
    meta_path = partial_dir / "meta.json"
    if not meta_path.is_file():
        return done
    meta = json.loads(meta_path.read_text())
    if meta.get("fingerprint") != fingerprint:
        raise InputError(f"partial results in {partial_dir} come from a different configuration or dataset; delete "
                         f"that folder or rerun with --force to start over")
    for f in sorted(partial_dir.glob("rank*.npz")):
        done.merge(ConfusionAccumulator.load_npz(f))
    return done


def evaluate(config: SegmentorConfig, dataset: str, data_root: str | Path, out: str | Path,
             split: str | None = None, limit: int | None = None, save_predictions: str | Path | None = None,
             force: bool = False, save_every: int = 20, progress: bool = True,
             segmentor: Segmentor | None = None) -> dict[str, Any]:
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
    out = Path(out)
    if out.exists() and not force:
        raise InputError(f"{out} exists; pass --force to overwrite it, or choose another --out")
    manifest = load_manifest(dataset)
    data = open_dataset(dataset, data_root, split)
    n_total = len(data) if limit is None else min(limit, len(data))
    seg = segmentor or Segmentor(config, list(manifest.classes))
    info = init_distributed(seg.device)
    fingerprint = run_fingerprint(config, dataset, split, limit, manifest.classes)
    partial_dir = out.with_name(out.name + ".partial")
    if force and info.is_main and partial_dir.exists():
        shutil.rmtree(partial_dir)
    if info.world_size > 1:
        dist.barrier()
    done = _load_partials(partial_dir, fingerprint, manifest.num_classes)
    mine = ConfusionAccumulator(manifest.num_classes)
    my_file = partial_dir / f"rank{info.rank}.npz"
    if my_file.is_file():  # this rank's earlier work is already inside `done`; keep saving it with the new
        mine.merge(ConfusionAccumulator.load_npz(my_file))
    if info.is_main:
        partial_dir.mkdir(parents=True, exist_ok=True)
        write_json(partial_dir / "meta.json", {"fingerprint": fingerprint, "dataset": dataset}, overwrite=True)
    indices = shard_indices(n_total, info)
    started = time.time()
    pred_dir = Path(save_predictions) if save_predictions else None
    ids = data.image_ids
    todo = [i for i in indices if ids[i] not in done]  # resumed images are skipped before being read
    bar = tqdm(todo, desc=f"{dataset} rank {info.rank}" if info.world_size > 1 else dataset, unit="img",
               disable=not progress, file=sys.stderr)
    since_save = 0
    for i in bar:
        sample = data[i]
        labels = seg.segment(sample.image)
        mine.update(labels, sample.label, sample.image_id)
        if pred_dir is not None:
            write_mask(pred_dir / f"{sample.image_id}.png", labels, overwrite=True)
        since_save += 1
        if since_save >= save_every:
            mine.save_npz(my_file)
            since_save = 0
    mine.save_npz(my_file)
    result_acc = _gather(done, mine, info, manifest.num_classes)
    wall = time.time() - started
    result = None
    if info.is_main:
        result = build_result(result_acc, seg, config, dataset, split, limit, wall, info.world_size)
        result["provenance"]["fingerprint"] = fingerprint
        write_json(out, result, overwrite=force)
        shutil.rmtree(partial_dir, ignore_errors=True)
    if info.world_size > 1:
        holder = [result]
        dist.broadcast_object_list(holder, src=0)
        result = holder[0]
    return result


def _gather(done: ConfusionAccumulator, mine: ConfusionAccumulator, info: DistInfo,
            num_classes: int) -> ConfusionAccumulator:
    """Merge every process's per-image matrices; the dataset matrix is also all-reduced as a cross-check."""
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
    for image_id, cm in zip(*done.per_image(), strict=True):
        if image_id not in total:
            total.add_matrix(cm, image_id)
    reduced = torch.from_numpy(new.total().astype(np.int64))
    dist.all_reduce(reduced)
    # every image was seen by exactly one process, so the reduced new matrices + the resumed ones are the total
    check = reduced.numpy() + (done.total() if len(done) else 0)
    if not np.array_equal(check, total.total()):
        raise RuntimeError("all-reduced confusion matrix differs from the gathered per-image matrices")
    return total


def build_result(acc: ConfusionAccumulator, seg: Segmentor, config: SegmentorConfig, dataset: str,
                 split: str | None, limit: int | None, wall_s: float, world_size: int) -> dict[str, Any]:
    """RESULT.json content."""
    manifest = load_manifest(dataset)
    cm = acc.total()
    metrics = iou_from_confusion(cm) if cm.sum() else {"miou": None, "per_class_iou": [None] * len(cm),
                                                        "aacc": None, "macc": None}
    kind = KIND_PIPELINE if seg.is_random else KIND_REPRODUCTION
    return {
        "kind": kind,
        "note": ("pipeline check on random weights: tests the code path, not a reproduction of the paper"
                 if kind == KIND_PIPELINE else "evaluated with pretrained weights"),
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
