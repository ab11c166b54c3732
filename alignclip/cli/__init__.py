"""Layer 10, the command line ``alignclip`` (``main``): shared flags (``args``), ``alignclip bench`` (``bench``) and
the notebook runner (``notebooks``). Commands import what they run on use, so ``alignclip --help`` stays fast."""

__all__: list[str] = []
