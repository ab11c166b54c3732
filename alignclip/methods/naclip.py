"""NACLIP (Hajimiri et al., WACV 2025): k-k attention with a Gaussian neighbourhood bias over the patch grid."""

from alignclip.methods.base import BASELINE_PROTOCOL, Method

__all__ = ["METHOD"]

METHOD = Method(
    name="naclip",
    paper_name="NACLIP",
    reference="Hajimiri et al., WACV 2025",
    settings=dict(BASELINE_PROTOCOL, attention="naclip"),
    summary="softmax(k kᵀ + G) attention, G a Gaussian of the patch distance (std naclip_std)",
)
