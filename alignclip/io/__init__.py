"""Layer 2, files and images: atomic writes (``files``), image and label reading and writing (``images``), colour
overlays (``overlay``) and run provenance (``provenance``)."""

__all__: list[str] = []
