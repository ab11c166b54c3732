"""Layer 6, the pipeline: the configuration and its presets (``config``), runtime resolution and the model and
text caches (``runtime``), the segmentor (``segmentor``) and dense CRF on its predictions (``crf``)."""

__all__: list[str] = []
