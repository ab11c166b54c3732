"""Prompt template sets used to build text embeddings (paper Sec. 3.2, Appendix A.2).

Each template is a ``str.format`` string with exactly one ``{}`` where the class name goes. A query
embedding is the mean of the L2-normalised text embeddings over all templates of a set, normalised
again (computed elsewhere; this module only supplies the strings).

Two sets ship with the package:

* ``"openai"``: the 80 ImageNet templates of CLIP, as shipped by open_clip
  (``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES``). SegEarth-OV uses these.
* ``"remote-sensing"``: 80 templates for aerial, satellite and UAV imagery. The paper publishes five
  of its 80 (Table 5); those five are included verbatim, the other 75 are written for this project
  in the same spirit (image quality, resolution, viewpoint, sensor and scale variations).

A path to a text file with one template per line also works (see :func:`get_templates`).
"""

from __future__ import annotations

from pathlib import Path

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from alignclip.errors import ConfigError, InputError

__all__ = [
    "OPENAI_TEMPLATES",
    "PAPER_TABLE5_TEMPLATES",
    "REMOTE_SENSING_TEMPLATES",
    "TEMPLATE_SETS",
    "get_templates",
]

#: The 80 OpenAI ImageNet templates rendered as format strings (each callable called with "{}").
OPENAI_TEMPLATES: list[str] = [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]

#: The five remote-sensing templates published in the paper's Table 5 ("[class]" -> "{}").
PAPER_TABLE5_TEMPLATES: list[str] = [
    "a low-quality aerial image of {}.",
    "a cropped remote sensing image of {}.",
    "a remote sensing interpretation map of {}.",
    "a satellite image containing hardly recognizable {}.",
    "a low-resolution remote sensing image of {}.",
]

# The 75 templates written for this project (the paper does not publish its other 75).
_OUR_REMOTE_SENSING_TEMPLATES: list[str] = [
    # image quality
    "a bad aerial image of the {}.",
    "a blurry satellite image of the {}.",
    "a noisy remote sensing image of the {}.",
    "a hazy satellite image of the {}.",
    "a cloudy satellite image of the {}.",
    "a dark aerial image of the {}.",
    "a bright aerial image of the {}.",
    "an overexposed drone image of the {}.",
    "a jpeg-compressed satellite image of the {}.",
    "a good aerial image of the {}.",
    "a clean remote sensing image of the {}.",
    "a sharp satellite image of the {}.",
    # resolution and scale
    "a high-resolution satellite photo of the {}.",
    "a high-resolution aerial image of the {}.",
    "a very high resolution remote sensing image of the {}.",
    "a low-resolution satellite image of the {}.",
    "a medium-resolution satellite image of the {}.",
    "a sub-meter satellite image of the {}.",
    "a close-up aerial image of the {}.",
    "a zoomed-in satellite image of the {}.",
    "a zoomed-out aerial image of the {}.",
    "a large-scale remote sensing image of the {}.",
    "an aerial image of a small {}.",
    "an aerial image of a large {}.",
    "a satellite image of many {}.",
    "a remote sensing image of a group of {}.",
    # viewpoint and platform
    "an overhead drone image of a {}.",
    "a top-down view of the {}.",
    "a bird's-eye view of the {}.",
    "a nadir aerial image of the {}.",
    "an oblique aerial image of the {}.",
    "an oblique drone photo of the {}.",
    "a UAV image of the {}.",
    "a low-altitude drone photo of the {}.",
    "a high-altitude aerial photo of the {}.",
    "an image of the {} taken from an airplane.",
    "an image of the {} taken from a satellite.",
    "an image of the {} taken from a drone.",
    # sensor and product type
    "a satellite image of the {}.",
    "a satellite image of {}.",  # quoted in the paper's Sec. 3.1
    "an aerial image of the {}.",
    "an aerial photograph of a {}.",
    "a remote sensing image of the {}.",
    "a remote sensing image of a {}.",
    "an orthophoto of the {}.",
    "an orthorectified aerial image of the {}.",
    "a true-color satellite image of the {}.",
    "a false-color remote sensing image of the {}.",
    "a multispectral satellite image of the {}.",
    "a pan-sharpened satellite image of the {}.",
    "a panchromatic satellite image of the {}.",
    "an RGB aerial image of the {}.",
    "a Google Earth image of the {}.",
    "an earth observation image of the {}.",
    "a geospatial image of the {}.",
    "a tile of a satellite image showing the {}.",
    "a patch of an aerial image showing the {}.",
    "a cropped satellite image of the {}.",
    # content and context
    "a satellite image showing the {}.",
    "an aerial image containing the {}.",
    "a remote sensing image containing a {}.",
    "a satellite image with a {} in it.",
    "an aerial view of a {} in a city.",
    "an aerial view of a {} in the countryside.",
    "a satellite image of the {} in an urban area.",
    "a satellite image of the {} in a rural area.",
    "a remote sensing scene of the {}.",
    "a land cover map of the {}.",
    "a semantic segmentation map of the {}.",
    "an annotated remote sensing image of the {}.",
    "a remote sensing image of the partially occluded {}.",
    "a satellite image of the {} with shadows.",
    "an aerial image of the {} in winter.",
    "an aerial image of the {} in summer.",
    "an aerial image of the {} at dusk.",
]

#: The 80 remote-sensing templates: the paper's five (Table 5) followed by our 75.
REMOTE_SENSING_TEMPLATES: list[str] = PAPER_TABLE5_TEMPLATES + _OUR_REMOTE_SENSING_TEMPLATES

#: Template sets by name, as accepted by :func:`get_templates`.
TEMPLATE_SETS: dict[str, list[str]] = {
    "openai": OPENAI_TEMPLATES,
    "remote-sensing": REMOTE_SENSING_TEMPLATES,
}


def _load_template_file(path: Path) -> list[str]:
    """Reads one template per line, skipping blank lines and lines starting with ``#``."""
    templates: list[str] = []
    for line_no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        n_slots = line.count("{}")
        if n_slots != 1 or line.count("{") != 1 or line.count("}") != 1:
            raise InputError(
                f"template file {path} line {line_no}: {line!r} has {n_slots} '{{}}' placeholders "
                "(and no other braces allowed); write exactly one '{}' where the class name goes"
            )
        templates.append(line)
    if not templates:
        raise InputError(f"template file {path} has no templates; write one template per line, each with one '{{}}'")
    return templates


def get_templates(name_or_path: str) -> list[str]:
    """Returns a list of prompt templates, each a format string with one ``{}``.

    Args:
        name_or_path: a set name from :data:`TEMPLATE_SETS` (``"openai"``, ``"remote-sensing"``) or
            the path of a UTF-8 text file with one template per line, each containing exactly one
            ``{}``; blank lines and lines starting with ``#`` are ignored.

    Returns:
        A new list of template strings (safe to modify).

    Raises:
        ConfigError: ``name_or_path`` is neither a known set name nor an existing file.
        InputError: a line of the file does not contain exactly one ``{}``, or the file is empty.
    """
    if name_or_path in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[name_or_path])
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _load_template_file(path)
    raise ConfigError(
        f"unknown template set {name_or_path!r} (not a set name, and no file at {str(path)!r}); "
        f"use one of {sorted(TEMPLATE_SETS)} or the path of a text file with one '{{}}' "
        "template per line"
    )
