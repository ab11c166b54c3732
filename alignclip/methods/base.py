"""What a method of the paper's tables is to this package: a named set of pipeline settings.

A :class:`Method` names a row of the paper's tables and the :class:`~alignclip.pipeline.config.SegmentorConfig`
fields that make the shared pipeline (sliding windows, CLIP, text embeddings, upsampler, post-processing) run it.
Every method can take AlignCLIP's modules as switches (``PRESET+sga``, ``PRESET+cce``). A method whose features
need code of its own keeps that code in its module here as an :class:`Encoder`, selected by the configuration field
``encoder`` (its preset sets it); simpler ones select an attention mode of :mod:`alignclip.ops.attention`.

An encoder replaces CLIP's dense-feature step of each window (``Segmentor._encode``): it gets the CLIP-normalised
padded windows and an :class:`EncoderContext` (CLIP, the method's own VFM, the configuration, the text embeddings)
and returns patch features ``[B, D, h, w]`` (on CLIP's patch grid) and CLS features ``[B, D]``. Everything after
it is the shared pipeline: SGA (from these patch features), cosine logits, the upsampler, CCE, the CLS term and
the sliding-window average. A method that also changes the text per window (CASS) gives ``adjust_text``. A method
whose windows are its own business (Trident: spliced into one map and aggregated over the image) gives
``encode_image`` (whole-image features) instead; one that needs a VFM besides ``encoder_vfm`` names it in
``extra_vfms`` (the context holds it in ``vfms``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from alignclip.models.clip import ClipBundle

__all__ = ["BASELINE_PROTOCOL", "IMAGE_CONTEXT_SIDE", "PLUGIN_ALPHA", "Encoder", "EncoderContext", "Method"]

#: Settings under which the SegEarth-OV paper (and so Table 2) runs the training-free CLIP baselines: the same
#: windows and OpenAI templates, no upsampler, no CLS term, no AlignCLIP module.
BASELINE_PROTOCOL: Mapping[str, Any] = dict(
    sga=False, cce=False, templates="openai", upsampler="none", cls_token_lambda=0.0
)

#: Longest side of the whole image an encoder may see (:attr:`EncoderContext.image`): a larger tile is downsampled to
#: it, so memory stays bounded (448, the protocol's processing size, is well inside).
IMAGE_CONTEXT_SIDE = 896

#: α of Eq. 7 when SGA is plugged into another method (``PRESET+sga``): the paper's A.5 uses 0.1 for every host.
PLUGIN_ALPHA = 0.1


@dataclass
class EncoderContext:
    """What an :class:`Encoder` may read besides the windows.

    Attributes:
        clip: the CLIP backbone (``clip.model.visual`` is open_clip's ``VisionTransformer``).
        vfm: the method's own vision foundation model (:class:`alignclip.models.vfm.VFM`, built from the
            configuration's ``encoder_vfm``), or None when the method has none. CCE's VFM is separate.
        config: the :class:`~alignclip.pipeline.config.SegmentorConfig` (its method fields included).
        text: ``[Q, D]`` L2-normalised, template-averaged text embeddings of the queries (before SGA).
        image: ``() -> [1, 3, H, W]``, the whole CLIP-normalised image being segmented (at the processing size; a
            tile whose long side exceeds :data:`IMAGE_CONTEXT_SIDE` is downsampled to it), computed on demand; a new
            callable per image, so an encoder may cache what it derives from it by the callable's identity (CASS's
            image-level CLS). None outside :meth:`~alignclip.pipeline.segmentor.Segmentor.predict`.
        vfms: the further VFMs the encoder names in :attr:`Encoder.extra_vfms`, by their keys (Trident's SAM), built
            once per segmentor through :func:`~alignclip.models.vfm.create_vfm`; empty when it names none.
    """

    clip: ClipBundle
    vfm: Any
    config: Any
    text: torch.Tensor
    image: Callable[[], torch.Tensor] | None = None
    vfms: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Encoder:
    """A method's own dense-feature step (see the module docstring).

    Attributes:
        encode: ``(ctx, windows [B, 3, H, W]) -> (patch [B, D, H/p, W/p], cls [B, D])``; H and W are multiples of
            CLIP's patch size p. No host reads (``.item()``, ``.cpu()``, Python numbers from tensors) inside. It may
            return a third tensor ``[B, D, H/p, W/p]`` (or None): the patch features SGA takes its prototypes from
            when they are not ``patch`` (a method with several feature paths; its choice is a switch of its own).
        adjust_text: optional ``(ctx, patch [B, D, h, w], cls [B, D], text [B, Q, D]) -> [B, Q, D]``, applied to
            the text embeddings per window after SGA, with the patch and CLS features ``encode`` gave (None: the
            text is left as it is).
        check: optional ``(config) -> None`` raising a one-line ConfigError for a bad value of the method's fields.
        uses_vfm: whether the method needs ``encoder_vfm`` (a preset's default names one).
        correct_labels: optional ``(ctx, labels [H0, W0] int array) -> labels``, applied to the final label map of
            :meth:`~alignclip.pipeline.segmentor.Segmentor.predict` (CorrCLIP's map correction); host reads allowed.
        extra_vfms: optional ``(config) -> {key: (vfm name, pretrained)}``, VFMs the method needs besides
            ``encoder_vfm`` (Trident's SAM); the segmentor builds each once and gives it as ``ctx.vfms[key]``.
        encode_image: optional ``(ctx) -> [1, D, h, w]``, features of the whole image (``ctx.image()``) on a grid
            covering it, for a method whose windows are its own business (Trident splices them into one map and
            aggregates it over the image). When given, the pipeline runs no windows through ``encode``: it takes the
            cosine logits of these features (with SGA, over the image's features, when on) and resizes them bilinearly
            to the image; the per-window stages (upsampler, CCE, CLS term) do not apply (``check`` rejects them). No
            host reads inside.
        prepare: optional ``(config, device) -> None``, called once when the segmentor is built: builds what the
            method needs besides its VFMs (CorrCLIP's mask generator), so a missing package or file stops there, in
            one line, before any image is read.
        uses_boxes: ``encode`` takes a third argument, the windows' boxes ``[B, 4]`` (y1, y2, x1, x2 in the
            processing-size image, before padding): where each window lies (CorrCLIP crops the whole image's masks).
        stages: ``(stage, owner, attribute)`` of the method's own costly steps, for
            :meth:`~alignclip.pipeline.segmentor.Segmentor.instrumented` to time them apart (CorrCLIP's mask
            generation: ``("masks", its module, "generate_masks")``; a module's function is put back afterwards).
    """

    encode: Callable[[EncoderContext, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    adjust_text: Callable[[EncoderContext, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    check: Callable[[Any], None] | None = None
    uses_vfm: bool = False
    correct_labels: Callable[[EncoderContext, Any], Any] | None = None
    extra_vfms: Callable[[Any], Mapping[str, tuple[str, str]]] | None = None
    encode_image: Callable[[EncoderContext], torch.Tensor] | None = None
    stages: tuple[tuple[str, Any, str], ...] = ()
    uses_boxes: bool = False
    prepare: Callable[[Any, torch.device], None] | None = None


@dataclass(frozen=True)
class Method:
    """One method of the paper's tables.

    Args:
        name: the preset name (``alignclip segment --preset NAME``).
        paper_name: its row name in the paper's tables (Table 2 unless it appears elsewhere only).
        reference: where it comes from (authors, venue).
        settings: the configuration fields that define it (overrides of the defaults).
        summary: one line on what it changes.
        encoder: the method's own dense-feature step, registered under ``settings["encoder"]`` (None: CLIP's
            dense features with the configured attention mode).
        plugin_alpha: α of ``PRESET+sga`` (the paper's plug-in study, A.5: :data:`PLUGIN_ALPHA`); None: the α of
            AlignCLIP-D's Table 6 for the dataset (SegEarth-OV + SGA is Table 3's AlignCLIP ablation).
    """

    name: str
    paper_name: str
    reference: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    encoder: Encoder | None = None
    plugin_alpha: float | None = None
