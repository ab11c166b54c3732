"""Labelled CLIP patch features for the feature analysis (Table 1, Fig. 1c, Fig. 5): the collector.

Feeds :mod:`alignclip.study.analysis` (similarity statistics, 2-D maps) and :mod:`alignclip.study.analysis_figures`.

Protocol (the paper gives none; our choices are in the decisions register):

* **Features** — CLIP dense patch features with the pipeline's modified last block (``segearth`` attention,
  residual dropped; ``preset="clip"`` gives vanilla CLIP), one token per 16x16 patch of every 224x224 window of
  the image resized as the pipeline does (long side 448). Windows tile the image with stride = crop; where the
  last window is shifted back inside the image, only patches whose centre lies beyond the previous window are
  kept, so no image area is counted twice. Features are L2-normalised.
* **Labels** — each patch gets the majority ground-truth class of its pixels (label resized with nearest
  neighbour to the processing size). Patches whose majority is ignore (255, padding included) or whose majority
  covers less than ``purity`` (0.75) of the patch are dropped, so mixed boundary patches do not blur classes.
* **Classes** are per dataset (``"potsdam:building"`` and ``"loveda:building"`` are different classes): label
  definitions differ between datasets and cross-dataset pairs would mix domain shift into "intra-class".
* **Sampling** — a seeded sample of ``n_images`` images per dataset, then at most ``max_per_class`` patches per
  class (seeded).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from alignclip.data import load_manifest, open_dataset
from alignclip.errors import InputError
from alignclip.io.images import resize_long_side
from alignclip.models.clip import ClipBundle, create_clip, dense_features
from alignclip.ops.windows import extract_windows, pad_to_multiple, window_boxes
from alignclip.pipeline.config import SegmentorConfig
from alignclip.pipeline.runtime import resolve_device, resolve_dtype, resolve_window_batch

__all__ = ["IGNORE", "DomainFeatures", "collect_class_features", "collect_domain_features"]

IGNORE = 255


# ---------------------------------------------------------------- feature collection
def _owned(starts: torch.Tensor, size: int, length: int, offset: int, patch: int, grid: int) -> torch.Tensor:
    """``[n, grid]`` mask of the patches of each window (start ``starts[n]``) first covered by it (1-D)."""
    uniq = torch.unique(starts)
    prev_end = torch.cat([torch.zeros(1, dtype=uniq.dtype), uniq[:-1] + length])  # end of the previous window
    prev = prev_end[torch.searchsorted(uniq, starts.contiguous())]
    centre = starts[:, None] - offset + torch.arange(grid) * patch + patch / 2  # [n, grid] image coords
    return (centre >= prev[:, None]) & (centre < size)


def _patch_majority(labels: np.ndarray, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Majority value and its pixel share per patch of ``labels [n, H, W]`` (H, W multiples of ``patch``)."""
    n, h, w = labels.shape
    blocks = labels.reshape(n, h // patch, patch, w // patch, patch).transpose(0, 1, 3, 2, 4)
    blocks = blocks.reshape(-1, patch * patch).astype(np.int64)  # [P, p*p]
    counts = np.bincount((np.arange(len(blocks))[:, None] * 256 + blocks).ravel(), minlength=len(blocks) * 256)
    counts = counts.reshape(-1, 256)
    major = counts.argmax(1)
    return major, counts[np.arange(len(major)), major] / float(patch * patch)


def _cap_per_class(class_ids: np.ndarray, max_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a seeded sample of at most ``max_per_class`` items per class."""
    order = rng.permutation(len(class_ids))
    order = order[np.argsort(class_ids[order], kind="stable")]  # shuffled within each class
    cls = class_ids[order]
    first = np.searchsorted(cls, cls, side="left")
    rank = np.arange(len(cls)) - first
    return np.sort(order[rank < max_per_class])


def _image_features(
    clip: ClipBundle, cfg: SegmentorConfig, image: np.ndarray, label: np.ndarray, device: torch.device, purity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Kept patch features ``[m, D]`` (normalised) and their classes ``[m]`` of one image."""
    if cfg.long_side is not None:
        image = resize_long_side(image, cfg.long_side)
    if label.shape != image.shape[:2]:
        label = cv2.resize(label, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    h, w = image.shape[:2]
    mean = torch.tensor(clip.mean, device=device).view(3, 1, 1) * 255.0
    std = torch.tensor(clip.std, device=device).view(3, 1, 1) * 255.0
    x = (torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float() - mean) / std
    boxes = window_boxes(h, w, cfg.crop, cfg.crop)  # stride = crop: a tiling, no overlap but at the border
    p = clip.patch_size
    wh, ww = int(boxes[0, 1] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 2])
    left, right, top, bottom = pad_to_multiple(wh, ww, p)
    labs = extract_windows(torch.from_numpy(np.array(label, dtype=np.uint8))[None], boxes)[:, 0].numpy()
    labs = np.pad(labs, ((0, 0), (top, bottom), (left, right)), constant_values=IGNORE)
    gh, gw = labs.shape[1] // p, labs.shape[2] // p
    keep = (
        (_owned(boxes[:, 0], h, wh, top, p, gh)[:, :, None] & _owned(boxes[:, 2], w, ww, left, p, gw)[:, None, :])
        .reshape(-1)
        .numpy()
    )
    major, share = _patch_majority(labs, p)
    keep &= (major != IGNORE) & (share >= purity)
    autocast = resolve_dtype(cfg.precision, device)
    feats = []
    batch = resolve_window_batch(cfg.window_batch, device)
    for i in range(0, len(boxes), batch):  # bounded batches of windows
        crops = F.pad(extract_windows(x, boxes[i : i + batch]), (left, right, top, bottom))
        with torch.inference_mode(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            patch, _ = dense_features(
                clip.model.visual, crops, cfg.attention, cfg.drop_residual, cfg.naclip_std, cfg.pos_embed_interp
            )
        feats.append(F.normalize(patch.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, patch.shape[1]).cpu())
    feats = torch.cat(feats).numpy()
    return feats[keep], major[keep]


def collect_class_features(
    ctx_or_config: Any,
    dataset: str,
    root: str | Path | None = None,
    n_images: int = 8,
    max_per_class: int = 200,
    seed: int = 0,
    purity: float = 0.75,
    preset: str = "segearth-ov",
    clip: ClipBundle | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled CLIP patch features of one dataset (the protocol in the module docstring).

    Args:
        ctx_or_config: a :class:`~alignclip.study.context.StudyContext` (its ``config(preset, dataset)`` and
            ``dataset_root(dataset)`` are used) or a :class:`SegmentorConfig` (then ``root`` is required).
        dataset: manifest name, e.g. ``"potsdam"``.
        root: the converted dataset folder (default: the context's).
        n_images: seeded sample of images (0 = all images).
        max_per_class: at most this many patches per class (seeded sample).
        seed: seed of both samples (the dataset name is mixed in).
        purity: least share of a patch's pixels its majority class must cover.
        preset: configuration preset when a context is given (``segearth-ov``; ``clip`` for vanilla CLIP).
        clip: an already loaded backbone (else built from the config).
        limit: sample only among the first ``limit`` images (``None``: all).

    Returns:
        ``feats [M, D]`` float32 unit vectors, ``class_ids [M]`` int64 evaluation ids, ``image_ids [M]`` str.
    """
    if isinstance(ctx_or_config, SegmentorConfig):
        cfg = ctx_or_config
        if root is None:
            raise InputError(
                f"collect_class_features({dataset!r}) with a SegmentorConfig needs root=<dataset "
                f"folder>; pass root or a StudyContext"
            )
    else:
        cfg = ctx_or_config.config(preset, dataset, upsampler="none")  # CLIP features only
        root = ctx_or_config.dataset_root(dataset) if root is None else root
    if int(max_per_class) < 1 or int(n_images) < 0 or not 0.0 < purity <= 1.0:
        raise InputError(
            f"need max_per_class >= 1, n_images >= 0 (0 = all) and 0 < purity <= 1, got "
            f"{max_per_class}, {n_images}, {purity}"
        )
    device = resolve_device(cfg.device)
    clip = clip or create_clip(cfg.backbone, cfg.pretrained, device)
    ds = open_dataset(dataset, root)
    rng = np.random.default_rng([int(seed), zlib.crc32(dataset.encode())])
    pool = len(ds) if not limit else min(len(ds), int(limit))
    picks = (
        np.arange(pool)
        if n_images in (0, None) or n_images >= pool
        else np.sort(rng.choice(pool, int(n_images), replace=False))
    )
    feats, classes, images = [], [], []
    for i in picks:  # a loop over images; everything inside is batched
        sample = ds[int(i)]
        f, c = _image_features(clip, cfg, sample.image, sample.label, device, purity)
        feats.append(f)
        classes.append(c)
        images.append(np.full(len(c), sample.image_id, dtype=object))
    dim = clip.embed_dim
    feats = np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)
    classes = np.concatenate(classes).astype(np.int64) if classes else np.zeros(0, np.int64)
    images = np.concatenate(images) if images else np.zeros(0, dtype=object)
    keep = _cap_per_class(classes, int(max_per_class), rng)
    return feats[keep].astype(np.float32), classes[keep], images[keep].astype(str)


@dataclass
class DomainFeatures:
    """Labelled patch features of several datasets grouped by domain (all arrays ``[M]`` but ``feats [M, D]``)."""

    feats: np.ndarray
    class_ids: np.ndarray  # evaluation ids within each dataset
    class_names: np.ndarray  # first synonym of the class
    datasets: np.ndarray
    domains: np.ndarray
    image_ids: np.ndarray  # "<dataset>/<image id>" (unique across datasets)

    @property
    def class_keys(self) -> np.ndarray:
        """``"<dataset>:<class name>"``: the classes of the analysis (per dataset)."""
        return np.char.add(np.char.add(self.datasets.astype(str), ":"), self.class_names.astype(str))

    def select(self, mask: np.ndarray) -> DomainFeatures:
        return DomainFeatures(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))

    def domain(self, name: str) -> DomainFeatures:
        if name not in set(self.domains):
            raise InputError(f"unknown domain {name!r}; available: {', '.join(sorted(set(self.domains)))}")
        return self.select(self.domains == name)

    def counts(self) -> pd.DataFrame:
        """Images, patches and classes per domain and dataset."""
        df = pd.DataFrame(dict(domain=self.domains, dataset=self.datasets, image=self.image_ids, cls=self.class_keys))
        return (
            df.groupby(["domain", "dataset"], sort=False)
            .agg(images=("image", "nunique"), patches=("image", "size"), classes=("cls", "nunique"))
            .reset_index()
        )


def collect_domain_features(
    ctx: Any,
    domains: Mapping[str, Sequence[str]],
    n_images: int = 8,
    max_per_class: int = 200,
    seed: int = 0,
    purity: float = 0.75,
    preset: str = "segearth-ov",
) -> DomainFeatures:
    """:func:`collect_class_features` of every dataset of every domain (``{"Remote Sensing": [...], ...}``),
    loading CLIP once. The context's ``limit`` restricts each dataset to its first images."""
    parts, clip = [], None
    for domain, names in domains.items():
        for name in names:
            cfg = ctx.config(preset, name, upsampler="none")  # CLIP features only: no upsampler is read
            clip = clip or create_clip(cfg.backbone, cfg.pretrained, resolve_device(cfg.device))
            f, c, im = collect_class_features(
                ctx, name, None, n_images, max_per_class, seed, purity, preset, clip, getattr(ctx, "limit", None)
            )
            names_ = np.asarray(load_manifest(name).class_names, dtype=object)
            parts.append(
                (
                    f,
                    c,
                    names_[c],
                    np.full(len(c), name, dtype=object),
                    np.full(len(c), domain, dtype=object),
                    np.char.add(f"{name}/", im.astype(str)),
                )
            )
    if not parts:
        raise InputError("collect_domain_features got no dataset; pass {domain: [dataset, ...]}")
    cols = [np.concatenate(col) for col in zip(*parts, strict=True)]
    return DomainFeatures(
        cols[0], cols[1], cols[2].astype(str), cols[3].astype(str), cols[4].astype(str), cols[5].astype(str)
    )
