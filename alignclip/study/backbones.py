"""Beyond the paper: AlignCLIP's two modules across CLIP backbones and CCE's vision foundation models (notebook 13).

The paper tests one CLIP (OpenAI ViT-B/16) and two VFMs. Its argument predicts that Self-Guided Alignment helps
*less* with CLIPs trained on remote-sensing image-text pairs (their text embeddings already sit near remote-sensing
patches) and that Cluster-Constrained Enhancement helps *more* with stronger VFMs. This module builds the runs that
test both (the four module rows of SegEarth-OV on each backbone; CCE with each VFM on CLIP ViT-B/16), their paired
gains, the tables and the figure, and the verdicts on the prediction.

Every row keeps SegEarth-OV's settings (its OpenAI templates, decision D57), so a backbone's gains are the modules'
alone; α and β are AlignCLIP-D's Table 6 values (tuned on CLIP ViT-B/16). Backbones without a JBU checkpoint run
without an upsampler; CLIP ViT-B/16 runs both with its upsampler and without, the row comparable with the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from alignclip.errors import ConfigError
from alignclip.evaluation.bootstrap import classify_gain
from alignclip.kinds import PIPELINE_CHECK, REPRODUCTION, labelled
from alignclip.models.backbones import BACKBONES
from alignclip.models.vfm_builders import resolve_vfm
from alignclip.paper.names import paper_dataset
from alignclip.pipeline.config import tiny_stand_in
from alignclip.study.context import StudyContext, glue_markdown
from alignclip.study.gains import AVG, paired_deltas
from alignclip.study.runs import Run, grid_runs

__all__ = [
    "MODULE_ROWS",
    "STUDY_BACKBONES",
    "STUDY_VFMS",
    "StudyBackbone",
    "backbone_average_table",
    "backbone_gain_table",
    "backbone_gains",
    "backbone_miou_table",
    "backbone_runs",
    "backbone_setup_table",
    "plot_backbone_gains",
    "prediction_summary",
    "prediction_verdicts",
    "study_backbones",
    "study_runs",
    "vfm_gain_table",
    "vfm_gains",
    "vfm_runs",
]

#: The four rows per backbone: SegEarth-OV and its modules switched on (SegEarth-OV's templates in all four).
MODULE_ROWS: dict[str, str] = {
    "baseline": "segearth-ov",
    "+SGA": "segearth-ov+sga",
    "+CCE": "segearth-ov+cce",
    "+SGA+CCE": "segearth-ov+sga+cce",
}
_GAINS = ("+SGA", "+CCE", "+SGA+CCE")

#: CCE's VFMs of the second table (on CLIP ViT-B/16): DINO B/16 (the paper's), DINO B/8, DINOv2 B/14, SAM B.
STUDY_VFMS: tuple[str, ...] = ("dino_vitb16", "dino_vitb8", "dinov2_vitb14_reg", "sam_vitb")
_VFM_LABELS = {
    "dino_vitb16": "DINO ViT-B/16",
    "dino_vitb8": "DINO ViT-B/8",
    "dinov2_vitb14_reg": "DINOv2 ViT-B/14 (registers)",
    "sam_vitb": "SAM ViT-B",
}
_DEFAULT_VFM = "dino_vitb16"


@dataclass(frozen=True)
class StudyBackbone:
    """One backbone of the study: a named backbone and the upsampler it runs with."""

    key: str  # the tables' name
    backbone: str  # a name of alignclip.models.backbones.BACKBONES
    upsampler: str  # "jbu_one" (CLIP ViT-B/16's published JBU) or "none"

    @property
    def spec(self):
        return BACKBONES[self.backbone]


def study_backbones(names: Sequence[str] | None = None) -> list[StudyBackbone]:
    """The study's backbones: every named backbone (``clip-b16`` twice: with its JBU upsampler and without), or
    those of ``names`` (backbone names, or ``clip-b16 (no upsampler)``).

    Raises:
        ConfigError: an unknown name (one line listing the valid ones).
    """
    every = [
        StudyBackbone("clip-b16", "clip-b16", "jbu_one"),
        StudyBackbone("clip-b16 (no upsampler)", "clip-b16", "none"),
    ]
    every += [StudyBackbone(name, name, "none") for name in BACKBONES if name != "clip-b16"]
    if names is None:
        return every
    by_key = {b.key: b for b in every}
    unknown = [n for n in names if n not in by_key]
    if unknown:
        raise ConfigError(f"unknown backbone(s) {', '.join(map(repr, unknown))}; choose from {', '.join(by_key)}")
    return [by_key[n] for n in names]


STUDY_BACKBONES: tuple[str, ...] = tuple(b.key for b in study_backbones())
_ENTRIES: dict[str, StudyBackbone] = {b.key: b for b in study_backbones()}
_Z95 = 1.959964  # two-sided 95 % normal quantile
_PREDICTION = {
    "supported": "supports the prediction",
    "contradicted": "contradicts the prediction",
    "not distinguishable from zero": "cannot tell (the interval contains zero)",
}


def _backbone_overrides(ctx: StudyContext, entry: StudyBackbone, weights: Mapping[str, str]) -> dict[str, Any]:
    """Config overrides of one backbone in this profile: the stand-in of its patch size in the smoke profile, its
    architecture with random weights in the rehearsal, its published weights (or ``weights[name]``) in full.
    CLIP ViT-B/16 with its upsampler has none: its runs are the other notebooks' SegEarth-OV runs."""
    over: dict[str, Any] = {}
    if entry.backbone != "clip-b16":
        if ctx.is_smoke:
            over["backbone"] = entry.spec.stand_in
        else:
            over["backbone"] = entry.backbone
            if ctx.profile == "full":
                over["pretrained"] = weights.get(entry.backbone, "default")
    if entry.upsampler == "none":
        over["upsampler"] = "none"
    return over


def _label(key: str, row: str) -> str:
    return f"{key} {row}"


def _split(label: str) -> tuple[str, str]:
    key, row = label.rsplit(" ", 1)
    return key, row


def backbone_runs(
    ctx: StudyContext, backbones: Sequence[str] | None = None, weights: Mapping[str, str] | None = None
) -> list[Run]:
    """The four :data:`MODULE_ROWS` of every backbone on every dataset of ``ctx``.

    Args:
        backbones: keys of :func:`study_backbones` (default: all).
        weights: ``{backbone name: checkpoint path}`` for the full profile (default: each one's published weights,
            found as :func:`alignclip.models.backbones.backbone_weights` says).
    """
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(BACKBONES))
    if unknown:
        raise ConfigError(f"backbone_weights names unknown backbone(s) {unknown}; use names of {', '.join(BACKBONES)}")
    runs = []
    for entry in study_backbones(backbones):
        over = _backbone_overrides(ctx, entry, weights)
        for row, preset in MODULE_ROWS.items():
            runs += grid_runs([preset], ctx.datasets, over, label=_label(entry.key, row))
    return runs


def _vfm_overrides(ctx: StudyContext, vfm: str) -> dict[str, Any]:
    if vfm == _DEFAULT_VFM:
        return {}  # the default VFM's runs are the backbone table's CLIP ViT-B/16 runs
    if ctx.is_smoke:
        return {"vfm": tiny_stand_in(vfm), "vfm_pretrained": "none"}
    return {"vfm": vfm}


def vfm_runs(ctx: StudyContext, vfms: Sequence[str] | None = None) -> list[Run]:
    """CCE with each VFM on CLIP ViT-B/16 (with its upsampler): ``+CCE`` and ``+SGA+CCE`` per VFM, with the
    ``baseline`` and ``+SGA`` rows they are compared with (shared with :func:`backbone_runs`)."""
    vfms = list(vfms or STUDY_VFMS)
    for vfm in vfms:
        resolve_vfm(vfm)  # one line for an unknown name, before any run
    runs = grid_runs([MODULE_ROWS["baseline"]], ctx.datasets, label=_label("clip-b16", "baseline"))
    runs += grid_runs([MODULE_ROWS["+SGA"]], ctx.datasets, label=_label("clip-b16", "+SGA"))
    for vfm in vfms:
        over = _vfm_overrides(ctx, vfm)
        key = "clip-b16" if vfm == _DEFAULT_VFM else f"vfm:{vfm}"  # the default VFM's rows: CLIP ViT-B/16's own
        for row in ("+CCE", "+SGA+CCE"):
            runs += grid_runs([MODULE_ROWS[row]], ctx.datasets, over, label=_label(key, row))
    return runs


def study_runs(
    ctx: StudyContext,
    backbones: Sequence[str] | None = None,
    weights: Mapping[str, str] | None = None,
    vfms: Sequence[str] | None = None,
) -> list[Run]:
    """Notebook 13's runs: :func:`backbone_runs` then :func:`vfm_runs`, each (label, dataset) once."""
    runs = {(r.label, r.dataset): r for r in backbone_runs(ctx, backbones, weights) + vfm_runs(ctx, vfms)}
    return list(runs.values())


def backbone_setup_table(ctx: StudyContext, backbones: Sequence[str] | None = None) -> pd.DataFrame:
    """What each backbone is and runs with: its model, whether remote-sensing, the open_clip architecture and patch
    grid of a 224² window, the upsampler, and the weights of this profile (the tiny stand-in in the smoke profile)."""
    rows = []
    for entry in study_backbones(backbones):
        spec = entry.spec
        grid = 224 // spec.patch_size
        if ctx.is_smoke:
            weights = f"random, tiny stand-in {spec.stand_in}"
        elif ctx.profile == "rehearsal":
            weights = "random"
        else:
            weights = spec.tag or spec.file_hint
        rows.append(
            dict(
                backbone=entry.key,
                model=spec.label,
                remote_sensing="yes" if spec.remote_sensing else "no",
                architecture=f"{spec.arch} ({grid}×{grid})",
                upsampler=entry.upsampler,
                weights=weights,
            )
        )
    return pd.DataFrame(rows)


def backbone_average_table(results: pd.DataFrame) -> pd.DataFrame:
    """Average mIoU (%) over the datasets: one row per backbone, one column per :data:`MODULE_ROWS` row."""
    avg = backbone_miou_table(results)[AVG].unstack("row")
    return avg[[r for r in MODULE_ROWS if r in avg.columns]].loc[list(dict.fromkeys(avg.index))]


def backbone_miou_table(results: pd.DataFrame) -> pd.DataFrame:
    """mIoU (%) per backbone and row (rows) and dataset (columns, then ``Avg.``) of :func:`backbone_runs`."""
    df = results[~results["label"].str.startswith("vfm:")].copy()
    df[["backbone", "row"]] = pd.DataFrame([_split(label) for label in df["label"]], index=df.index)
    df["dataset"] = [paper_dataset(d) for d in df["dataset"]]
    wide = df.pivot_table(index=["backbone", "row"], columns="dataset", values="miou", sort=False)
    wide[AVG] = wide.mean(axis=1)
    order = [(b, r) for b in dict.fromkeys(df["backbone"]) for r in MODULE_ROWS if (b, r) in wide.index]
    return wide.loc[order]


def _with_columns(gains: pd.DataFrame, kind: str) -> pd.DataFrame:
    out = gains.copy()
    out[kind] = [_split(m)[0] for m in out["method"]]
    out["module"] = [_split(m)[1] for m in out["method"]]
    return out


def backbone_gains(results: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Each module's gain over its backbone's baseline, per dataset and on average (``Avg.``), paired bootstrap over
    images: :func:`~alignclip.study.gains.paired_deltas` rows with ``backbone`` and ``module`` columns."""
    labels = [label for label in dict.fromkeys(results["label"]) if not label.startswith("vfm:")]
    keys = list(dict.fromkeys(_split(label)[0] for label in labels))
    pairs = [(_label(k, "baseline"), _label(k, r)) for k in keys for r in _GAINS if _label(k, r) in labels]
    return _with_columns(paired_deltas(results, pairs, n_boot=n_boot), "backbone")


def vfm_gains(results: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """CCE's gain with each VFM: ``+CCE`` over the baseline and ``+SGA+CCE`` over ``+SGA`` (CLIP ViT-B/16), per
    dataset and on average; the default VFM's rows are the backbone table's."""
    labels = set(results["label"])
    pairs = []
    for vfm in STUDY_VFMS:
        key = "clip-b16" if vfm == _DEFAULT_VFM else f"vfm:{vfm}"
        for base, row in (("baseline", "+CCE"), ("+SGA", "+SGA+CCE")):
            if _label(key, row) in labels:
                pairs.append((_label("clip-b16", base), _label(key, row)))
    gains = paired_deltas(results, pairs, n_boot=n_boot)
    gains["vfm"] = [_DEFAULT_VFM if _split(m)[0] == "clip-b16" else _split(m)[0][4:] for m in gains["method"]]
    gains["module"] = ["CCE" if _split(m)[1] == "+CCE" else "CCE after SGA" for m in gains["method"]]
    return gains


def _ci(delta: float, low: float, high: float) -> str:
    if any(map(math.isnan, (delta, low, high))):
        return ""
    return f"{delta:+.2f} [{low:+.2f}, {high:+.2f}]"


def backbone_gain_table(gains: pd.DataFrame) -> pd.DataFrame:
    """One row per backbone: the average gain of each module with its 95 % interval (mIoU points)."""
    avg = gains[gains["dataset"] == AVG]
    rows = []
    for key in dict.fromkeys(avg["backbone"]):
        sub = avg[avg["backbone"] == key].set_index("module")
        row = {"backbone": key, "remote_sensing": "yes" if _ENTRIES[key].spec.remote_sensing else "no"}
        for module in _GAINS:
            r = sub.loc[module] if module in sub.index else None
            row[f"gain {module}"] = "" if r is None else _ci(r["delta"], r["ci_low"], r["ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def vfm_gain_table(gains: pd.DataFrame) -> pd.DataFrame:
    """One row per VFM: CCE's average gain (over the baseline, and after SGA) with its 95 % interval."""
    avg = gains[gains["dataset"] == AVG]
    rows = []
    for vfm in dict.fromkeys(avg["vfm"]):
        sub = avg[avg["vfm"] == vfm].set_index("module")
        row = {"VFM": _VFM_LABELS.get(vfm, vfm), "patch": resolve_patch(vfm)}
        for module in ("CCE", "CCE after SGA"):
            r = sub.loc[module] if module in sub.index else None
            row[f"gain {module}"] = "" if r is None else _ci(r["delta"], r["ci_low"], r["ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def resolve_patch(vfm: str) -> int | None:
    """The patch side of a VFM name, read from its timm tag or architecture (None when the name does not say)."""
    spec = resolve_vfm(vfm)
    if spec.args.get("patch_size"):
        return int(spec.args["patch_size"])
    tag = spec.timm_tag or vfm
    for part in tag.replace(".", "_").split("_"):
        if part.startswith("patch") and part[5:].isdigit():
            return int(part[5:])
    return None


def plot_backbone_gains(gains: pd.DataFrame, title: str = ""):
    """Each module's average gain (points, 95 % interval) against the backbone; remote-sensing CLIPs shaded."""
    import matplotlib.pyplot as plt

    avg = gains[gains["dataset"] == AVG]
    keys = list(dict.fromkeys(avg["backbone"]))
    fig, ax = plt.subplots(figsize=(min(13.0, 1.0 * len(keys) + 3), 4.2))
    width = 0.25
    for i, key in enumerate(keys):
        if _ENTRIES[key].spec.remote_sensing:
            ax.axvspan(i - 0.5, i + 0.5, color="0.92", zorder=0)
    colours = dict(zip(_GAINS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for j, module in enumerate(_GAINS):
        sub = avg[avg["module"] == module].set_index("backbone").reindex(keys)
        xs = np.arange(len(keys)) + (j - 1) * width
        # a percentile interval need not hold the point (one image per dataset, an mIoU over pooled counts): clip
        yerr = np.vstack([sub["delta"] - sub["ci_low"], sub["ci_high"] - sub["delta"]]).clip(min=0)
        ax.errorbar(xs, sub["delta"], yerr=yerr, fmt="o", color=colours[module], capsize=3, label=module[1:])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax.set_ylabel("mIoU gain over the baseline (points, 95% CI)")
    ax.legend(fontsize=8, title="module", title_fontsize=8)
    kind = REPRODUCTION if set(avg["kind"]) == {REPRODUCTION} else PIPELINE_CHECK
    ax.set_title(labelled(title or "module gains per backbone (shaded: remote-sensing CLIPs)", kind))
    fig.tight_layout()
    return fig


def _se(rows: pd.DataFrame | pd.Series):
    """Standard error(s) from 95 % intervals (normal approximation)."""
    return (rows["ci_high"] - rows["ci_low"]) / (2 * _Z95)


def _group_difference(avg: pd.DataFrame, module: str) -> tuple[float, float, float, int, int] | None:
    """Mean gain of ``module`` with remote-sensing CLIPs minus with general CLIPs, and a 95 % interval (normal
    approximation from each backbone's own interval), or None without both groups."""
    sub = avg[avg["module"] == module]
    present = set(sub["backbone"])
    rs = [k for k, b in _ENTRIES.items() if b.spec.remote_sensing and k in present]
    # general CLIPs without an upsampler, as the remote-sensing ones run
    general = [k for k, b in _ENTRIES.items() if not b.spec.remote_sensing and b.upsampler == "none" and k in present]
    if not rs or not general:
        return None
    by = sub.set_index("backbone")
    se = _se(by)

    def mean_se(keys):
        return float(by.loc[keys, "delta"].mean()), float(np.sqrt((se.loc[keys] ** 2).sum()) / len(keys))

    m_rs, s_rs = mean_se(rs)
    m_g, s_g = mean_se(general)
    diff, s = m_rs - m_g, math.hypot(s_rs, s_g)
    return diff, diff - _Z95 * s, diff + _Z95 * s, len(rs), len(general)


def prediction_verdicts(gains: pd.DataFrame, vfm: pd.DataFrame | None = None) -> list[str]:
    """The prediction, tested: one sentence each on SGA across backbones (a smaller gain with remote-sensing CLIPs)
    and CCE across VFMs (a larger gain with DINOv2), judged by :func:`classify_gain` on the difference's interval."""
    avg = gains[gains["dataset"] == AVG]
    kinds = set(avg["kind"]) | (set(vfm[vfm["dataset"] == AVG]["kind"]) if vfm is not None else set())
    if kinds != {REPRODUCTION}:
        return [
            "Pipeline check: these runs have random weights (or generated data), so they say nothing about the "
            "prediction; run the full profile to test it."
        ]
    lines = []
    diff = _group_difference(avg, "+SGA")
    if diff is None:
        lines.append("SGA: the runs lack remote-sensing or general CLIPs without an upsampler; no comparison.")
    else:
        d, lo, hi, n_rs, n_g = diff
        lines.append(
            f"SGA's average gain with the {n_rs} remote-sensing CLIPs minus that with the {n_g} general CLIPs is "
            f"{d:+.2f} points (95% interval {lo:+.2f} to {hi:+.2f}, normal approximation): this "
            f"{_PREDICTION[classify_gain((lo, hi), claimed_sign=-1)]}."
        )
    if vfm is not None and len(vfm):
        v = vfm[(vfm["dataset"] == AVG) & (vfm["module"] == "CCE")].set_index("vfm")
        if {_DEFAULT_VFM, "dinov2_vitb14_reg"} <= set(v.index):
            base, new = v.loc[_DEFAULT_VFM], v.loc["dinov2_vitb14_reg"]
            se = math.hypot(_se(base), _se(new))
            d = float(new["delta"] - base["delta"])
            lo, hi = d - _Z95 * se, d + _Z95 * se
            lines.append(
                f"CCE's average gain with DINOv2 ViT-B/14 minus that with DINO ViT-B/16 is {d:+.2f} points "
                f"(95% interval {lo:+.2f} to {hi:+.2f}, normal approximation): this "
                f"{_PREDICTION[classify_gain((lo, hi), claimed_sign=1)]}."
            )
    return lines


def prediction_summary(gains: pd.DataFrame, vfm: pd.DataFrame | None = None):
    """:func:`prediction_verdicts` as a Markdown list, also glued as ``prediction`` for the notebook's summary."""
    from IPython.display import Markdown

    text = Markdown("\n".join(f"- {line}" for line in prediction_verdicts(gains, vfm)))
    glue_markdown("prediction", text)
    return text
