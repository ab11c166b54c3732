"""Dataset evaluation: streaming confusion matrices (mmsegmentation IoUMetric semantics), resumable, multi-process.

``evaluate(...)`` segments every image of a dataset split, keeps one confusion matrix per image (so any
dataset-level metric, bootstrap included, can be recomputed later), and writes RESULT.json atomically with full
provenance. Progress is saved every ``save_every`` images and at least every ``save_seconds`` seconds in
``RESULT.json.partial/``, and again on any exception or SIGINT/SIGTERM; rerunning the same command continues where
it stopped and never counts an image twice. Under ``torchrun`` each process takes the shard of a
``DistributedSampler`` and the matrices are all-reduced (gloo on CPU, NCCL on GPU).

The loop itself is :func:`evaluate_heads`: one pass over a dataset that scores several outputs ("heads", e.g. the
plain labels and the dense-CRF labels of :func:`alignclip.evaluation.crf.evaluate_with_crf`), each with its own
RESULT.json, fingerprint and partial state. :func:`cached_result` is the one check that a RESULT.json can be reused.

The partial state ``OUT.partial/`` of a head holds:

- ``lock.json``: the running evaluation (pid, host, job), created with ``O_EXCL``; a second evaluation of the same
  ``OUT`` is refused while its owner runs (the ranks of one torchrun job share it: rank 0 takes it). A lock whose
  pid no longer runs on this host, or (other hosts) that was not refreshed for :data:`LOCK_STALE_S`, is taken over
  with a warning. ``--force`` never breaks a live lock.
- ``meta.json``: the run fingerprint and the data fingerprint (:func:`alignclip.data.dataset_fingerprint`).
- ``rank<r>.npz`` (per-image matrices, :meth:`ConfusionAccumulator.save_npz`) and its sidecar ``rank<r>.json``: the
  run fingerprint the matrices were computed under and each image's :func:`alignclip.data.sample_fingerprint`.
  The sidecar is written first (a superset of the images), then the npz, both atomically, so a kill between the
  two leaves a consistent pair. A shard with another fingerprint, or none, is refused (never adopted); a saved
  image whose file or label changed since is refused by name.

Predictions (``Head.save_predictions``) go to a folder outside the dataset root that holds none of the files the
run would write, unless the folder's marker ``.alignclip-predictions.json`` names this run's fingerprint (a resume,
or a rerun of the same configuration, rewrites its own masks) or ``force`` is given; a folder inside the dataset
root is refused even with ``force``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm  # text bars on stderr (tqdm.auto warns in notebooks without ipywidgets)

from alignclip.data import (
    Sample,
    SegmentationDataset,
    check_complete,
    dataset_fingerprint,
    load_manifest,
    manifest_sha256,
    open_dataset,
    sample_fingerprint,
)
from alignclip.errors import DatasetError, InputError
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
    "LOCK_STALE_S",
    "SAVE_SECONDS",
    "DistInfo",
    "EvaluationInterrupted",
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

#: Default longest time (seconds) between two progress saves, besides every ``save_every`` images.
SAVE_SECONDS = 5.0
#: A lock of another host not refreshed (it is at every progress save) for this long is stale (6 hours).
LOCK_STALE_S = 6 * 3600.0
_LOCK_NAME = "lock.json"
_LOCK_WRITE_GRACE_S = 60.0  # an empty or unreadable lock younger than this is being written by its owner
_SHARD_FORMAT = "alignclip.eval-shard/v1"
_PREDICTIONS_MARKER = ".alignclip-predictions.json"


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

    ``window_batch`` and ``device`` are left out: they only group windows and place the work (results agree to float
    rounding; ``precision`` stays in), so a run may resume with another batch size, on another machine's "auto" or
    on another GPU, and a study's results computed by ``alignclip study run-jobs --device cuda:1`` are the ones its
    notebooks read. The data's content is not in it (the
    study computes this fingerprint without opening the data): it is the separate ``provenance.data_fingerprint``
    (checked on resume, and by :func:`cached_result` when given).
    """
    settings = {k: v for k, v in config.to_dict().items() if k not in ("window_batch", "device")}
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
        save_predictions: folder for one mask PNG of this head's labels per image (class indices), or None (see
            the module docstring for which folders are accepted).
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
        """``out.partial/``: the lock, ``meta.json`` and per-rank matrices of an unfinished run."""
        return self.out.with_name(self.out.name + ".partial")


class EvaluationInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C), SIGTERM or a KeyboardInterrupt stopped :func:`evaluate_heads` after its progress was saved.

    Attributes:
        saved: images saved for every head (this process's view under torchrun), counted by a rerun.
        total: images of the run.
        partial_dirs: the heads' ``out.partial/`` folders holding them.
        signal_name: ``"SIGTERM"``, or ``""`` for SIGINT / a KeyboardInterrupt.
    """

    def __init__(self, saved: int, total: int, partial_dirs: Sequence[Path], signal_name: str = "") -> None:
        self.saved, self.total, self.signal_name = saved, total, signal_name
        self.partial_dirs = [Path(p) for p in partial_dirs]
        how = f" by {signal_name}" if signal_name else ""
        where = ", ".join(str(p) for p in self.partial_dirs)
        super().__init__(
            f"evaluation interrupted{how}: {saved} of {total} images saved in {where}; rerun the same command "
            "(without --force) to resume"
        )

    def __str__(self) -> str:
        return str(self.args[0])


# ------------------------------------------------------------------ the lock of a partial state
def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` (clock ticks since boot, Linux ``/proc``): tells a reused pid apart; None elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by another user
        return True
    return True


def _env_rank() -> int:
    """This process's rank as torchrun announces it (0 outside torchrun), known before the process group exists."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def _job_identity() -> str:
    """What the ranks of one evaluation share: the torchrun job (rendezvous, run id, restart), else this process."""
    host = socket.gethostname()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return f"process:{host}:{os.getpid()}:{_process_start(os.getpid())}"
    keys = ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT")
    job = "torchrun:" + ":".join(os.environ.get(k, "") for k in keys)
    addr = os.environ.get("MASTER_ADDR", "")
    if addr in ("", "localhost", "::1") or addr.startswith("127."):  # one host: its agent is every rank's parent
        job += f":{host}:{os.getppid()}"
    return job


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _describe_owner(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return "an evaluation that is still writing its lock"
    return f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started')}"


def _stale_reason(path: Path, owner: dict[str, Any] | None) -> str | None:
    """Why the lock at ``path`` is stale, or None while its owner may still run."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "removed meanwhile"
    if owner is None:
        return f"unreadable for {age:.0f} s" if age > _LOCK_WRITE_GRACE_S else None
    pid = int(owner.get("pid", -1)) if str(owner.get("pid", "")).lstrip("-").isdigit() else -1
    if owner.get("host") == socket.gethostname():
        if not _pid_alive(pid):
            return f"pid {pid} no longer runs on this host"
        started = owner.get("process_start")
        if started is not None and _process_start(pid) not in (None, started):
            return f"pid {pid} is now another process"
        return None
    if age > LOCK_STALE_S:
        return f"host {owner.get('host')} has not refreshed it for {age / 3600:.1f} h"
    return None


def _acquire_lock(partial_dir: Path, job: str) -> str:
    """Create ``partial_dir/lock.json`` with ``O_EXCL`` (taking over a stale one with a warning).

    Returns:
        The lock's token, which :func:`_release_lock` checks (it removes only the lock it was given).

    Raises:
        InputError: another evaluation holds the lock (the message names it).
    """
    partial_dir.mkdir(parents=True, exist_ok=True)
    path = partial_dir / _LOCK_NAME
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_lock(path)
            reason = _stale_reason(path, owner)
            if reason is None:
                raise InputError(
                    f"{partial_dir} is in use by another evaluation ({_describe_owner(owner)}); wait for it to "
                    f"finish or stop it, or choose another --out (if that process is gone, delete {path})"
                ) from None
            print(f"warning: taking over the stale lock {path} ({reason})", file=sys.stderr)
            path.unlink(missing_ok=True)
            continue
        token = uuid.uuid4().hex
        owner = {
            "token": token,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "job": job,
            "process_start": _process_start(os.getpid()),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(owner) + "\n")
        return token
    raise InputError(f"could not take the lock {path} (other evaluations keep taking it); retry in a moment")


def _check_job_lock(partial_dir: Path, job: str) -> None:
    """A non-zero torchrun rank: rank 0 of this job must hold the lock."""
    path = partial_dir / _LOCK_NAME
    owner = _read_lock(path)
    if owner is None or owner.get("job") != job:
        raise InputError(
            f"{partial_dir} is in use by another evaluation ({_describe_owner(owner)}), not by this torchrun job; "
            "wait for it to finish or choose another --out"
        )


def _release_lock(partial_dir: Path, token: str, created: bool) -> None:
    """Remove the lock ``token`` took; remove ``partial_dir`` too when this run created it and saved nothing in it."""
    path = partial_dir / _LOCK_NAME
    owner = _read_lock(path)
    if owner is not None and owner.get("token") == token:
        path.unlink(missing_ok=True)
    if created and partial_dir.is_dir() and not any(partial_dir.glob("rank*.npz")):
        shutil.rmtree(partial_dir, ignore_errors=True)


def _refresh_lock(partial_dir: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(partial_dir / _LOCK_NAME)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt("SIGTERM")`` (as SIGINT does) so progress is saved; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------ shards: matrices + what they were computed under
def _sidecar(npz: Path) -> Path:
    return npz.with_suffix(".json")


def _save_shard(
    path: Path, acc: ConfusionAccumulator, fingerprint: str, sample_fps: Mapping[str, str], rank: int
) -> None:
    """Sidecar (fingerprint + each image's sample fingerprint) first, then the matrices, each atomically."""
    ids = acc.per_image()[0]
    sidecar = {"format": _SHARD_FORMAT, "fingerprint": fingerprint, "rank": rank}
    sidecar["images"] = {image_id: sample_fps[image_id] for image_id in ids}
    write_json(_sidecar(path), sidecar, overwrite=True)
    acc.save_npz(path)


def _load_shard(
    path: Path, fingerprint: str, num_classes: int, sample_fps: Mapping[str, str], data: SegmentationDataset
) -> ConfusionAccumulator:
    """One rank's saved matrices, after checking its fingerprint and every image's data fingerprint."""
    partial_dir = path.parent
    start_over = f"delete {partial_dir} or rerun with --force to start over"
    side_path = _sidecar(path)
    try:
        side = json.loads(side_path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{path} has no fingerprint ({side_path.name} is missing: an older alignclip or a copied file); "
            f"its matrices cannot be trusted: {start_over}"
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{side_path} is unreadable ({exc}); {start_over}") from None
    if not isinstance(side, dict) or side.get("format") != _SHARD_FORMAT:
        raise InputError(f"{side_path} is not a shard fingerprint ({_SHARD_FORMAT}); {start_over}")
    if side.get("fingerprint") != fingerprint:
        raise InputError(
            f"{path} was computed under fingerprint {side.get('fingerprint')}, this run's is {fingerprint}: partial "
            f"results in {partial_dir} come from a different configuration or dataset; {start_over}"
        )
    acc = ConfusionAccumulator.load_npz(path)
    if acc.num_classes != num_classes:
        raise InputError(f"{path} has {acc.num_classes} classes, this run {num_classes}; {start_over}")
    recorded = side.get("images") if isinstance(side.get("images"), dict) else {}
    for image_id in acc.per_image()[0]:
        if image_id not in sample_fps:
            raise InputError(
                f"{path} holds image {image_id!r}, which is not among the {len(sample_fps)} images evaluated now "
                f"(the data under {data.root} changed); rerun with --force to evaluate them all again"
            )
        if recorded.get(image_id) != sample_fps[image_id]:
            image_path, label_path = data.paths(data.image_ids.index(image_id))
            raise InputError(
                f"{image_path} or its label {label_path} changed since its matrix was saved in {path}; restore "
                "it, or rerun with --force to evaluate every image again"
            )
    return acc


def _load_partials(
    partial_dir: Path,
    fingerprint: str,
    num_classes: int,
    sample_fps: Mapping[str, str],
    data: SegmentationDataset,
) -> dict[str, ConfusionAccumulator]:
    """Every rank's saved matrices in ``partial_dir`` by file name, each checked (see :func:`_load_shard`)."""
    meta_path = partial_dir / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            meta = {}
        if not isinstance(meta, dict) or meta.get("fingerprint") != fingerprint:
            raise InputError(
                f"partial results in {partial_dir} come from a different configuration or dataset; delete "
                f"that folder or rerun with --force to start over"
            )
    shards = {}
    for f in sorted(partial_dir.glob("rank*.npz")):
        shards[f.name] = _load_shard(f, fingerprint, num_classes, sample_fps, data)
    return shards


# ------------------------------------------------------------------ the predictions folder
def _check_predictions_dir(
    folder: Path, fingerprint: str, data_root: Path, image_ids: Sequence[str], force: bool
) -> None:
    """Refuse a predictions folder inside the dataset, or one holding files this run would write (see module)."""
    where, root = folder.resolve(), data_root.resolve()
    if where == root or root in where.parents:
        raise InputError(
            f"--save-predictions {folder} is inside the dataset root {data_root}; predictions are never written "
            "into a dataset (not even with --force): choose a folder outside it"
        )
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InputError(f"--save-predictions {folder} exists and is not a folder; choose a new or empty folder")
    if force:
        return
    marker = _read_lock(folder / _PREDICTIONS_MARKER)
    if marker is not None and marker.get("fingerprint") == fingerprint:
        return  # this run's own masks (a resume): rewritten with the same content
    if marker is not None:
        raise InputError(
            f"--save-predictions {folder} holds the masks of another run (fingerprint {marker.get('fingerprint')}, "
            f"{marker.get('out')}); choose a new or empty folder, or pass --force to overwrite them"
        )
    clashes = [i for i in image_ids if (folder / f"{i}.png").exists()]
    if clashes:
        raise InputError(
            f"--save-predictions {folder} already holds {len(clashes)} of the {len(image_ids)} files this run "
            f"would write (e.g. {folder / clashes[0]}.png); choose a new or empty folder, or pass --force to "
            "overwrite them"
        )


def _write_predictions_marker(folder: Path, head: Head, dataset: str) -> None:
    marker = {"fingerprint": head.fingerprint, "out": str(head.out), "dataset": dataset}
    write_json(folder / _PREDICTIONS_MARKER, marker, overwrite=True)


@dataclass
class _HeadState:
    """One head's matrices in a pass: ``done`` (every rank's saved ones) and ``mine`` (this rank's, saved or not)."""

    head: Head
    done: ConfusionAccumulator
    mine: ConfusionAccumulator
    my_file: Path
    saved: int = -1  # images of `mine` in my_file (-1: my_file not written by this run)
    marked: bool = False  # the predictions folder's marker is written

    def saved_ids(self) -> set[str]:
        return set(self.done.per_image()[0]) | set(self.mine.per_image()[0][: max(self.saved, 0)])


def cached_result(out: str | Path, fingerprint: str, data_fingerprint: str | None = None) -> dict[str, Any] | None:
    """The RESULT.json at ``out`` when it exists and its ``provenance.fingerprint`` is ``fingerprint``, else None.

    The one reuse check of a cached run (the study's runs and its +CRF runs call it); a file that exists but is
    not a RESULT.json raises :class:`~alignclip.errors.InputError` (see :func:`load_result`).

    Args:
        out: the RESULT.json path.
        fingerprint: the run's :func:`run_fingerprint` (configuration, dataset, limit, code).
        data_fingerprint: when given, ``provenance.data_fingerprint`` must equal it too
            (:func:`alignclip.data.dataset_fingerprint` of the evaluated images): a result of changed data is
            not reused.
    """
    out = Path(out)
    if not out.is_file():
        return None
    result = load_result(out)
    provenance = result.get("provenance", {})
    if provenance.get("fingerprint") != fingerprint:
        return None
    if data_fingerprint is not None and provenance.get("data_fingerprint") != data_fingerprint:
        return None
    return result


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
    allow_partial: bool = False,
    save_seconds: float = SAVE_SECONDS,
) -> dict[str, Any]:
    """Evaluate ``config`` on a dataset and write RESULT.json (see the module docstring).

    Args:
        config: the method (e.g. ``build_config("alignclip-d", dataset="potsdam")``).
        dataset: manifest name (``alignclip data list``).
        data_root: the converted dataset root (mmsegmentation layout).
        out: RESULT.json path; an existing file is refused unless ``force``.
        split: overrides the manifest's evaluation split.
        limit: evaluate only the first ``limit`` images (in sorted order); a positive int or None.
        save_predictions: folder for one mask PNG per image (class indices), outside the dataset root; one holding
            files this run would write is refused unless ``force`` (or it is this run's own, on resume).
        force: overwrite ``out`` and the predictions, and discard partial results.
        save_every: images between two progress saves.
        progress: show a progress bar.
        segmentor: a ready segmentor to reuse (its classes must be the dataset's).
        allow_partial: evaluate a dataset with fewer images than its manifest lists (a warning instead of a
            :class:`~alignclip.errors.DatasetError`; see :func:`alignclip.data.check_complete`).
        save_seconds: longest time between two progress saves.

    Returns:
        The result dictionary written to ``out`` (on every process).

    Raises:
        EvaluationInterrupted: SIGINT/SIGTERM (a KeyboardInterrupt) after saving the progress.
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
        allow_partial=allow_partial,
        save_seconds=save_seconds,
    )[0]


def _check_heads(heads: list[Head], limit: int | None, save_every: int, save_seconds: float, force: bool) -> None:
    """Every refusal that needs no data: run before anything is read or written."""
    if not heads:
        raise InputError("evaluate_heads needs at least one Head; pass e.g. [Head(out, fingerprint)]")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"--limit must be a positive number of images, got {limit!r}; omit it to evaluate all")
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise InputError(f"save_every must be a positive int, got {save_every!r} (e.g. 20)")
    if not save_seconds >= 0:
        raise InputError(f"save_seconds must be >= 0, got {save_seconds!r} (e.g. {SAVE_SECONDS})")
    if len({h.out.resolve() for h in heads}) != len(heads):
        raise InputError(f"heads share a RESULT.json path ({[str(h.out) for h in heads]}); give each head its own out")
    folders = [h.save_predictions.resolve() for h in heads if h.save_predictions is not None]
    if len(set(folders)) != len(folders):
        raise InputError("heads share a save_predictions folder; give each head its own")
    for head in heads:
        if head.out.exists() and not force:
            raise InputError(f"{head.out} exists; pass --force to overwrite it, or choose another --out")


def _clear_partial(partial_dir: Path) -> None:
    """``--force``: discard a partial state, keeping this run's lock."""
    for p in partial_dir.iterdir():
        if p.name == _LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


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
    allow_partial: bool = False,
    save_seconds: float = SAVE_SECONDS,
) -> list[dict[str, Any]]:
    """Score every head on a dataset in ONE pass and write one RESULT.json per head (resumable, torchrun-aware).

    Each image is read once; when some head ``needs_logits`` it is predicted once (``segmentor.predict``) and the
    prediction goes to every head, else each head's ``labels_fn`` gets None (the plain head then calls
    ``segmentor.segment``). Progress is saved every ``save_every`` images, at least every ``save_seconds``, and on
    any exception or SIGINT/SIGTERM, in each head's locked ``out.partial/`` (see the module docstring), checked per
    head against its fingerprint and the data. On a rerun an image is skipped only when every head already has it;
    a head that lacks it (an interruption between two heads' saves) gets it recomputed, so no image is counted twice
    or missed. Under ``torchrun`` each process takes its ``DistributedSampler`` shard and the per-image matrices
    are gathered.

    Args:
        config: the method; every head's result records it.
        dataset: manifest name (``alignclip data list``).
        data_root: the converted dataset root (mmsegmentation layout).
        heads: the outputs, with distinct ``out`` paths; existing files are refused unless ``force``.
        split: overrides the manifest's evaluation split.
        limit: evaluate only the first ``limit`` images (in sorted order); a positive int or None.
        force: overwrite the heads' files and predictions and discard their partial results (a partial state
            locked by a running evaluation is still refused).
        save_every: images between two progress saves.
        progress: show a progress bar.
        segmentor: a ready segmentor to reuse (its classes must be the dataset's).
        desc: the progress bar's label (default: the dataset name).
        allow_partial: accept a dataset with fewer images than its manifest lists (warning on stderr).
        save_seconds: longest time between two progress saves.

    Returns:
        The result dictionaries written, in the order of ``heads`` (on every process).

    Raises:
        InputError: refusals (existing outputs, a locked or foreign partial state, a changed image, a predictions
            folder that would be overwritten or lies in the dataset), before any image is evaluated.
        DatasetError: an incomplete dataset (see ``allow_partial``) or a label value out of range (names the file).
        EvaluationInterrupted: SIGINT/SIGTERM (a KeyboardInterrupt) after saving the progress.
    """
    heads = list(heads)
    _check_heads(heads, limit, save_every, save_seconds, force)
    data = open_dataset(dataset, data_root, split)
    warning = check_complete(data, limit, allow_partial)
    rank0 = _env_rank() == 0
    if warning and rank0:
        print(warning, file=sys.stderr)  # the line starts with "warning:"
    n_total = len(data) if limit is None else min(limit, len(data))
    ids = data.image_ids
    for head in heads:
        if head.save_predictions is not None:
            _check_predictions_dir(head.save_predictions, head.fingerprint, data.root, ids[:n_total], force)
    sample_fps = {ids[i]: sample_fingerprint(*data.paths(i)) for i in range(n_total)}
    data_fp = dataset_fingerprint(data, list(range(n_total)))
    job = _job_identity()
    locks: dict[Path, tuple[str, bool]] = {}  # partial_dir -> (token, this run created the folder)
    try:
        with _sigterm_raises():
            if rank0:
                for head in heads:
                    created = not head.partial_dir.exists()
                    try:
                        locks[head.partial_dir] = (_acquire_lock(head.partial_dir, job), created)
                    except InputError:
                        if created:  # refused by a lock that appeared meanwhile: leave no empty folder
                            with contextlib.suppress(OSError):
                                head.partial_dir.rmdir()
                        raise
            return _evaluate_pass(
                config,
                dataset,
                data,
                heads,
                split,
                limit,
                n_total,
                sample_fps,
                data_fp,
                job,
                force,
                save_every,
                save_seconds,
                progress,
                segmentor,
                desc,
            )
    finally:
        for partial_dir, (token, created) in locks.items():
            _release_lock(partial_dir, token, created)


def _evaluate_pass(
    config: SegmentorConfig,
    dataset: str,
    data: SegmentationDataset,
    heads: list[Head],
    split: str | None,
    limit: int | None,
    n_total: int,
    sample_fps: dict[str, str],
    data_fp: str,
    job: str,
    force: bool,
    save_every: int,
    save_seconds: float,
    progress: bool,
    segmentor: Segmentor | None,
    desc: str | None,
) -> list[dict[str, Any]]:
    """The body of :func:`evaluate_heads` once rank 0 holds every head's lock."""
    manifest = data.manifest
    k = manifest.num_classes
    seg = segmentor or Segmentor(config, list(manifest.classes))
    info = init_distributed(seg.device)
    if info.world_size > 1:
        dist.barrier()  # rank 0 holds the locks
        if not info.is_main:
            for head in heads:
                _check_job_lock(head.partial_dir, job)
    if force and info.is_main:
        for head in heads:
            _clear_partial(head.partial_dir)
    if info.world_size > 1:
        dist.barrier()
    states = []
    for head in heads:
        shards = _load_partials(head.partial_dir, head.fingerprint, k, sample_fps, data)
        done = ConfusionAccumulator(k)
        for acc in shards.values():
            done.merge(acc)
        my_file = head.partial_dir / f"rank{info.rank}.npz"
        mine = ConfusionAccumulator(k)
        if my_file.name in shards:  # this rank's earlier work is already inside `done`; keep saving it with the new
            mine.merge(shards[my_file.name])
        states.append(_HeadState(head, done, mine, my_file, saved=len(mine) if my_file.name in shards else -1))
    if info.world_size > 1:
        dist.barrier()  # every rank has read the same partial state before any rank saves new work
    if info.is_main:
        for head in heads:
            meta = {"fingerprint": head.fingerprint, "dataset": dataset, "data_fingerprint": data_fp}
            write_json(head.partial_dir / "meta.json", dict(meta, images=n_total), overwrite=True)

    def save() -> None:
        for s in states:
            if len(s.mine) > max(s.saved, 0):  # new images since the last save
                _save_shard(s.my_file, s.mine, s.head.fingerprint, sample_fps, info.rank)
                s.saved = len(s.mine)
        if info.is_main:
            for s in states:
                _refresh_lock(s.head.partial_dir)

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
    since_save, last_save = 0, time.monotonic()
    try:
        for i in bar:
            lacking = [s for s in states if ids[i] not in s.done]
            sample = data[i]
            prediction = seg.predict(sample.image) if any(s.head.needs_logits for s in lacking) else None
            for s in lacking:
                labels = s.head.labels_fn(seg, sample, prediction)
                try:
                    s.mine.update(labels, sample.label, sample.image_id)
                except DatasetError as exc:
                    raise DatasetError(f"{sample.label_path}: {exc}") from None
                if s.head.save_predictions is not None:
                    if not s.marked:
                        _write_predictions_marker(s.head.save_predictions, s.head, dataset)
                        s.marked = True
                    write_mask(s.head.save_predictions / f"{sample.image_id}.png", labels, overwrite=True)
            since_save += 1
            if since_save >= save_every or time.monotonic() - last_save >= save_seconds:
                save()
                since_save, last_save = 0, time.monotonic()
        save()
    except KeyboardInterrupt as exc:
        save()
        name = exc.args[0] if exc.args and str(exc.args[0]).startswith("SIG") else ""
        saved = min(len(s.saved_ids()) for s in states)
        raise EvaluationInterrupted(saved, n_total, [h.partial_dir for h in heads], name) from None
    except BaseException:
        save()  # the images done before the error are kept
        raise
    finally:
        bar.close()
    totals = [_gather(s.done, s.mine, info, k) for s in states]
    wall = time.time() - started
    results = None
    if info.is_main:
        results = []
        for s, acc in zip(states, totals, strict=True):
            result = build_result(acc, seg, config, dataset, split, limit, wall, info.world_size)
            result["provenance"]["fingerprint"] = s.head.fingerprint
            result["provenance"]["data_fingerprint"] = data_fp
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
    """Read a RESULT.json (one-line error when missing, unreadable, not JSON or not a result)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"result file {path} not found; create it with `alignclip evaluate ... --out {path}`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path} is not a readable JSON text file ({exc.__class__.__name__}); pass a RESULT.json"
        ) from None
    if not isinstance(data, dict) or "confusion_matrix" not in data or "kind" not in data:
        raise InputError(f"{path} is not an alignclip RESULT.json (no confusion_matrix/kind)")
    return data
