"""Layer 7, evaluation: the resumable, multi-process dataset evaluation (``evaluate``, ``crf``), confusion
matrices and IoU maths (``confusion``, ``metrics``), the bootstrap over images (``bootstrap``), the feature
collection of Table 1 (``features``) and the speed and memory benchmark (``bench``, ``probes``)."""

__all__: list[str] = []
