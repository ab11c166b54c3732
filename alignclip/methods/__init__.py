"""The methods of the paper's tables, one module each, in Table 2's row order.

:data:`METHODS` maps each preset name to its :class:`~alignclip.methods.base.Method`; the pipeline's presets
(:data:`alignclip.pipeline.config.PRESETS`) and the paper's row names (:mod:`alignclip.paper.names`) are read from
it. A new method is a new module here whose ``METHOD`` is added to :data:`METHODS`.
"""

from alignclip.methods import (
    cass,
    clearclip,
    clip,
    corrclip,
    gem,
    maskclip,
    naclip,
    proxyclip,
    resclip,
    sc_clip,
    sclip,
    segearth_ov,
    trident,
)
from alignclip.methods.alignclip import ALIGNCLIP_D, ALIGNCLIP_S
from alignclip.methods.base import BASELINE_PROTOCOL, Encoder, EncoderContext, Method

__all__ = ["BASELINE_PROTOCOL", "ENCODERS", "METHODS", "Encoder", "EncoderContext", "Method", "get_method"]

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        clip.METHOD,
        maskclip.METHOD,
        sclip.METHOD,
        gem.METHOD,
        clearclip.METHOD,
        naclip.METHOD,
        resclip.METHOD,
        proxyclip.METHOD,
        cass.METHOD,
        sc_clip.METHOD,
        trident.METHOD,
        corrclip.METHOD,
        segearth_ov.METHOD,
        ALIGNCLIP_D,
        ALIGNCLIP_S,
    )
}

#: ``{encoder name: Encoder}`` of the methods with their own dense-feature step; ``"clip"`` (None) is CLIP's
#: dense features with the configured attention mode.
ENCODERS: dict[str, Encoder | None] = {"clip": None} | {
    m.settings["encoder"]: m.encoder for m in METHODS.values() if m.encoder is not None
}


def get_method(name: str) -> Method:
    """The method registered as ``name`` (a KeyError names the known ones)."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None
