"""AlignCLIP (the paper): SegEarth-OV with Self-Guided Alignment and Cluster-Constrained Enhancement.

The two variants differ in the vision foundation model of CCE: DINO ViT-B/16 (AlignCLIP-D) or SAM ViT-B
(AlignCLIP-S). Both use the remote-sensing templates (Sec. 3.1, A.2); every other default is the configuration's.
"""

from alignclip.methods.base import Method

__all__ = ["ALIGNCLIP_D", "ALIGNCLIP_S"]

ALIGNCLIP_D = Method(
    name="alignclip-d",
    paper_name="AlignCLIP-D",
    reference="this paper",
    settings=dict(sga=True, cce=True, vfm="dino_vitb16"),
    summary="SegEarth-OV + SGA (Eq. 5-8) + CCE with DINO ViT-B/16 (Eq. 9-12), fused (Eq. 13-15)",
)
ALIGNCLIP_S = Method(
    name="alignclip-s",
    paper_name="AlignCLIP-S",
    reference="this paper",
    settings=dict(sga=True, cce=True, vfm="sam_vitb"),
    summary="as AlignCLIP-D with SAM ViT-B as the CCE model",
)
