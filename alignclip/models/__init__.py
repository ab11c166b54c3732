"""Layer 3, the models: CLIP through open_clip with the dense-feature path (``clip``), class names and text
embeddings (``text``, ``templates``), the JBU upsamplers (``upsampler``) and the vision foundation models of CCE
(``vfm``, ``vfm_builders``). Every loader stops with one line naming a missing weight file and the fix."""

__all__: list[str] = []
