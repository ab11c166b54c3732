"""SCLIP (Wang et al., ECCV 2024): correlative self-attention (q-q plus k-k) in the last block."""

from alignclip.methods.base import BASELINE_PROTOCOL, Method

__all__ = ["METHOD"]

METHOD = Method(
    name="sclip",
    paper_name="SCLIP",
    reference="Wang et al., ECCV 2024",
    settings=dict(BASELINE_PROTOCOL, attention="sclip"),
    summary="softmax(q qᵀ) + softmax(k kᵀ) attention in the last block",
)
