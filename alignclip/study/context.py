"""A notebook's study context: its profile, validated parameters, datasets and models, and its JSON output.

A notebook starts with :func:`start_study` (validates the parameters cell, prepares data), shows :func:`banner` and
ends with :func:`write_notebook_results`.

Profiles: ``smoke`` (default) = tiny random CLIP, random upsampler, tiny VFM, fake data in each dataset's real
layout, CPU; every number is a *pipeline check*. ``rehearsal`` = the full profile's code paths with real
architectures and random weights (CLIP ViT-B/16, the ``jbu_one`` upsampler, DINO, SAM) on fake data in each
dataset's real layout, label encoding and image size (manifest ``image_size``), ``smoke_images`` images each (a small
``limit``); its numbers are pipeline checks too, and its cost is the real one. ``full`` = ViT-B-16/openai, the
SegEarth-OV JBU checkpoint, real VFMs and the converted datasets under ``data_root/<dataset>``. A notebook declares what it reads with
``start_study(needs=...)`` (:data:`NEEDS`): only those parameters are required in the ``full`` profile (the cost
benchmark with random weights needs neither).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from alignclip.data import generate_fake_dataset, list_datasets, load_manifest
from alignclip.errors import ConfigError, DatasetNotFoundError
from alignclip.evaluation.bench import RANDOM_WEIGHTS
from alignclip.io.files import write_json
from alignclip.kinds import PIPELINE_CHECK_LABEL, kind_of
from alignclip.paper.names import RS_DATASETS
from alignclip.pipeline.config import SegmentorConfig, build_config

__all__ = ["NEEDS", "PROFILES", "StudyContext", "banner", "glue_markdown", "start_study", "write_notebook_results"]

PROFILES = ("smoke", "rehearsal", "full")
#: What the rehearsal profile sets: random weights for every model of the full profile (the benchmark's own set: a
#: method's own VFMs included, CorrCLIP's masks from the stand-in of SAM 2).
REHEARSAL_WEIGHTS = RANDOM_WEIGHTS
#: What a notebook may need in the ``full`` profile: ``data`` (``data_root`` with every dataset converted under
#: it) and ``weights`` (``upsampler_ckpt``; CLIP and VFM weights come from their own caches).
NEEDS = ("data", "weights")
PIPELINE_BANNER = (
    "This notebook ran in the `smoke` profile: a tiny randomly "
    "initialised CLIP, a random JBU upsampler and a tiny random VFM on generated data. Its numbers "
    "test that the code runs end to end; they are **not** reproduced results and say nothing about "
    "the paper's claims."
)
REHEARSAL_BANNER = (
    "This notebook ran in the `rehearsal` profile: the full profile's "
    "models at their real size (CLIP ViT-B/16, the JBU upsampler, DINO, SAM) with **random weights** (CorrCLIP's "
    "masks from the deterministic stand-in of SAM 2), on generated data in each dataset's real layout and image "
    "size. It tests the full study's code paths and shows their real cost; its scores are **not** results and say "
    "nothing about the paper's claims."
)
REAL_BANNER = (
    "**Real pretrained weights.** This notebook ran in the `full` profile (CLIP {clip}, upsampler {up}, VFM {vfm})"
)
NO_WEIGHTS_BANNER = "**Full profile, no pretrained checkpoint needed.** This notebook ran in the `full` profile"


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
        """Random weights and generated data (smoke or rehearsal): numbers label as pipeline checks."""
        return self.profile in ("smoke", "rehearsal")

    @property
    def is_smoke(self) -> bool:
        """Tiny models (the smoke profile); the rehearsal runs the real architectures."""
        return self.profile == "smoke"

    @property
    def kind(self) -> str:
        return kind_of(self.is_pipeline_check)

    def config(self, preset: str, dataset: str | None = None, **overrides: Any) -> SegmentorConfig:
        """The configuration of ``preset`` on ``dataset`` in this profile."""
        if self.is_smoke:
            over = dict(long_side=self.smoke_size, device=self.device)
            over.update(overrides)
            return build_config(preset, dataset=dataset, smoke=True, **over)
        if self.profile == "rehearsal":
            return build_config(preset, dataset=dataset, **{**REHEARSAL_WEIGHTS, "device": self.device, **overrides})
        if self.upsampler_ckpt is None and "upsampler_ckpt" not in overrides and overrides.get("upsampler") != "none":
            raise ConfigError(_MISSING_UPSAMPLER)  # the notebook declared needs without "weights"; none was given
        over = dict(
            pretrained=self.clip_pretrained,
            upsampler_ckpt=self.upsampler_ckpt,
            vfm_pretrained=self.vfm_pretrained,
            device=self.device,
        )
        if self.vfm_pretrained in ("default", "none"):  # a file given for CCE's VFM is not a method's own VFM
            over["encoder_vfm_pretrained"] = over["trident_sam_pretrained"] = self.vfm_pretrained
        over.update(overrides)
        return build_config(preset, dataset=dataset, **over)

    def dataset_root(self, dataset: str) -> Path:
        """Where ``dataset`` lives (generated on first use in the smoke profile)."""
        if self.is_smoke:
            root = self.output_dir / "data" / f"{dataset}-{self.smoke_images}x{self.smoke_size}"
            if not (root / "alignclip_fake.json").is_file():
                _generate_once(root, dataset, self.smoke_images, self.smoke_size)
            return root
        if self.profile == "rehearsal":  # the dataset's real image size (a square of the processing size if unknown)
            size = load_manifest(dataset).image_size or (448, 448)
            root = self.output_dir / "data" / f"{dataset}-{self.smoke_images}x{size[0]}x{size[1]}"
            if not (root / "alignclip_fake.json").is_file():
                _generate_once(root, dataset, self.smoke_images, size)
            return root
        if self.data_root is None:  # the notebook declared needs without "data" and none was given
            raise DatasetNotFoundError(_MISSING_DATA_ROOT)
        return self.data_root / dataset


def _generate_once(root: Path, dataset: str, n_images: int, size: int | tuple[int, int]) -> None:
    """Generate the fake dataset in a private folder and move it into place: processes sharing ``output_dir`` (the
    shards of ``alignclip study run-jobs``) never see a half-written dataset; the first to finish wins (the data are
    the same bytes)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate_fake_dataset(dataset, tmp, n_images=n_images, size=size, seed=0)
        try:
            tmp.rename(root)
        except OSError:  # another process moved its copy first (or a stale empty folder is in the way)
            if not (root / "alignclip_fake.json").is_file():
                generate_fake_dataset(dataset, root, n_images=n_images, size=size, seed=0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_MISSING_DATA_ROOT = (
    "profile='full' needs data_root: the folder holding one converted dataset per sub-folder (e.g. "
    "data/potsdam); set it with `-p data_root /path/to/data` (see book/setup.md)"
)
_MISSING_UPSAMPLER = (
    "profile='full' needs upsampler_ckpt: the path of xclip_jbu_one_million_aid.ckpt (SegEarth-OV "
    "repository); set it with `-p upsampler_ckpt /path/to/xclip_jbu_one_million_aid.ckpt`, or "
    "`-p upsampler_ckpt none` for a random upsampler"
)


def start_study(
    profile: str = "smoke",
    datasets: Sequence[str] | None = None,
    output_dir: str | Path = "results",
    data_root: str | Path | None = None,
    device: str = "auto",
    limit: int | None = None,
    n_boot: int = 1000,
    smoke_images: int = 3,
    smoke_size: int = 96,
    clip_pretrained: str = "openai",
    upsampler_ckpt: str | None = None,
    vfm_pretrained: str = "default",
    needs: Sequence[str] = NEEDS,
) -> StudyContext:
    """Validate a notebook's parameters; one clear line when anything is wrong.

    Args:
        needs: what the notebook reads in the ``full`` profile, a subset of :data:`NEEDS` (default: both).
            With ``"data"``, every dataset must exist under ``data_root/<name>``; with ``"weights"``, the upsampler
            checkpoint must be given (a path, or ``"none"`` to run with a random upsampler on purpose). A notebook
            that needs neither (the cost benchmark with random weights) runs with no data_root and no checkpoint.
            The ``smoke`` and ``rehearsal`` profiles need nothing.
    """
    for name, value, types in (
        ("profile", profile, str),
        ("datasets", datasets, (list, tuple, type(None))),
        ("output_dir", output_dir, (str, Path)),
        ("data_root", data_root, (str, Path, type(None))),
        ("device", device, str),
        ("limit", limit, (int, type(None))),
        ("n_boot", n_boot, int),
        ("smoke_images", smoke_images, int),
        ("smoke_size", smoke_size, int),
        ("upsampler_ckpt", upsampler_ckpt, (str, type(None))),
        ("needs", needs, (list, tuple)),
    ):
        if not isinstance(value, types) or isinstance(value, bool):
            expected = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise ConfigError(f"parameter {name}={value!r} has the wrong type; expected {expected}")
    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r} is not valid; choose one of {', '.join(PROFILES)}")
    unknown_needs = [n for n in needs if n not in NEEDS]
    if unknown_needs:
        raise ConfigError(
            f"needs={tuple(needs)!r}: unknown {', '.join(map(repr, unknown_needs))}; choose from "
            f"{', '.join(NEEDS)} (or none)"
        )
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
            raise DatasetNotFoundError(
                f"dataset folder {root / missing[0]} not found (missing: {', '.join(missing)});"
                f" convert it with `alignclip data prepare {missing[0]} --raw DIR --out "
                f"{root / missing[0]}` (manifest {m.path.name})"
            )
    if profile == "full" and "weights" in needs and upsampler_ckpt is None:
        raise ConfigError(_MISSING_UPSAMPLER)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if profile == "smoke":
        torch.set_num_threads(1)  # tiny models: one thread is several times faster, and results are identical
    if profile == "rehearsal" and limit is None:
        limit = 1  # a small limit: one image per dataset unless asked for more (of the smoke_images generated)
    return StudyContext(
        profile,
        datasets,
        out,
        root,
        device,
        None if limit is None else int(limit),
        int(n_boot),
        int(smoke_images),
        int(smoke_size),
        clip_pretrained,
        upsampler_ckpt,
        vfm_pretrained,
        needs,
    )


def banner(ctx: StudyContext):
    """The notebook's status as an admonition (rendered by the book, readable as plain Markdown in Jupyter):
    a warning box for pipeline checks, a note naming the weights for runs of the full profile. In a notebook it is
    also glued as ``status`` for the book to show under the title."""
    from IPython.display import Markdown

    if ctx.is_pipeline_check:
        text = PIPELINE_BANNER if ctx.is_smoke else REHEARSAL_BANNER
    else:
        text = (
            REAL_BANNER.format(clip=ctx.clip_pretrained, up=ctx.upsampler_ckpt, vfm=ctx.vfm_pretrained)
            if "weights" in ctx.needs
            else NO_WEIGHTS_BANNER
        )
        text += (
            f" on the converted datasets under `{ctx.data_root}`." if "data" in ctx.needs else "; it reads no dataset."
        )
    box = "warning" if ctx.is_pipeline_check else "note"
    title = "Full profile" if not ctx.is_pipeline_check else PIPELINE_CHECK_LABEL
    if ctx.profile == "rehearsal":
        title += ": rehearsal"
    status = Markdown(f":::{{admonition}} {title}\n:class: {box}\n{text}\n:::")
    _glue_status(status)
    return status


def _glue_status(status) -> None:
    """Inside a notebook kernel, also glue the banner as ``status``: the book shows it under the notebook's title
    (``{glue:md} status`` in the title cell), before any code."""
    glue_markdown("status", status)


def glue_markdown(name: str, markdown) -> None:
    """Inside a notebook kernel, glue ``markdown`` (an IPython ``Markdown``) as ``name`` for a ``{glue:md} name``
    elsewhere in the page (a summary written from the results); elsewhere nothing."""
    try:
        from IPython import get_ipython
        from myst_nb import glue
    except ImportError:  # the study without the book's packages: the Markdown is the cell's output only
        return
    if get_ipython() is not None:
        glue(name, markdown, display=False)


def write_notebook_results(ctx: StudyContext, name: str, payload: dict[str, Any]) -> Path:
    """Write ``output_dir/<name>.json`` atomically with the profile and kind stamped in."""

    def _records(obj: Any) -> Any:
        return obj.to_dict(orient="records") if isinstance(obj, pd.DataFrame) else obj

    body = {"notebook": name, "profile": ctx.profile, "kind": ctx.kind, **{k: _records(v) for k, v in payload.items()}}
    return write_json(ctx.output_dir / f"{name}.json", json.loads(json.dumps(body, default=str)), overwrite=True)
