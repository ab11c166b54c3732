"""Segmentor configuration: one frozen dataclass, named presets for every method of the study, Table 6.

``build_config(preset, dataset=None, **overrides)`` gives the configuration of a method, optionally with a
dataset's settings (background threshold and index from its manifest, AlignCLIP's α and β from the paper's
Table 6) and any field overridden. A preset with a module switched on is written ``PRESET+sga`` / ``PRESET+cce``
(e.g. ``segearth-ov+sga`` is Table 3's second row).
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
from dataclasses import dataclass, fields
from typing import Any

from alignclip.data import load_manifest
from alignclip.errors import ConfigError
from alignclip.methods import ENCODERS, METHODS
from alignclip.models.backbones import resolve_backbone
from alignclip.ops.attention import ATTENTION_MODES
from alignclip.ops.cce import AFFINITIES
from alignclip.ops.kmeans import KMEANS_INITS

__all__ = [
    "CLS_TERM_TARGETS",
    "GRID_ALIGNS",
    "KMEANS_FEATURES",
    "POS_EMBED_INTERPS",
    "PRECISIONS",
    "PRESETS",
    "SGA_SCOPES",
    "SGA_SOURCES",
    "SMOKE_OVERRIDES",
    "TABLE6",
    "UPSAMPLERS",
    "VFM_FEATURES",
    "VFM_RESOLUTIONS",
    "SegmentorConfig",
    "build_config",
    "check_fields",
    "check_window_batch",
    "field_kinds",
    "tiny_stand_in",
    "list_presets",
    "parse_bool",
    "parse_field_value",
    "parse_preset",
]

log = logging.getLogger(__name__)

UPSAMPLERS = ("jbu_one", "jbu_stack", "none")
SGA_SOURCES = ("patch", "upsampled")
SGA_SCOPES = ("window", "image")
GRID_ALIGNS = ("vfm", "clip")
VFM_RESOLUTIONS = ("window", "native")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
POS_EMBED_INTERPS = ("reference", "size")
KMEANS_FEATURES = ("normalized", "raw")
VFM_FEATURES = ("encoder", "neck")
CLS_TERM_TARGETS = ("fused", "upsampled")


#: Words a bool field takes from text (``--set sga=off``), case-insensitively; nothing else is a bool.
BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def check_window_batch(value: object) -> None:
    """``window_batch`` must be ``"auto"`` or an int >= 1 (one-line :class:`ConfigError` otherwise)."""
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f'window_batch={value!r} is not valid; use "auto" (1 on CPU, 32 on GPU) or an int >= 1')


@dataclass(frozen=True)
class SegmentorConfig:
    """Every setting of the pipeline. Defaults are AlignCLIP-D's (paper Sec. 4.1; see the decisions register)."""

    # --- CLIP backbone (Sec. 3.1)
    backbone: str = "ViT-B-16"  # a named backbone (clip-b16, remoteclip-b32, ...), open_clip name or config JSON
    # "default" (a named backbone's published weights; an open_clip architecture's "openai"), an open_clip tag, a
    # local checkpoint, or "none" (random)
    pretrained: str = "default"
    attention: str = "segearth"  # last-block attention mode (Eq. 2 = "segearth")
    drop_residual: bool = True  # drop the last block's residual and FFN (the baseline's ignore_residual)
    # Gaussian std (patches) of the naclip mode: 1.0 as SegEarth-OV's code runs NACLIP for Table 2 (NACLIP's paper: 5)
    naclip_std: float = 1.0
    # position embeddings of a patch grid other than 14x14: "reference" bicubic with scale (n + 0.1) / 14 as
    # SegEarth-OV's code, or "size": bicubic to exactly n x n (other sample positions)
    pos_embed_interp: str = "reference"
    cls_token_lambda: float = -0.3  # global-bias alleviation: logits += λ · sim(CLS, T); 0 disables it
    # --- text (Sec. 3.1, A.2)
    templates: str = "remote-sensing"  # "openai", "remote-sensing" or a file with one template per line
    # --- sliding window (Sec. 4.1)
    long_side: int | None = 448  # resize so the long side is this (None: keep the input size)
    crop: int = 224
    stride: int = 112
    # windows per forward: "auto" = 1 on CPU (faster and lighter there), 32 on CUDA or any other accelerator
    # (resolved by alignclip.pipeline.runtime.resolve_window_batch), or an int >= 1
    window_batch: int | str = "auto"
    # --- upsampler (Sec. 3.4)
    upsampler: str = "jbu_one"  # "jbu_one", "jbu_stack" or "none"
    upsampler_ckpt: str | None = None  # checkpoint path; "none" = random weights (explicit pipeline check)
    # --- Self-Guided Alignment (Sec. 3.2)
    sga: bool = True
    alpha: float = 0.3  # balance ratio of Eq. 7 (Table 6 per dataset)
    top_n: int = 1  # prototypes averaged per text embedding (Fig. 4)
    sga_source: str = "patch"  # prototypes from "patch" features P or "upsampled" features
    sga_scope: str = "window"  # prototypes searched per "window" or over the whole "image"
    sga_cls_term: bool = True  # the CLS bias term uses the aligned embeddings T' (else the original T)
    sga_prototype_norm: bool = True  # L2-normalise patches before averaging them into prototypes (False: Algorithm 1)
    # --- Cluster-Constrained Enhancement (Sec. 3.3)
    cce: bool = True
    vfm: str = "dino_vitb16"  # "dino_vitb16", "dino_vitb8", "sam_vitb", "tiny"
    vfm_pretrained: str = "default"  # "default" (timm tag via the HF cache), a local file, or "none"
    n_clusters: int = 3  # K_c of Eq. 9
    kmeans_iters: int = 30
    kmeans_init: int = 4  # restarts
    kmeans_seeding: str = "random"  # initial centroids: "random" distinct patches or "kmeans++"
    kmeans_features: str = "normalized"  # cluster "normalized" (cosine geometry) or "raw" VFM features
    # A of Eq. 11: VFM last-layer "attention", "cosine" similarity of features (clamped >= 0), or their raw
    # "product" F Fᵀ (Algorithm 2 as written)
    affinity: str = "attention"
    affinity_power: float = 1.0  # Norm(Â^p) in Eq. 12 (1 = as written; PSA-style propagation uses 8)
    vfm_features: str = "encoder"  # SAM: last "encoder" block tokens (768-d) or after the "neck" (256-d)
    grid_align: str = "vfm"  # propagate on the "vfm" grid (CLIP logits resized to it) or the "clip" grid
    # VFM input per window: the window's own "window" size (SAM 14x14 grid at 224) or the VFM's "native" training
    # size where it has one (SAM 1024², 64x64 grid; DINO has none: same as "window"); grid_align="clip" overrides it
    vfm_resolution: str = "window"
    beta: float = 0.3  # fusion weight of Eq. 14 (Table 6 per dataset)
    # where the CLS bias term goes with CCE on: the "fused" logits (λ), or S_up only before Eq. 14 (λ(1 − β) after it)
    cls_term_target: str = "fused"
    # --- post-processing
    logit_scale: float = 50.0
    prob_thd: float = 0.0  # below this max probability a pixel becomes bg_idx
    bg_idx: int = 0
    # --- a method's own dense-feature step (alignclip.methods.base.Encoder); "clip": dense_features + attention
    encoder: str = "clip"
    encoder_vfm: str = "none"  # the method's own VFM (ProxyCLIP, CASS): a VFM name, timm name or JSON file
    encoder_vfm_pretrained: str = "default"  # as vfm_pretrained
    # --- method fields, one block per method, each field prefixed with the method's name
    # --- GEM (alignclip.methods.gem)
    # last blocks carrying the self-self path (authors' gem_depth=7: range(1, 7) = the last 6 of any ViT; a ViT with
    # fewer blocks has it on all of them)
    gem_layers: int = 6
    gem_iters: int = 1  # self-self iterations before the assignment to v (authors' ss_attn_iter: 1)
    # fixed inverse temperature of the self-self softmax (authors' ss_attn_temp); None: GEM's adaptive one,
    # mean token norm after ln_1 times head_dim^-0.5, per window (authors' default)
    gem_inv_temp: float | None = None
    gem_sga_source: str = "gem"  # SGA's prototypes (+sga) from the "gem" path (the patch features) or the "original"
    gem_cls_source: str = "gem"  # CLS features of the CLS term from the "gem" path's CLS token or the "original" ViT's
    # position embeddings of grids other than 14x14: the "authors'" bicubic with antialias to the exact grid, or the
    # "shared" pos_embed_interp (no effect on 224 windows)
    gem_pos_embed: str = "authors"
    # --- SC-CLIP (alignclip.methods.sc_clip)
    sc_clip_lof_neighbors: int = 30  # k of the local outlier factor over block L-1's patches (authors' code: 30)
    sc_clip_lof_contamination: float = 0.05  # anomalies: LOF above its 1 - c quantile per window (authors: 0.05)
    # block outputs by 0-based index over blocks 1..L-1 (the authors' pre/post_adjust_idx, multi_start/end_idx):
    sc_clip_pre_adjust_idx: int = 8  # S_mid: aggregates block L-1's patches, drives the last attention (8 = block 9)
    sc_clip_post_adjust_idx: int = 3  # S_post: aggregates the last block's outputs (authors: 3 = block 4)
    sc_clip_multi_start_idx: int = 3  # multi-level fusion sums block outputs [start, end) (authors: 3, 10 =
    sc_clip_multi_end_idx: int = 10  # blocks 4-10)
    sc_clip_res_cls: float = 0.3  # weight of the CLS token added to the last block's attention output (authors: 0.3)
    sc_clip_beta: float = 0.4  # similarities below this are zeroed before each aggregation (authors' beta: 0.4)
    sc_clip_attn_temp: float = 3.0  # scale of the centred S_mid in the last block's attention (authors: 3.0)
    # SGA's prototypes (PRESET+sga): "fused" output (the returned features), "last"-block path or "multi"-level path
    sc_clip_sga_source: str = "fused"
    # --- ResCLIP (alignclip.methods.resclip)
    resclip_rcs: bool = True  # RCS: middle blocks' q-k attention mixed into the last block's (authors' use_rcs)
    resclip_rcs_start: int = 5  # RCS averages blocks [start, end), 0-based (authors: range(5, 9) = blocks 6-9)
    resclip_rcs_end: int = 9
    resclip_rcs_tau: float = 2.0  # τ_rcs, scale of the mixed attention weights (attn_rcs_weights[0]: 2.0 everywhere)
    resclip_rcs_lambda: float = 0.2  # λ_rcs, weight of the middle blocks' attention (their Cityscapes config: 0.2)
    resclip_sfr: bool = True  # SFR: a first pass's segmentation refines the last block's attention (use_sfr)
    resclip_sfr_tau: float = 2.1  # τ_sfr, scale of the mixed k-k logits (attn_sfr_weights[0]; Cityscapes: 2.1)
    resclip_sfr_lambda: float = 0.6  # λ_sfr, weight of the same-label matrix (attn_sfr_weights[1]; Cityscapes: 0.6)
    resclip_temp_thd: float = 0.1  # first-pass pixels below this max probability become query 0 (Cityscapes: 0.10)
    resclip_delete_same_entity: bool = True  # decay same-label pairs not joined by a straight path (all configs: on)
    resclip_std: float = 5.0  # Gaussian std (patches) of the NACLIP bias and of SFR's row smoothing (README: 5)
    resclip_pamr_steps: int = 10  # PAMR iterations on the first pass's logits (their code: 10, dilations 8 and 16)
    resclip_sfr_fp16: bool = True  # round the normalised SFR matrix to float16 as their code does (False: keep fp32)
    resclip_sga_source: str = "final"  # SGA's prototypes (+sga): "final" (second-pass) or "first"-pass patch features
    # --- ProxyCLIP (alignclip.methods.proxyclip)
    proxyclip_beta: float = 1.2  # β: proxy attention masked where F̂F̂ᵀ < β·mean (the authors' code: 1.2)
    proxyclip_gamma: float = 3.0  # γ: scale of the normalised similarities before the softmax (their code: 3.0)
    # --- CASS (alignclip.methods.cass)
    cass_k_eigen: int = 20  # eigenvalues per head compared in the spectral head matching (their k_eigen: 20)
    cass_rank: int = 10  # eigenpairs kept of the VFM graph (their svd_lowrank q: 10, optimal_q always stops there)
    cass_eigenscaling: bool = True  # dynamic eigenscaling of the kept eigenvalues (their code: on but VOC20/Cityscapes)
    cass_lowrank_solver: str = "eigh"  # "eigh" exact top eigenpairs, or "randomized" (their torch.svd_lowrank)
    cass_scale_factor: float = 10.0  # γ: weight of the distilled VFM graph against CLIP's (their scale_factor: 10)
    cass_gaussian_std: float = 5.0  # std (patches) of the Gaussian bias added to the mixed graph (their default: 5)
    cass_vfm_input: str = "authors"  # VFM input: "authors" (their uint8 de-normalisation round trip) or "plain"
    cass_vfm_half: bool = True  # cast the VFM keys to fp16 before their graph, as their dino_attn.half()
    cass_text_weight: float = 0.04  # mean_vector_weight of the object-presence text (their Context-59/60: 0.04)
    cass_cluster_threshold: float = 0.09  # Ward cut of the class clusters (their Context-59/60 h_threshold: 0.09)
    cass_top_k: int = 2  # patches averaged into a class's object vector (their topk k: 2)
    cass_global_scope: str = "image"  # CLS of the global term: the whole "image"'s (theirs), or each "window"'s
    # --- CorrCLIP (alignclip.methods.corrclip; region masks from alignclip.models.masks)
    corrclip_mask_generator: str = "sam2"  # "sam2" (theirs: SAM 2's automatic masks) or "tiny" (test stand-in)
    corrclip_sam2_config: str = "configs/sam2/sam2_hiera_l.yaml"  # build_sam2's config (theirs: sam2_hiera_l.yaml)
    corrclip_sam2_checkpoint: str = "sam2_hiera_large.pt"  # local SAM 2 checkpoint file (theirs: Hiera-L)
    corrclip_points_per_side: int = 8  # SAM 2 generator's point grid (their code: 8)
    corrclip_pred_iou_thresh: float = 0.4  # SAM 2 generator's predicted-IoU threshold (their code: 0.4)
    corrclip_stability_score_thresh: float = 0.4  # SAM 2 generator's stability threshold (their code: 0.4)
    corrclip_mask_scope: str = "image"  # masks of the whole "image" cropped per window (theirs) or each "window"'s
    corrclip_mask_cache: bool = True  # keep SAM 2's label map per image on disk (<cache root>/masks/)
    corrclip_max_regions: int = 128  # static region slots per window (ranks beyond share the last; SAM 2 gives <= 66)
    corrclip_merge_eps: float = 0.2  # mask merging: DBSCAN radius on 1 - cosine of region means (their EPS: 0.2)
    corrclip_tau: float = 4.0  # temperature of the region-restricted DINO correlations (their TAU: 4)
    corrclip_spatial_weight: float = 1.0  # weight of the spatial branch (their ALPHA: 1.0)
    corrclip_semantic_weight: float = 0.5  # weight of the semantic (region-token) branch (their BETA: 0.5)
    corrclip_spatial_layers: int | None = None  # middle blocks averaged by the spatial branch (None: 5 of 12, theirs)
    corrclip_map_correction: bool = True  # majority class inside each mask after the argmax (their map correction)
    # --- Trident (alignclip.methods.trident); its DINO is encoder_vfm (their torch.hub dino_vitb16)
    trident_sam: str = "sam_vitb"  # SAM whose last attention aggregates the spliced map (their sam_model_type: vit_b)
    trident_sam_pretrained: str = "default"  # as vfm_pretrained (their sam_vit_b_01ec64.pth is timm's samvit_b sa1b)
    trident_beta: float = 1.2  # β of the proxy attention, masked below β·mean over all windows (their beta: 1.2)
    trident_gamma: float = 3.0  # γ, scale of the proxy attention's similarities (their gamma: 3.0)
    trident_cos_fac: float = (
        1.2  # SAM attention kept where the values' cosine > cos_fac × its mean (their cos_fac: 1.2)
    )
    trident_refine_neg_cos: bool = True  # keep negative thresholds as they are (theirs: True); False: 0.6 instead
    # --- runtime
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # "auto" (fp16 on CUDA, fp32 on CPU), "fp32", "fp16", "bf16"
    seed: int = 0  # K-Means initialisation

    def __post_init__(self) -> None:
        _check_types(self)
        _choice("attention", self.attention, ATTENTION_MODES)
        _choice("upsampler", self.upsampler, UPSAMPLERS)
        _choice("sga_source", self.sga_source, SGA_SOURCES)
        _choice("sga_scope", self.sga_scope, SGA_SCOPES)
        _choice("affinity", self.affinity, AFFINITIES)
        _choice("pos_embed_interp", self.pos_embed_interp, POS_EMBED_INTERPS)
        _choice("kmeans_seeding", self.kmeans_seeding, KMEANS_INITS)
        _choice("kmeans_features", self.kmeans_features, KMEANS_FEATURES)
        _choice("vfm_features", self.vfm_features, VFM_FEATURES)
        _choice("cls_term_target", self.cls_term_target, CLS_TERM_TARGETS)
        _choice("grid_align", self.grid_align, GRID_ALIGNS)
        _choice("vfm_resolution", self.vfm_resolution, VFM_RESOLUTIONS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("encoder", self.encoder, tuple(ENCODERS))
        for encoder in ENCODERS.values():  # each method checks its own fields
            if encoder is not None and encoder.check is not None:
                encoder.check(self)
        if self.encoder != "clip" and ENCODERS[self.encoder].uses_vfm and self.encoder_vfm == "none":
            raise ConfigError(f"encoder {self.encoder!r} needs a VFM: set encoder_vfm (e.g. dino_vitb8)")
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name}={v} is outside [0, 1]; set {name} to a value between 0 and 1")
        if not self.affinity_power > 0:
            raise ConfigError(f"affinity_power={self.affinity_power} must be > 0 (1 = Eq. 12 as written)")
        if not self.naclip_std > 0:
            raise ConfigError(f"naclip_std={self.naclip_std} must be > 0 (patches; 1.0 as SegEarth-OV, 5 as NACLIP)")
        if not 0.0 <= self.prob_thd <= 1.0:
            raise ConfigError(f"prob_thd={self.prob_thd} is outside [0, 1]")
        check_window_batch(self.window_batch)
        for name in ("n_clusters", "top_n", "crop", "stride", "kmeans_iters", "kmeans_init"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.stride > self.crop:
            raise ConfigError(f"stride={self.stride} > crop={self.crop} leaves pixels uncovered; use stride <= crop")
        if self.long_side is not None and self.long_side < 16:
            raise ConfigError(f"long_side={self.long_side} is too small; use >= 16 or None to keep the size")
        if self.bg_idx < 0:
            raise ConfigError(f"bg_idx={self.bg_idx} must be a class index >= 0")

    def replace(self, **overrides: Any) -> SegmentorConfig:
        """A copy with fields overridden (unknown names raise ConfigError listing the fields)."""
        check_fields(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of {', '.join(valid)}")


def check_fields(overrides: dict[str, Any]) -> None:
    names = {f.name for f in fields(SegmentorConfig)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ConfigError(f"unknown config field(s) {', '.join(bad)}; valid fields: {', '.join(sorted(names))}")


def field_kinds() -> dict[str, tuple[str, ...]]:
    """``{field: kinds}`` of :class:`SegmentorConfig` from its annotations, e.g. ``long_side: ("int", "None")``."""
    return {f.name: tuple(k.strip() for k in str(f.type).split("|")) for f in fields(SegmentorConfig)}


_KIND_WORDS = {"bool": "a bool (True or False)", "int": "an int", "float": "a number", "str": "a str", "None": "None"}


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "None":
        return value is None
    if kind == "bool":  # numpy bools are not numbers.Integral, Python's bool is
        return isinstance(value, bool) or (getattr(value, "dtype", None) is not None and value.dtype.kind == "b")
    if isinstance(value, bool):
        return False  # True is an int to Python, not to a config
    if kind == "int":
        return isinstance(value, numbers.Integral)
    if kind == "float":
        return isinstance(value, numbers.Real)
    return isinstance(value, str | os.PathLike)


def _check_types(config: SegmentorConfig) -> None:
    """One-line :class:`ConfigError` for a value of the wrong Python type (``sga="off"``, ``n_clusters=2.5``)."""
    for name, kinds in field_kinds().items():
        value = getattr(config, name)
        if name == "window_batch":
            check_window_batch(value)  # its message names the valid values ("auto" or an int >= 1)
            continue
        if not any(_kind_ok(k, value) for k in kinds):
            expected = " or ".join(_KIND_WORDS.get(k, k) for k in kinds)
            raise ConfigError(
                f"{name}={value!r} is a {type(value).__name__}; {name} takes {expected} "
                f"(default {getattr(SegmentorConfig, name)!r})"
            )
        if isinstance(value, os.PathLike):  # a pathlib.Path for a path field is kept as its str (JSON, hashes)
            object.__setattr__(config, name, os.fspath(value))


def parse_bool(text: str) -> bool:
    """``true/false, 1/0, yes/no, on/off`` (any case) → bool; anything else raises a one-line ConfigError."""
    word = text.strip().lower()
    if word not in BOOL_WORDS:
        raise ConfigError(f"{text!r} is not a bool; use true/false, 1/0, yes/no or on/off")
    return BOOL_WORDS[word]


def parse_field_value(name: str, text: str) -> Any:
    """The text of a ``KEY=VALUE`` override parsed with the type of :class:`SegmentorConfig` field ``name``.

    bool: :func:`parse_bool`; int and float: Python's syntax; ``X | None``: ``none``/``null`` give None, except for
    fields that also take a str, where ``none`` is that str (``upsampler_ckpt=none``: random weights) and only ``null``
    is None; ``int | str`` (``window_batch``): an int, else the text. Choices and ranges are checked by the config.

    Raises:
        ConfigError: an unknown field, or text that is not of the field's type (one line, naming the field).
    """
    check_fields({name: text})
    kinds = field_kinds()[name]
    word = text.strip()
    low = word.lower()
    if "None" in kinds and (low == "null" or (low == "none" and "str" not in kinds)):
        return None
    for kind in kinds:
        try:
            if kind == "bool":
                return parse_bool(word)
            if kind == "int":
                return int(word)
            if kind == "float":
                return float(word)
        except (ConfigError, ValueError):
            continue
        if kind == "str":
            return word
    words = {"bool": "a bool (true/false, 1/0, yes/no or on/off)", "None": "null" if "str" in kinds else "none"}
    expected = " or ".join(words.get(k, _KIND_WORDS.get(k, k)) for k in kinds)
    default = getattr(SegmentorConfig, name)
    example = str(default).lower() if isinstance(default, bool) or default is None else default
    raise ConfigError(f"{name}={text!r} is not {expected}; e.g. {name}={example}")


#: Named presets (field overrides of the defaults), one per method of :mod:`alignclip.methods`: baselines follow the
#: SegEarth-OV paper's protocol for them (same windows and templates, no upsampler, no CLS term).
PRESETS: dict[str, dict[str, Any]] = {name: dict(method.settings) for name, method in METHODS.items()}

#: Paper Table 6 (α, β per dataset and variant).
TABLE6: dict[str, dict[str, dict[str, float]]] = {
    "alignclip-d": {
        "alpha": dict(
            openearthmap=0.1, loveda=0.7, isaid=0.5, potsdam=0.3, vaihingen=0.3, uavid=0.2, udd5=0.3, vdd=0.2
        ),
        "beta": dict(openearthmap=0.1, loveda=0.2, isaid=0.2, potsdam=0.1, vaihingen=0.5, uavid=0.3, udd5=0.2, vdd=0.3),
    },
    "alignclip-s": {
        "alpha": dict(
            openearthmap=0.1, loveda=0.5, isaid=0.5, potsdam=0.3, vaihingen=0.3, uavid=0.2, udd5=0.3, vdd=0.2
        ),
        "beta": dict(openearthmap=0.1, loveda=0.2, isaid=0.2, potsdam=0.2, vaihingen=0.5, uavid=0.4, udd5=0.2, vdd=0.4),
    },
}

#: Smoke profile: the tiny random CLIP, random upsampler and tiny VFM (pipeline checks on CPU, no downloads).
SMOKE_OVERRIDES: dict[str, Any] = dict(
    backbone="tiny",
    pretrained="none",
    upsampler_ckpt="none",
    vfm="tiny",
    vfm_pretrained="none",
    device="cpu",
    corrclip_mask_generator="tiny",  # CorrCLIP's regions from the deterministic stand-in (no SAM 2 weights)
)


def tiny_stand_in(vfm: str) -> str:
    """The tiny random VFM standing in for ``vfm`` in the smoke profile: the same family and patch size where one
    exists (``tiny_sam``; ``tiny_dinov2_b14`` for DINOv2 and patch 14; ``tiny_dino_b8`` for patch 8, else
    ``tiny_dino_b16``)."""
    name = vfm.lower()
    if name.startswith("tiny"):
        return vfm
    if "sam" in name:
        return "tiny_sam"
    if "dinov2" in name or "patch14" in name:
        return "tiny_dinov2_b14"
    return "tiny_dino_b8" if ("patch8" in name or name.endswith("8")) else "tiny_dino_b16"


def list_presets() -> list[str]:
    return list(PRESETS)


def parse_preset(name: str) -> tuple[str, dict[str, Any]]:
    """Split ``PRESET+sga+cce`` into the base preset and its field overrides."""
    base, *switches = name.strip().lower().split("+")
    if base not in PRESETS:
        raise ConfigError(f"unknown preset {base!r}; choose one of {', '.join(PRESETS)} (optionally +sga / +cce)")
    over = dict(PRESETS[base])
    for s in switches:
        if s not in ("sga", "cce"):
            raise ConfigError(f"unknown preset switch +{s} in {name!r}; valid switches: +sga, +cce")
        over[s] = True
    return base, over


def build_config(
    preset: str = "alignclip-d", dataset: str | None = None, smoke: bool = False, **overrides: Any
) -> SegmentorConfig:
    """Configuration of a method, with a dataset's settings and explicit overrides (in that order of priority).

    Args:
        preset: a name of :data:`PRESETS`, optionally with ``+sga`` / ``+cce``.
        dataset: a dataset name with a manifest (sets ``prob_thd`` and ``bg_idx``; for AlignCLIP variants also
            α and β from Table 6, the α/β of AlignCLIP-D for a ``+sga``/``+cce`` ablation of another preset, except
            α of a method with a ``plugin_alpha``: SGA plugged into it takes that α, 0.1 as the paper's A.5).
        smoke: apply :data:`SMOKE_OVERRIDES` (tiny random models) before ``overrides``.
        overrides: any :class:`SegmentorConfig` field.
    """
    check_fields(overrides)
    base, fields_ = parse_preset(preset)
    if dataset is not None:
        manifest = load_manifest(dataset)
        fields_.update(prob_thd=float(manifest.prob_thd), bg_idx=int(manifest.bg_idx))
        variant = base if base in TABLE6 else "alignclip-d"
        key = manifest.name.lower()
        if key in TABLE6[variant]["alpha"]:
            fields_.update(alpha=TABLE6[variant]["alpha"][key], beta=TABLE6[variant]["beta"][key])
    plugin_alpha = METHODS[base].plugin_alpha
    if fields_.get("sga") and base not in TABLE6 and plugin_alpha is not None:
        fields_.update(alpha=plugin_alpha)  # SGA plugged into another method: the paper's A.5 α
    if smoke:
        sam = str(fields_.get("vfm", SegmentorConfig.vfm)).startswith("sam")
        fields_.update(SMOKE_OVERRIDES, vfm="tiny_sam" if sam else "tiny")  # tiny stand-in of the same family
        encoder_vfm = str(fields_.get("encoder_vfm", SegmentorConfig.encoder_vfm))
        if encoder_vfm != "none":
            fields_.update(encoder_vfm=tiny_stand_in(encoder_vfm), encoder_vfm_pretrained="none")
        if fields_.get("encoder") == "trident":  # Trident's second VFM (its SAM): the tiny stand-in as well
            sam_name = str(fields_.get("trident_sam", SegmentorConfig.trident_sam))
            fields_.update(trident_sam=tiny_stand_in(sam_name), trident_sam_pretrained="none")
    fields_.update(overrides)
    named = resolve_backbone(str(fields_.get("backbone", SegmentorConfig.backbone)))
    upsampler = fields_.get("upsampler", SegmentorConfig.upsampler)
    if (
        named is not None
        and not named.jbu
        and upsampler != "none"
        and not {"upsampler", "upsampler_ckpt"} & set(overrides)
    ):
        log.warning(
            "%s has no JBU upsampler checkpoint (SegEarth-OV's was trained on CLIP ViT-B/16 features): running it "
            "without one (upsampler=none); pass --upsampler-ckpt FILE trained for its features to use one",
            named.label,
        )
        fields_["upsampler"] = "none"
    return SegmentorConfig(**fields_)
