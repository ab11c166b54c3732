"""What each open choice of the decisions register changes (notebook 12): our default against its alternative.

Every :class:`Decision` names a register entry (``book/decisions.md``), the preset whose setting it changes and the
configuration overrides of the alternative. :func:`decision_runs` builds both runs on every dataset (the default run
is the preset's plain run, shared with the other notebooks through the runs cache), :func:`decision_effects` gives
the paired bootstrap of ``alternative - default`` per dataset and on average (:func:`alignclip.study.gains.
paired_deltas`, the one implementation of paired gains), and :func:`plot_decision_forest` draws the averages with
their intervals, so a reader sees which choices move the numbers and by how much.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from alignclip.errors import ConfigError
from alignclip.kinds import labelled
from alignclip.study.context import StudyContext
from alignclip.study.gains import AVG, paired_deltas
from alignclip.study.runs import Run, grid_runs

__all__ = [
    "DECISIONS",
    "FULL_ONLY",
    "Decision",
    "decision_label",
    "decision_runs",
    "decision_effects",
    "decision_table",
    "plot_decision_forest",
    "select_decisions",
]


@dataclass(frozen=True)
class Decision:
    """One open choice: register entry ``key`` (``"D2"``), the preset it is measured on, the alternative's overrides."""

    key: str
    question: str
    preset: str
    alternative: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``"D2 affinity=product"``: the register entry and the alternative."""
        return f"{self.key} " + ", ".join(f"{k}={v}" for k, v in self.alternative.items())


#: Every register entry with a configuration switch, in register order (one row of notebook 12 each).
DECISIONS: list[Decision] = [
    Decision("D2", "affinity of Eq. 11: Algorithm 2's raw F Fᵀ", "alignclip-d", {"affinity": "product"}),
    Decision("D2", "affinity of Eq. 11: clamped cosine similarity", "alignclip-d", {"affinity": "cosine"}),
    Decision("D3", "K-Means on raw VFM features", "alignclip-d", {"kmeans_features": "raw"}),
    Decision("D4", "SGA prototypes from the upsampled features", "alignclip-d", {"sga_source": "upsampled"}),
    Decision("D5", "SGA prototypes over the whole image", "alignclip-d", {"sga_scope": "image"}),
    Decision("D7", "raw (un-normalised) SGA prototypes, Algorithm 1", "alignclip-d", {"sga_prototype_norm": False}),
    Decision("D8", "CLS term with the original T", "alignclip-d", {"sga_cls_term": False}),
    Decision("D9", "CLS term on S_up only (λ(1 − β))", "alignclip-d", {"cls_term_target": "upsampled"}),
    Decision("D10", "DINO ViT-B/8 instead of B/16", "alignclip-d", {"vfm": "dino_vitb8"}),
    Decision("D11", "CCE on CLIP's grid", "alignclip-d", {"grid_align": "clip"}),
    Decision("D12", "SAM at its native 1024²", "alignclip-s", {"vfm_resolution": "native"}),
    Decision("D13", "OpenAI templates for AlignCLIP", "alignclip-d", {"templates": "openai"}),
    Decision("D14", "remote-sensing templates for the +SGA row", "segearth-ov+sga", {"templates": "remote-sensing"}),
    Decision("D16", "baseline's last block with residual and FFN", "segearth-ov", {"drop_residual": False}),
    Decision("D19", "k-means++ seeding", "alignclip-d", {"kmeans_seeding": "kmeans++"}),
    Decision("D20", "SAM features after the neck", "alignclip-s", {"vfm_features": "neck"}),
    Decision("D29", "position embeddings resized to the grid", "segearth-ov", {"pos_embed_interp": "size"}),
    Decision("D30", "NACLIP's own Gaussian std (5)", "naclip", {"naclip_std": 5.0}),
    Decision("D31", "propagation with the affinity to the 8th power", "alignclip-d", {"affinity_power": 8.0}),
]
#: Alternatives that build a real-size model even in the smoke profile (no tiny stand-in of DINO B/8 exists): left
#: out of the smoke default (they run, only slowly on a CPU).
FULL_ONLY = ("D10",)


def select_decisions(keys: Sequence[str] | None, smoke: bool) -> list[Decision]:
    """The decisions of ``keys`` (register entries such as ``"D2"``; None = all, or all but :data:`FULL_ONLY` in
    the smoke profile); unknown keys raise one line listing the valid ones."""
    known = list(dict.fromkeys(d.key for d in DECISIONS))
    if keys is None:
        return [d for d in DECISIONS if not (smoke and d.key in FULL_ONLY)]
    bad = [k for k in keys if k not in known]
    if bad:
        raise ConfigError(f"unknown decision(s) {', '.join(bad)}; choose from {', '.join(known)}")
    return [d for d in DECISIONS if d.key in keys]


def decision_label(decision: Decision) -> str:
    """The run label of a decision's alternative: ``"alignclip-d D2 affinity=product"``."""
    return f"{decision.preset} {decision.name}"


def decision_runs(ctx: StudyContext, decisions: Sequence[Decision]) -> list[Run]:
    """The default run (the preset's plain run) and the alternative's run of every decision on every dataset."""
    runs: dict[tuple[str, str], Run] = {}
    for d in decisions:
        for run in grid_runs([d.preset], ctx.datasets) + grid_runs(
            [d.preset], ctx.datasets, d.alternative, decision_label(d)
        ):
            runs.setdefault((run.label, run.dataset), run)
    return list(runs.values())


def decision_effects(results: pd.DataFrame, decisions: Sequence[Decision], n_boot: int = 1000) -> pd.DataFrame:
    """``alternative - default`` mIoU per decision and dataset, and averaged over the datasets, with paired 95 %
    bootstrap intervals (:func:`alignclip.study.gains.paired_deltas`; no sign is claimed, so the verdict says
    whether the alternative is better, worse, or not distinguishable from our default).

    Returns:
        ``decision, question, preset, alternative, dataset, delta, ci_low, ci_high, n_images, kind, verdict``.
    """
    frames = []
    for d in decisions:
        pairs = paired_deltas(results, [(d.preset, decision_label(d))], claimed_sign=1, n_boot=n_boot)
        pairs.insert(0, "alternative", d.name.split(" ", 1)[1])
        pairs.insert(0, "preset", d.preset)
        pairs.insert(0, "question", d.question)
        pairs.insert(0, "decision", d.key)
        frames.append(pairs)
    out = pd.concat(frames, ignore_index=True)
    out["verdict"] = out["verdict"].replace({"supported": "alternative better", "contradicted": "alternative worse"})
    return out.drop(columns=["baseline", "method", "p_better"])


def decision_table(effects: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """One row per decision: the average effect as ``"+0.42 [-0.10, +0.95]"`` and each dataset's, for reading."""

    def cell(r: pd.Series) -> str:
        return f"{r['delta']:+.{digits}f} [{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"

    effects = effects.assign(cell=effects.apply(cell, axis=1))
    keys = ["decision", "question", "preset", "alternative"]
    wide = effects.pivot_table(index=keys, columns="dataset", values="cell", aggfunc="first", sort=False)
    cols = [c for c in dict.fromkeys(effects["dataset"]) if c != AVG] + [AVG]
    wide = wide[cols].rename(columns={AVG: "average (95 % CI)"})
    verdict = effects[effects["dataset"] == AVG].set_index(keys)["verdict"]
    return wide.assign(verdict=verdict).reset_index()


def plot_decision_forest(effects: pd.DataFrame, title: str = ""):
    """Forest plot: each decision's average ``alternative - default`` with its 95 % interval (mIoU points)."""
    import matplotlib.pyplot as plt

    avg = effects[effects["dataset"] == AVG].reset_index(drop=True)
    labels = [f"{r['decision']}  {r['question']}" for _, r in avg.iterrows()]
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * len(avg) + 1.4))
    ys = list(range(len(avg)))[::-1]
    ax.errorbar(
        avg["delta"],
        ys,
        xerr=[(avg["delta"] - avg["ci_low"]).clip(lower=0), (avg["ci_high"] - avg["delta"]).clip(lower=0)],
        fmt="o",
        color="#1f77b4",
        ecolor="#555555",
        capsize=3,
    )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(ys, labels, fontsize=9)
    ax.set_xlabel("alternative − our default, mIoU points (mean over datasets, 95 % CI)")
    ax.set_title(labelled(title or "What each open choice changes", avg["kind"]), fontsize=10)
    fig.tight_layout()
    return fig
