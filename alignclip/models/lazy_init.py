"""Building a model whose every weight is loaded next, without drawing random initial weights first.

open_clip and timm initialise every parameter when a model is built (normal, truncated-normal, Kaiming draws: ~2 s
for CLIP ViT-B/16, more for a timm ViT on a 2-core CPU), then a checkpoint overwrites them all. Within
:func:`skip_weight_init` the initialisers leave the freshly allocated tensors as they are, so a model is only
allocated. Use it only around builds followed by a strict load (every parameter and persistent buffer from the file);
buffers that a model computes itself (attention masks, position tables) are built by plain tensor operations, which
this does not touch.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch

__all__ = ["INITIALISERS", "skip_weight_init"]

#: The ``torch.nn.init`` functions made no-ops within :func:`skip_weight_init`.
INITIALISERS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


def _keep(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def skip_weight_init() -> Iterator[None]:
    """Within the block, ``torch.nn.init``'s initialisers (and timm's truncated normal) return their tensor
    unchanged; everything is restored on exit, also after an error."""
    targets: list[tuple[object, str]] = [(torch.nn.init, name) for name in INITIALISERS]
    originals = {getattr(torch.nn.init, name) for name in INITIALISERS}
    for module in [m for n, m in list(sys.modules.items()) if n.startswith("torch.nn.modules") and m is not None]:
        # modules that imported an initialiser by name (MultiheadAttention's xavier_uniform_, constant_)
        targets += [(module, name) for name in INITIALISERS if getattr(module, name, None) in originals]
    with contextlib.suppress(ImportError):
        import timm.layers.weight_init as timm_init

        targets.append((timm_init, "_trunc_normal_"))  # trunc_normal_, trunc_normal_tf_, lecun_normal_ call it
    saved = [(obj, name, getattr(obj, name)) for obj, name in targets if hasattr(obj, name)]
    try:
        for obj, name, _ in saved:
            setattr(obj, name, _keep)
        yield
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
