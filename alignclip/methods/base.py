"""What a method of the paper's tables is to this package: a named set of pipeline settings.

A :class:`Method` names a row of the paper's tables and the :class:`~alignclip.pipeline.config.SegmentorConfig`
fields that make the shared pipeline (sliding windows, CLIP, text embeddings, upsampler, post-processing) run it.
Every method can take AlignCLIP's modules as switches (``PRESET+sga``, ``PRESET+cce``). A method whose features
need code of its own keeps that code in its module here and selects it through its settings, the way the attention
modes of :mod:`alignclip.ops.attention` are selected by ``attention``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BASELINE_PROTOCOL", "Method"]

#: Settings under which the SegEarth-OV paper (and so Table 2) runs the training-free CLIP baselines: the same
#: windows and OpenAI templates, no upsampler, no CLS term, no AlignCLIP module.
BASELINE_PROTOCOL: Mapping[str, Any] = dict(
    sga=False, cce=False, templates="openai", upsampler="none", cls_token_lambda=0.0
)


@dataclass(frozen=True)
class Method:
    """One method of the paper's tables.

    Args:
        name: the preset name (``alignclip segment --preset NAME``).
        paper_name: its row name in the paper's tables (Table 2 unless it appears elsewhere only).
        reference: where it comes from (authors, venue).
        settings: the configuration fields that define it (overrides of the defaults).
        summary: one line on what it changes.
    """

    name: str
    paper_name: str
    reference: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
