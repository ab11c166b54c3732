"""2-D feature maps (paper Fig. 1c, Fig. 5), class separability, and the figures of Table 1's analysis.

Builds on :mod:`alignclip.study.analysis` (features and the intra-class similarity protocol): ``embed_domains`` maps a
seeded sample of each domain's patches to 2-D with t-SNE and UMAP, ``separability`` gives one number per dataset
(silhouette of the class labels in the original feature space), and the plot helpers return matplotlib figures.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from alignclip.errors import InputError
from alignclip.kinds import kind_of, labelled
from alignclip.paper.tables import load_table
from alignclip.study.analysis import EMBED_METHODS, DomainFeatures, embed_2d

_METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}
__all__ = ["embed_domains", "plot_embeddings", "plot_similarity_distributions", "separability"]


def _pick_classes(label: np.ndarray, datasets: np.ndarray, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` classes to colour, spread over datasets: the largest class of every dataset, then the second
    largest of every dataset, ... (ties in size broken by a seeded random order)."""
    df = pd.DataFrame(dict(label=label, dataset=datasets)).value_counts().rename("size").reset_index()
    df["tie"] = rng.permutation(len(df))
    df = df.sort_values(["dataset", "size", "tie"], ascending=[True, False, True])
    df["rank"] = df.groupby("dataset").cumcount()
    return df.sort_values(["rank", "size", "tie"], ascending=[True, False, True])["label"].head(n).tolist()


def embed_domains(
    features: DomainFeatures,
    methods: Sequence[str] = EMBED_METHODS,
    max_points: int = 600,
    top_classes: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """2-D maps of each domain (a seeded sample of ``max_points`` patches, one map per method).

    Returns:
        One row per point and method: ``domain, method, x, y, cls`` where ``cls`` is ``"name (dataset)"`` for
        ``top_classes`` classes of the domain (:func:`_pick_classes`) and ``"other"`` for the rest.
    """
    frames = []
    for d in dict.fromkeys(features.domains):
        sub = features.domain(d)
        rng = np.random.default_rng([seed, zlib.crc32(d.encode())])
        if len(sub.feats) > max_points:
            sub = sub.select(np.sort(rng.choice(len(sub.feats), max_points, replace=False)))
        label = np.char.add(np.char.add(np.char.add(sub.class_names, " ("), sub.datasets), ")")
        top = _pick_classes(label, sub.datasets, top_classes, rng)
        label = np.where(np.isin(label, top), label, "other")
        for method in methods:
            xy = embed_2d(sub.feats, method, seed)
            frames.append(pd.DataFrame(dict(domain=d, method=method, x=xy[:, 0], y=xy[:, 1], cls=label)))
    return pd.concat(frames, ignore_index=True)


def separability(features: DomainFeatures, max_points: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Silhouette score of the class labels in the original feature space (cosine), per dataset.

    Classes are separable and compact when the score is high (range -1..1). Computed per dataset (classes are
    per dataset), on a seeded sample of at most ``max_points`` patches; NaN when a dataset has < 2 classes.

    Returns:
        ``domain, dataset, patches, classes, silhouette``.
    """
    from sklearn.metrics import silhouette_score

    rows = []
    for domain, name in dict.fromkeys(zip(features.domains, features.datasets, strict=True)):
        sub = features.select((features.datasets == name) & (features.domains == domain))
        n_cls = len(np.unique(sub.class_ids))
        score = float("nan")
        if 2 <= n_cls < len(sub.feats):
            score = float(
                silhouette_score(
                    sub.feats,
                    sub.class_ids,
                    metric="cosine",
                    sample_size=min(max_points, len(sub.feats)),
                    random_state=seed,
                )
            )
        rows.append(dict(domain=domain, dataset=name, patches=len(sub.feats), classes=n_cls, silhouette=score))
    return pd.DataFrame(rows)


def plot_similarity_distributions(
    sims: Mapping[str, Mapping[str, Any]],
    title: str = "",
    pipeline_check: bool = False,
    max_values: int = 20000,
    seed: int = 0,
):
    """Violins of the pooled intra-class similarities per domain (ours; the paper's mean ± std as black bars),
    and a box plot of the per-class mean similarities.

    Args:
        sims: ``{domain: intra_class_similarity(...)}``.
        max_values: seeded sample of pair similarities per domain drawn in the violins.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not sims:
        raise InputError("plot_similarity_distributions got no domain; pass {domain: intra_class_similarity()}")
    rng = np.random.default_rng(seed)
    pairs, classes = [], []
    for domain, res in sims.items():
        v = res["values"]
        v = v[np.sort(rng.choice(len(v), max_values, replace=False))] if len(v) > max_values else v
        pairs.append(pd.DataFrame(dict(domain=domain, similarity=v)))
        classes.append(
            pd.DataFrame(dict(domain=domain, similarity=[c["mean"] for c in res["per_class"].values() if c["n_pairs"]]))
        )
    pairs, classes = pd.concat(pairs, ignore_index=True), pd.concat(classes, ignore_index=True)
    order = list(sims)
    paper = load_table("table1_intra_class_similarity").set_index("domain")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw=dict(width_ratios=[3, 2]))
    sns.violinplot(
        data=pairs, x="domain", y="similarity", hue="domain", order=order, cut=0, inner="quartile", ax=ax1, legend=False
    )
    for x, domain in enumerate(order):
        if domain in paper.index:
            m, s = float(paper.loc[domain, "similarity_mean"]), float(paper.loc[domain, "similarity_std"])
            ax1.errorbar(
                x + 0.3, m, yerr=s, fmt="o", color="black", capsize=4, label="paper mean ± std" if x == 0 else None
            )
    ax1.set(title="pair similarities (ours) vs paper", xlabel="", ylabel="cosine similarity of same-class pairs")
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(loc="lower left")
    sns.boxplot(
        data=classes, x="domain", y="similarity", hue="domain", order=order, ax=ax2, legend=False, showfliers=False
    )
    sns.stripplot(data=classes, x="domain", y="similarity", order=order, color="black", size=3, ax=ax2)
    ax2.set(title="per-class mean similarity", xlabel="", ylabel="mean cosine similarity")
    fig.suptitle(labelled(title or "Intra-class feature similarity (Table 1)", kind_of(pipeline_check)))
    fig.tight_layout()
    return fig


def plot_embeddings(maps: pd.DataFrame, title: str = "", pipeline_check: bool = False):
    """Scatter of :func:`embed_domains` output: one row of panels per method, one column per domain, points
    coloured by class (grey: the smaller classes)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if maps.empty:
        raise InputError("plot_embeddings got an empty table; pass the output of embed_domains")
    methods, domains = list(dict.fromkeys(maps["method"])), list(dict.fromkeys(maps["domain"]))
    fig, axes = plt.subplots(len(methods), len(domains), figsize=(6 * len(domains), 4.6 * len(methods)), squeeze=False)
    for r, method in enumerate(methods):
        for c, domain in enumerate(domains):
            ax = axes[r][c]
            sub = maps[(maps["method"] == method) & (maps["domain"] == domain)]
            other = sub[sub["cls"] == "other"]
            ax.scatter(other["x"], other["y"], s=6, c="#cccccc", label="other" if len(other) else None)
            named = sub[sub["cls"] != "other"].sort_values("cls")
            sns.scatterplot(data=named, x="x", y="y", hue="cls", s=12, ax=ax, palette="tab10", linewidth=0)
            name = _METHOD_NAMES.get(method, method)
            ax.set(
                title=f"{domain} — {name} ({len(sub)} patches)",
                xlabel=f"{name} 1",
                ylabel=f"{name} 2",
                xticks=[],
                yticks=[],
            )
            ax.legend(fontsize=7, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(labelled(title or "CLIP patch features by class (Fig. 1c / Fig. 5)", kind_of(pipeline_check)))
    fig.tight_layout()
    return fig
