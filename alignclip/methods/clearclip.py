"""ClearCLIP (Lan et al., ECCV 2024): q-q attention, residual and FFN dropped in the last block."""

from alignclip.methods.base import BASELINE_PROTOCOL, Method

__all__ = ["METHOD"]

METHOD = Method(
    name="clearclip",
    paper_name="ClearCLIP",
    reference="Lan et al., ECCV 2024",
    settings=dict(BASELINE_PROTOCOL, attention="clearclip"),
    summary="softmax(q qᵀ) attention in the last block, residual and FFN dropped",
)
