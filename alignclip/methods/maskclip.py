"""MaskCLIP (Zhou et al., ECCV 2022): the last block's attention replaced by the identity (each token its own value)."""

from alignclip.methods.base import BASELINE_PROTOCOL, Method

__all__ = ["METHOD"]

METHOD = Method(
    name="maskclip",
    paper_name="MaskCLIP",
    reference="Zhou et al., ECCV 2022",
    settings=dict(BASELINE_PROTOCOL, attention="maskclip"),
    summary="value embeddings only in the last block, residual and FFN dropped",
)
