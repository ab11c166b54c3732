"""CLIP (Radford et al., ICML 2021) as a dense predictor: the original last block, patch tokens against text."""

from alignclip.methods.base import BASELINE_PROTOCOL, Method

__all__ = ["METHOD"]

METHOD = Method(
    name="clip",
    paper_name="CLIP",
    reference="Radford et al., ICML 2021",
    settings=dict(BASELINE_PROTOCOL, attention="vanilla", drop_residual=False),
    summary="the unmodified last block (q-k attention, residual and FFN kept)",
)
