"""AlignCLIP: training-free open-vocabulary segmentation of remote-sensing images.

The public Python API, loaded on first use (``import alignclip`` itself imports no model code)::

    import alignclip

    seg = alignclip.build_segmentor("alignclip-d", classes=["building", "road", "tree", "water", "background"],
                                    upsampler_ckpt="xclip_jbu_one_million_aid.ckpt")
    image, meta = alignclip.read_image("tile.tif")
    labels = seg.segment(image)  # [H, W] class indices

The layers, lowest first (each imports only from those below it): :mod:`~alignclip.ops` (tensor maths),
:mod:`~alignclip.io` (files and images), :mod:`~alignclip.models` (CLIP, text, upsamplers, VFMs),
:mod:`~alignclip.data` (datasets), :mod:`~alignclip.methods` (the methods of the paper's tables),
:mod:`~alignclip.pipeline` (configuration and the segmentor), :mod:`~alignclip.evaluation` (evaluation, statistics,
benchmark), :mod:`~alignclip.paper` (the paper's tables and audit), :mod:`~alignclip.study` (what the notebooks
call) and :mod:`~alignclip.cli`.
"""

from __future__ import annotations

import importlib
from typing import Any

from alignclip.version import __version__

#: Public name -> the module that defines it.
_API = {
    "AlignCLIPError": "alignclip.errors",
    "ConfigError": "alignclip.errors",
    "InputError": "alignclip.errors",
    "METHODS": "alignclip.methods",
    "PRESETS": "alignclip.pipeline.config",
    "Prediction": "alignclip.pipeline.segmentor",
    "Segmentor": "alignclip.pipeline.segmentor",
    "SegmentorConfig": "alignclip.pipeline.config",
    "bootstrap_miou": "alignclip.evaluation.bootstrap",
    "build_config": "alignclip.pipeline.config",
    "build_segmentor": "alignclip.pipeline.segmentor",
    "evaluate": "alignclip.evaluation.evaluate",
    "list_datasets": "alignclip.data",
    "list_presets": "alignclip.pipeline.config",
    "load_manifest": "alignclip.data",
    "load_result": "alignclip.evaluation.evaluate",
    "open_dataset": "alignclip.data",
    "paired_bootstrap": "alignclip.evaluation.bootstrap",
    "prepare_dataset": "alignclip.data",
    "read_image": "alignclip.io.images",
    "verify_dataset": "alignclip.data",
    "write_mask": "alignclip.io.images",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'alignclip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
