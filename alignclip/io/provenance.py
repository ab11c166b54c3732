"""Provenance of a run: code version, package versions, device."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

__all__ = ["PACKAGES", "code_sha256", "device_description", "git_commit", "package_versions"]

PACKAGES = (
    "alignclip",
    "torch",
    "torchvision",
    "open_clip_torch",
    "timm",
    "numpy",
    "opencv-python-headless",
    "scikit-learn",
    "pillow",
)


def git_commit(repo: Path | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` when files changed), or None outside a git checkout."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


@functools.lru_cache(maxsize=4)
def code_sha256(root: Path | None = None) -> str:
    """Hash (16 hex digits) of the package's own code and data: every ``.py``, ``.json`` and ``.csv`` file under
    ``alignclip/`` (or ``root``), with its relative path. Any edit changes it, installed or in a checkout."""
    root = root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json", ".csv") and p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
