"""Arguments shared by the commands: the model flags, ``--set KEY=VALUE``, class names, the pipeline-check note."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alignclip.errors import ConfigError, InputError
from alignclip.kinds import PIPELINE_CHECK_LABEL

__all__ = [
    "PIPELINE_CHECK_NOTE",
    "add_model_args",
    "add_notebook_params",
    "config_from_args",
    "notebook_params",
    "parse_set",
    "read_class_args",
]

PIPELINE_CHECK_NOTE = (
    f"{PIPELINE_CHECK_LABEL} in use ({{what}}); these outputs test the code path and are not a "
    "reproduction of any result"
)


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["alpha=0.3", "sga=off"]`` → ``{"alpha": 0.3, "sga": False}``: each value parsed with its field's type
    (:func:`alignclip.pipeline.config.parse_field_value`; unknown fields and wrong types are one-line errors)."""
    from alignclip.pipeline.config import parse_field_value  # imported on use: `alignclip --help` stays fast

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must be KEY=VALUE (e.g. --set alpha=0.3)")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = parse_field_value(key.strip(), value)
        except ConfigError as err:
            raise ConfigError(f"--set {item}: {err}") from None
    return out


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model flags shared by segment, evaluate and bench."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--preset",
        default="alignclip-d",
        help="method preset, e.g. segearth-ov, alignclip-d, segearth-ov+sga (default: alignclip-d)",
    )
    g.add_argument("--smoke", action="store_true", help="tiny random models (pipeline check, no downloads)")
    g.add_argument("--backbone", help="open_clip model name or model-config JSON (default ViT-B-16)")
    g.add_argument("--pretrained", help="open_clip tag (openai), a local state-dict path, or none")
    g.add_argument("--upsampler", choices=["jbu_one", "jbu_stack", "none"])
    g.add_argument("--upsampler-ckpt", help="upsampler checkpoint path, or none for random weights")
    g.add_argument("--vfm", help="VFM for CCE: dino_vitb16, dino_vitb8, sam_vitb, tiny")
    g.add_argument("--vfm-pretrained", help="default (timm tag via the HF cache), a local file, or none")
    g.add_argument(
        "--vfm-resolution",
        choices=["window", "native"],
        help="VFM input per window: the window's "
        "own size (default) or the VFM's training size where it has one (SAM 1024²)",
    )
    g.add_argument("--templates", help="openai, remote-sensing, or a file with one template per line")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N (default auto)")
    g.add_argument(
        "--no-cache",
        action="store_true",
        help="encode the class names again instead of reading their text embeddings from the disk cache "
        "(~/.cache/alignclip/text, or $ALIGNCLIP_TEXT_CACHE; off there disables it)",
    )
    g.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any config field (repeatable), e.g. --set alpha=0.3 --set prob_thd=0.1",
    )


def config_from_args(args: argparse.Namespace, dataset: str | None = None):
    """The configuration the model flags (and ``--set``) select, with ``dataset``'s settings."""
    from alignclip.pipeline.config import (
        build_config,  # imported on use: `alignclip --help` stays fast
    )
    from alignclip.pipeline.text_cache import set_text_cache

    if getattr(args, "no_cache", False):
        set_text_cache(None)

    over = {}
    for flag in (
        "backbone",
        "pretrained",
        "upsampler",
        "upsampler_ckpt",
        "vfm",
        "vfm_pretrained",
        "vfm_resolution",
        "templates",
        "device",
    ):
        value = getattr(args, flag, None)
        if value is not None:
            over[flag] = value
    over.update(parse_set(getattr(args, "set", None)))
    return build_config(args.preset, dataset=dataset, smoke=args.smoke, **over)


def read_class_args(args: argparse.Namespace) -> list[str]:
    """Class names from ``--classes`` or ``--classes-file`` (UTF-8 text, one per line, ``#`` comments)."""
    if args.classes_file:
        path = Path(args.classes_file)
        if not path.is_file():
            raise InputError(f"classes file {path} not found; give a text file with one class per line")
        fix = "save it as UTF-8 text with one class per line"
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InputError(f"cannot read classes file {path}: {err.strerror or err}") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise InputError(
                f"classes file {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); {fix}"
            ) from None
        if "\x00" in text:
            raise InputError(f"classes file {path} is a binary file (it holds NUL bytes), not a text file; {fix}")
        names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        if not names:
            raise InputError(f"classes file {path} has no class names; write one class per line")
        return names
    return list(args.classes or [])


def add_notebook_params(p: argparse.ArgumentParser, example: str = "-p profile full") -> None:
    """``-p KEY VALUE`` (repeatable): a notebook parameter, checked against the notebooks' parameters cells."""
    p.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        metavar=("KEY", "VALUE"),
        help=f"notebook parameter (repeatable), e.g. {example}",
    )


def notebook_params(args: argparse.Namespace) -> dict[str, str]:
    """The ``-p`` pairs as a dict (one-line ConfigError for a parameter given twice)."""
    params: dict[str, str] = {}
    for key, value in getattr(args, "param", None) or []:
        if key in params:
            raise ConfigError(f"-p {key} is given twice ({params[key]!r} and {value!r}); give each parameter once")
        params[key] = value
    return params
