"""SegEarth-OV (Li et al., CVPR 2025): the baseline AlignCLIP builds on (paper Sec. 3.1).

q-q + k-k + v-v attention in the last block (Eq. 2), the JBU feature upsampler and the global-bias alleviation
(a CLS term with λ = -0.3), with OpenAI's ImageNet templates.
"""

from alignclip.methods.base import Method

__all__ = ["METHOD"]

METHOD = Method(
    name="segearth-ov",
    paper_name="SegEarth-OV",
    reference="Li et al., CVPR 2025",
    settings=dict(sga=False, cce=False, templates="openai", upsampler="jbu_one", cls_token_lambda=-0.3),
    summary="Eq. 2 attention, JBU upsampler, CLS bias term; AlignCLIP's modules off",
)
