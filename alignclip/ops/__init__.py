"""Layer 1, pure tensor maths: attention modes (Eq. 2), SGA (Eq. 5-8), CCE (Eq. 9-12), fusion (Eq. 14), K-Means,
sliding windows, JBU operations, resizing, post-processing (Eq. 15) and the dense-CRF maths.

Modules: ``attention``, ``sga``, ``cce``, ``kmeans``, ``windows``, ``jbu``, ``resize``, ``postprocess``, ``crf``.
Nothing here loads a model, reads a file or knows a configuration."""

__all__: list[str] = []
