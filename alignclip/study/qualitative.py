"""Qualitative comparison (paper Fig. 3): image | ground truth | the predictions of several methods.

:func:`predict_panels` segments a few seeded-random images of a dataset with every preset;
:func:`plot_panels` draws them with one shared palette (:func:`alignclip.io.images.default_palette`) and a legend of
the classes visible in each row; :func:`accuracy_table` gives each panel's pixel accuracy (the deterministic,
regression-checked output of notebook 11).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from alignclip.data import load_manifest, open_dataset
from alignclip.errors import InputError
from alignclip.evaluation.metrics import pixel_accuracy
from alignclip.io.overlay import colorize, default_palette
from alignclip.kinds import PIPELINE_CHECK, REPRODUCTION, labelled
from alignclip.pipeline.segmentor import Segmentor

__all__ = ["accuracy_table", "class_names_of", "pick_images", "plot_panels", "predict_all_panels", "predict_panels"]


def pick_images(n_available: int, n_images: int, seed: int) -> list[int]:
    """``min(n_images, n_available)`` distinct indices drawn with ``seed``, sorted."""
    if n_images < 1:
        raise InputError(f"n_images={n_images} must be >= 1 (images shown per dataset)")
    if n_available < 1:
        raise InputError("the dataset holds no image; check the data root")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_available, size=min(n_images, n_available), replace=False))


def predict_panels(
    ctx: Any, presets: Sequence[str], dataset: str, n_images: int = 2, seed: int = 0
) -> list[dict[str, Any]]:
    """Segment ``n_images`` seeded-random images of ``dataset`` with every preset.

    Images are drawn from the first ``ctx.limit`` images when the study has a limit. Every segmentor is built
    after ``torch.manual_seed(seed)``, so random stand-in weights (smoke profile) are the same on every run.

    Args:
        ctx: a :class:`alignclip.study.context.StudyContext`.
        presets: preset names (e.g. ``["clearclip", "segearth-ov", "alignclip-d"]``).
        dataset: dataset manifest name.
        n_images: images per dataset.
        seed: seed of the image choice and of random weights.

    Returns:
        One dict per image: ``dataset, image_id, image [H, W, 3] uint8, ground_truth [H, W] (255 = ignore),
        predictions {preset: [H, W]}, pixel_accuracy {preset: %}, kind`` (``"pipeline-check"`` when any model has
        random weights).
    """
    if not presets:
        raise InputError("presets is empty; pass e.g. ['clearclip', 'segearth-ov', 'alignclip-d']")
    manifest = load_manifest(dataset)
    data = open_dataset(dataset, ctx.dataset_root(dataset))
    n_available = len(data) if ctx.limit is None else min(ctx.limit, len(data))
    samples = [data[i] for i in pick_images(n_available, n_images, seed)]
    panels = [
        dict(
            dataset=dataset,
            image_id=s.image_id,
            image=s.image,
            ground_truth=s.label,
            predictions={},
            pixel_accuracy={},
            kind=REPRODUCTION,
        )
        for s in samples
    ]
    for preset in presets:
        torch.manual_seed(seed)
        seg = Segmentor(ctx.config(preset, dataset), list(manifest.classes))
        for panel, sample in zip(panels, samples, strict=True):
            labels = seg.segment(sample.image)
            panel["predictions"][preset] = labels
            panel["pixel_accuracy"][preset] = pixel_accuracy(labels, sample.label)
            if seg.is_random:
                panel["kind"] = PIPELINE_CHECK
    return panels


def predict_all_panels(
    ctx: Any, presets: Sequence[str], datasets: Sequence[str] | None = None, n_images: int = 2, seed: int = 0
) -> list[dict[str, Any]]:
    """:func:`predict_panels` on every dataset (default: the study's), concatenated in dataset order."""
    return [p for d in (datasets or ctx.datasets) for p in predict_panels(ctx, presets, d, n_images, seed)]


def class_names_of(datasets: Sequence[str]) -> dict[str, list[str]]:
    """``{dataset: class names}`` from the manifests (first synonym of each class)."""
    return {d: [c.split(",")[0] for c in load_manifest(d).classes] for d in datasets}


def accuracy_table(panels: Sequence[dict[str, Any]], digits: int = 1) -> pd.DataFrame:
    """Pixel accuracy (%) of every panel: ``dataset, image_id`` then one column per preset (rounded)."""
    rows = [dict(dataset=p["dataset"], image_id=p["image_id"], **p["pixel_accuracy"]) for p in panels]
    return pd.DataFrame(rows).round(digits)


def _names_for(class_names: Sequence[str] | Mapping[str, Sequence[str]], dataset: str) -> list[str]:
    if isinstance(class_names, Mapping):
        if dataset not in class_names:
            raise InputError(
                f"class_names has no entry for dataset {dataset!r} (has {', '.join(class_names)}); "
                f"pass class_names_of(datasets)"
            )
        return list(class_names[dataset])
    return list(class_names)


def plot_panels(
    panels: Sequence[dict[str, Any]],
    class_names: Sequence[str] | Mapping[str, Sequence[str]],
    palette: np.ndarray | None = None,
    title: str = "",
    cell_inches: float = 2.2,
):
    """Grid figure: one row per panel (image | ground truth | one column per preset) with a legend per row.

    Class ``k`` has the same colour in every row and column (``palette[k]``, default
    :func:`alignclip.io.images.default_palette`); ignored pixels (255) are black. Each row's legend lists the classes
    present in its ground truth or predictions (at most 12, the largest first).

    Args:
        panels: :func:`predict_panels` output (any datasets).
        class_names: one list for all panels, or ``{dataset: names}`` (:func:`class_names_of`).
        palette: ``[>= K, 3]`` uint8 colours.
        title: figure title (a PIPELINE CHECK note is added for pipeline-check panels).
        cell_inches: size of one image cell.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.patches import Patch

    if not panels:
        raise InputError("no panels to plot; call predict_panels first")
    presets = list(panels[0]["predictions"])
    cols = ["image", "ground truth", *presets]
    with sns.axes_style("white"):
        fig, axes = plt.subplots(
            len(panels),
            len(cols),
            squeeze=False,
            figsize=(cell_inches * len(cols) + 2.6, cell_inches * len(panels) + 0.6),
        )
    for r, panel in enumerate(panels):
        names = _names_for(class_names, panel["dataset"])
        k = len(names)
        pal = default_palette(max(k, 1)) if palette is None else np.asarray(palette)
        maps = [panel["ground_truth"], *[panel["predictions"][p] for p in presets]]
        for c, ax in enumerate(axes[r]):
            ax.imshow(panel["image"] if c == 0 else colorize(maps[c - 1], k, pal), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=10)
            if c >= 2:
                ax.set_xlabel(f"acc {panel['pixel_accuracy'][presets[c - 2]]:.1f}%", fontsize=8)
        axes[r][0].set_ylabel(f"{panel['dataset']}\n{panel['image_id']}", fontsize=8)
        counts = np.bincount(np.concatenate([m[m < k].ravel().astype(np.int64) for m in maps]), minlength=k)
        shown = [i for i in np.argsort(-counts, kind="stable")[:12] if counts[i] > 0]
        handles = [Patch(facecolor=pal[i] / 255.0, edgecolor="black", linewidth=0.3, label=names[i]) for i in shown]
        axes[r][-1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    fig.suptitle(labelled(title or "qualitative comparison", [p["kind"] for p in panels]), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # keep the title clear of the columns
    return fig
