"""Feature analysis of the paper's motivation: intra-class compactness (Table 1) and 2-D maps (Fig. 1c, Fig. 5).

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

from .backbone import ClipBundle, create_clip, dense_features
from .config import SegmentorConfig
from .data import open_dataset
from .errors import InputError
from .imageio import resize_long_side
from .segmentor import resolve_device, resolve_dtype, resolve_window_batch
from .stats import classify_gain
from .windows import extract_windows, pad_to_multiple, window_boxes

IGNORE = 255
EMBED_METHODS = ("tsne", "umap")
#: Our domain names are the row names of the paper's Table 1.
RS_DOMAIN, NATURAL_DOMAIN = "Remote Sensing", "Natural Image"


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


def _image_features(clip: ClipBundle, cfg: SegmentorConfig, image: np.ndarray, label: np.ndarray,
                    device: torch.device, purity: float) -> tuple[np.ndarray, np.ndarray]:
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
    keep = (_owned(boxes[:, 0], h, wh, top, p, gh)[:, :, None]
            & _owned(boxes[:, 2], w, ww, left, p, gw)[:, None, :]).reshape(-1).numpy()
    major, share = _patch_majority(labs, p)
    keep &= (major != IGNORE) & (share >= purity)
    autocast = resolve_dtype(cfg.precision, device)
    feats = []
    batch = resolve_window_batch(cfg.window_batch, device)
    for i in range(0, len(boxes), batch):  # bounded batches of windows
        crops = F.pad(extract_windows(x, boxes[i:i + batch]), (left, right, top, bottom))
        with torch.inference_mode(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            patch, _ = dense_features(clip.model.visual, crops, cfg.attention, cfg.drop_residual, cfg.naclip_std)
        feats.append(F.normalize(patch.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, patch.shape[1]).cpu())
    feats = torch.cat(feats).numpy()
    return feats[keep], major[keep]


def collect_class_features(ctx_or_config: Any, dataset: str, root: str | Path | None = None, n_images: int = 8,
                           max_per_class: int = 200, seed: int = 0, purity: float = 0.75,
                           preset: str = "segearth-ov", clip: ClipBundle | None = None,
                           limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled CLIP patch features of one dataset (the protocol in the module docstring).

    Args:
        ctx_or_config: a :class:`~alignclip.study.StudyContext` (its ``config(preset, dataset)`` and
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
            raise InputError(f"collect_class_features({dataset!r}) with a SegmentorConfig needs root=<dataset "
                             f"folder>; pass root or a StudyContext")
    else:
        cfg = ctx_or_config.config(preset, dataset)
        root = ctx_or_config.dataset_root(dataset) if root is None else root
    if int(max_per_class) < 1 or int(n_images) < 0 or not 0.0 < purity <= 1.0:
        raise InputError(f"need max_per_class >= 1, n_images >= 0 (0 = all) and 0 < purity <= 1, got "
                         f"{max_per_class}, {n_images}, {purity}")
    device = resolve_device(cfg.device)
    clip = clip or create_clip(cfg.backbone, cfg.pretrained, device)
    ds = open_dataset(dataset, root)
    rng = np.random.default_rng([int(seed), zlib.crc32(dataset.encode())])
    pool = len(ds) if not limit else min(len(ds), int(limit))
    picks = np.arange(pool) if n_images in (0, None) or n_images >= pool else \
        np.sort(rng.choice(pool, int(n_images), replace=False))
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
        df = pd.DataFrame(dict(domain=self.domains, dataset=self.datasets, image=self.image_ids,
                               cls=self.class_keys))
        return (df.groupby(["domain", "dataset"], sort=False)
                .agg(images=("image", "nunique"), patches=("image", "size"), classes=("cls", "nunique"))
                .reset_index())


def collect_domain_features(ctx: Any, domains: Mapping[str, Sequence[str]], n_images: int = 8,
                            max_per_class: int = 200, seed: int = 0, purity: float = 0.75,
                            preset: str = "segearth-ov") -> DomainFeatures:
    """:func:`collect_class_features` of every dataset of every domain (``{"Remote Sensing": [...], ...}``),
    loading CLIP once. The context's ``limit`` restricts each dataset to its first images."""
    from .data import load_manifest

    parts, clip = [], None
    for domain, names in domains.items():
        for name in names:
            cfg = ctx.config(preset, name)
            clip = clip or create_clip(cfg.backbone, cfg.pretrained, resolve_device(cfg.device))
            f, c, im = collect_class_features(ctx, name, None, n_images, max_per_class, seed, purity, preset,
                                              clip, getattr(ctx, "limit", None))
            names_ = np.asarray(load_manifest(name).class_names, dtype=object)
            parts.append((f, c, names_[c], np.full(len(c), name, dtype=object),
                          np.full(len(c), domain, dtype=object), np.char.add(f"{name}/", im.astype(str))))
    if not parts:
        raise InputError("collect_domain_features got no dataset; pass {domain: [dataset, ...]}")
    cols = [np.concatenate(col) for col in zip(*parts, strict=True)]
    return DomainFeatures(cols[0], cols[1], cols[2].astype(str), cols[3].astype(str), cols[4].astype(str),
                          cols[5].astype(str))


# ---------------------------------------------------------------- Table 1
def _triu_pairs(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major linear indices ``k`` of the strict upper triangle of an n x n matrix → ``(i, j)``, i < j."""
    total = n * (n - 1) // 2
    rev = total - 1 - k  # index counted from the end: row n-2-r has r+1 entries
    r = ((np.sqrt(8 * rev + 1) - 1) // 2).astype(np.int64)
    r += ((r + 1) * (r + 2) // 2 <= rev).astype(np.int64)  # fix float rounding of the square root
    r -= (r * (r + 1) // 2 > rev).astype(np.int64)
    i = n - 2 - r
    j = n - 1 - (rev - r * (r + 1) // 2)
    return i, j


def intra_class_similarity(feats: np.ndarray, class_ids: np.ndarray, max_pairs_per_class: int | None = None,
                           seed: int = 0) -> dict[str, Any]:
    """Pooled intra-class cosine similarity (our protocol for the paper's Table 1).

    For every class c with n_c >= 2 patches, the cosine similarity of every unordered pair of distinct patches
    (i < j) of c is taken from the Gram matrix of the unit features (one matrix product per class); when a class
    has more than ``max_pairs_per_class`` pairs, a seeded random subset of that many distinct pairs is used
    instead. All pairs of all classes are pooled: the mean and (population) standard deviation are over pairs,
    so large classes weigh more, as one pooled ``#Pairs`` count implies.

    Args:
        feats: ``[M, D]`` features (normalised here).
        class_ids: ``[M]`` class labels (any hashable values; pairs never cross classes).
        max_pairs_per_class: cap on pairs per class (``None`` or 0: all pairs).
        seed: seed of the pair subsets.

    Returns:
        ``{"mean", "std", "n_pairs", "values" [n_pairs] float32, "per_class": {class: {"mean", "n_pairs",
        "n_patches"}}}`` (mean/std NaN when there is no pair).
    """
    feats = np.asarray(feats, dtype=np.float64)
    class_ids = np.asarray(class_ids)
    if feats.ndim != 2 or len(feats) != len(class_ids):
        raise InputError(f"feats must be [M, D] and class_ids [M], got {feats.shape} and {class_ids.shape}")
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    values, per_class = [], {}
    for c in np.unique(class_ids):  # a loop over classes; pairs are matrix products
        f = feats[class_ids == c]
        n = len(f)
        total = n * (n - 1) // 2
        if max_pairs_per_class and total > max_pairs_per_class:
            i, j = _triu_pairs(np.sort(rng.choice(total, int(max_pairs_per_class), replace=False)), n)
            sims = np.einsum("pd,pd->p", f[i], f[j])
        else:
            i, j = np.triu_indices(n, 1)
            sims = (f @ f.T)[i, j]
        values.append(sims)
        key = c.item() if hasattr(c, "item") else c
        per_class[key] = dict(mean=float(sims.mean()) if len(sims) else float("nan"), n_pairs=int(len(sims)),
                              n_patches=int(n))
    values = np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32)
    mean = float(values.astype(np.float64).mean()) if len(values) else float("nan")
    std = float(values.astype(np.float64).std()) if len(values) else float("nan")
    return dict(mean=mean, std=std, n_pairs=int(len(values)), values=values, per_class=per_class)


def domain_similarity(features: DomainFeatures, max_pairs_per_class: int | None = None,
                      seed: int = 0) -> dict[str, dict[str, Any]]:
    """:func:`intra_class_similarity` of each domain (classes per dataset)."""
    out = {}
    for d in dict.fromkeys(features.domains):
        sub = features.domain(d)
        out[d] = intra_class_similarity(sub.feats, sub.class_keys, max_pairs_per_class, seed)
    return out


def table1_comparison(sims: Mapping[str, Mapping[str, Any]], kind: str = "pipeline-check") -> pd.DataFrame:
    """Paper's Table 1 beside ours: ``domain, paper_pairs, paper_mean, paper_std, pairs, mean, std, delta_mean,
    delta_std, kind``."""
    from .paper import load_table

    paper = load_table("table1_intra_class_similarity").set_index("domain")
    rows = []
    for domain, res in sims.items():
        p = paper.loc[domain] if domain in paper.index else None
        pm, ps = (float(p["similarity_mean"]), float(p["similarity_std"])) if p is not None else (None, None)
        rows.append(dict(domain=domain, paper_pairs=None if p is None else int(p["pairs"]), paper_mean=pm,
                         paper_std=ps, pairs=res["n_pairs"], mean=res["mean"], std=res["std"],
                         delta_mean=None if pm is None else res["mean"] - pm,
                         delta_std=None if ps is None else res["std"] - ps, kind=kind))
    return pd.DataFrame(rows)


def _pair_moments(feats: np.ndarray, class_ids: np.ndarray, image_idx: np.ndarray,
                  n_img: int) -> np.ndarray:
    """``[3, n_img, n_img]``: count, sum and sum of squares of same-class pair similarities between images
    (ordered pairs of distinct patches; the diagonal holds within-image pairs)."""
    out = np.zeros((3, n_img, n_img))
    for c in np.unique(class_ids):
        sel = class_ids == c
        f, onehot = feats[sel], np.eye(n_img)[image_idx[sel]]  # [n, D], [n, n_img]
        g = f @ f.T
        np.fill_diagonal(g, 0.0)
        ones = np.ones_like(g)
        np.fill_diagonal(ones, 0.0)
        for k, m in enumerate((ones, g, g * g)):
            out[k] += onehot.T @ m @ onehot
    return out


def bootstrap_domain_gap(features: DomainFeatures, domain_a: str = RS_DOMAIN, domain_b: str = NATURAL_DOMAIN,
                         n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict[str, float]:
    """Bootstrap over images of ``mean_a - mean_b`` and ``std_a - std_b`` of the pooled intra-class similarity.

    Images are resampled with replacement within each dataset (the design draws a fixed number per dataset); a
    pair of distinct patches from images drawn w_a and w_b times counts w_a·w_b times, so each resample's pooled
    moments are ``0.5·wᵀ M w`` with per-image-pair moment matrices M, all resamples at once (no loop over
    pairs). With unit weights this is exactly :func:`intra_class_similarity` with all pairs.

    Returns:
        ``mean_a, mean_b, std_a, std_b, delta_mean, mean_ci_low, mean_ci_high, delta_std, std_ci_low, std_ci_high,
        n_boot``.
    """
    if not isinstance(n_boot, int) or n_boot < 1:
        raise InputError(f"n_boot must be a positive int, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    stats = {}
    for name in (domain_a, domain_b):
        sub = features.domain(name)
        feats = sub.feats / np.maximum(np.linalg.norm(sub.feats, axis=1, keepdims=True), 1e-12)
        images, image_idx = np.unique(sub.image_ids, return_inverse=True)
        moments = _pair_moments(feats.astype(np.float64), sub.class_keys, image_idx, len(images))
        strata = np.array([i.split("/", 1)[0] for i in images])
        weights = np.zeros((n_boot, len(images)))
        for s in np.unique(strata):  # draw images within each dataset
            members = np.flatnonzero(strata == s)
            draws = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
            np.add.at(weights, (np.repeat(np.arange(n_boot), len(members)), draws.ravel()), 1.0)
        weights = np.vstack([np.ones(len(images)), weights])  # row 0: the point estimate
        cnt, s1, s2 = (((weights @ m) * weights).sum(1) for m in moments)  # wᵀ M w per resample
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / cnt
            std = np.sqrt(np.maximum(s2 / cnt - mean ** 2, 0.0))
        stats[name] = (mean, std)
    (ma, sa), (mb, sb) = stats[domain_a], stats[domain_b]
    q = [(1 - ci) / 2, 1 - (1 - ci) / 2]
    dm, ds = ma - mb, sa - sb
    mlo, mhi = np.nanquantile(dm[1:], q)
    slo, shi = np.nanquantile(ds[1:], q)
    return dict(mean_a=float(ma[0]), mean_b=float(mb[0]), std_a=float(sa[0]), std_b=float(sb[0]),
                delta_mean=float(dm[0]), mean_ci_low=float(mlo), mean_ci_high=float(mhi), delta_std=float(ds[0]),
                std_ci_low=float(slo), std_ci_high=float(shi), n_boot=n_boot)


def check_compactness(gap: Mapping[str, float], pipeline_check: bool) -> pd.DataFrame:
    """Verdicts on the paper's claim "remote sensing is more compact": higher mean AND lower std (Table 1)."""
    rows = []
    for stat, sign, lo, hi in (("mean similarity", +1, "mean_ci_low", "mean_ci_high"),
                               ("std of similarity", -1, "std_ci_low", "std_ci_high")):
        key = "mean" if sign > 0 else "std"
        verdict = "pipeline check" if pipeline_check else classify_gain((gap[lo], gap[hi]), claimed_sign=sign)
        rows.append(dict(statistic=stat, claim="RS higher" if sign > 0 else "RS lower",
                         remote_sensing=gap[f"{key}_a"], natural=gap[f"{key}_b"], delta=gap[f"delta_{key}"],
                         ci_low=gap[lo], ci_high=gap[hi], verdict=verdict))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Fig. 1c / Fig. 5
def embed_2d(feats: np.ndarray, method: str = "tsne", seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D map ``[M, 2]`` of features ``[M, D]`` (Fig. 1c / Fig. 5).

    ``tsne``: sklearn t-SNE, ``init="pca"``, fixed ``random_state``, perplexity min(30, (M-1)/3), Euclidean on the
    unit features (monotone in cosine), single-threaded. ``umap``: UMAP with ``random_state=seed`` (hence single-threaded and
    repeatable) on the exact cosine k-NN graph, computed here with one matrix product and handed to UMAP
    (``precomputed_knn``), which skips compiling UMAP's own neighbour search (~6 s of numba JIT per process).
    """
    if method not in EMBED_METHODS:
        raise InputError(f"method={method!r} is not valid; choose one of {', '.join(EMBED_METHODS)}")
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2 or len(feats) < 5:
        raise InputError(f"embed_2d needs [M, D] features with M >= 5, got shape {feats.shape}")
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, (len(feats) - 1) / 3))
        with threadpool_limits(1):  # one OpenMP thread: same map on any machine, and no spin-waiting
            return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(feats)
    import warnings

    import umap

    k = min(n_neighbors, len(feats) - 1)
    dist = np.clip(1.0 - feats @ feats.T, 0.0, 2.0)
    np.fill_diagonal(dist, -1.0)  # each point is its own first neighbour, as UMAP expects
    knn = np.argsort(dist, axis=1, kind="stable")[:, :k]
    knn_dist = np.maximum(np.take_along_axis(dist, knn, 1), 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", "no search index": intended
        model = umap.UMAP(n_components=2, n_neighbors=k, metric="cosine", random_state=seed,
                          force_approximation_algorithm=True, precomputed_knn=(knn, knn_dist, None))
        return model.fit_transform(feats)
