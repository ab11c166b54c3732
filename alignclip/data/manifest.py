"""Dataset manifests: one YAML file per dataset in the repository's ``data_manifests/`` folder.

A manifest records everything needed to obtain, convert, read and score a dataset the way the
SegEarth-OV baseline (and therefore the AlignCLIP paper) did: where it comes from, which split and
how many images are evaluated, the class names (comma-separated synonyms, exactly as SegEarth-OV's
``cls_*.txt`` files), how labels are encoded, ``reduce_zero_label``, ``bg_idx``, ``prob_thd`` and
the on-disk layout (mmsegmentation's). Manifests are data, loaded into frozen dataclasses here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from alignclip.errors import ConfigError

__all__ = [
    "MANIFEST_DIR",
    "Conversion",
    "DatasetManifest",
    "Layout",
    "RawFile",
    "list_datasets",
    "load_manifest",
    "manifest_path",
    "manifest_sha256",
]

#: The repository's top-level folder of dataset manifests (``<repo>/data_manifests``).
MANIFEST_DIR = Path(__file__).resolve().parents[2] / "data_manifests"

_REQUIRED = (
    "name",
    "display_name",
    "citation",
    "source",
    "licence",
    "how_to_obtain",
    "raw_files",
    "split",
    "num_eval_images",
    "classes",
    "label_encoding",
    "ignore_index",
    "reduce_zero_label",
    "bg_idx",
    "prob_thd",
    "layout",
    "conversion",
    "notes",
)
#: Optional keys: ``images_estimate`` (an estimate of the evaluated images where ``num_eval_images`` is null, for
#: cost plans; ``notes`` say where it comes from) and ``image_size`` (``[H, W]`` of the evaluated images as converted:
#: their typical size where they vary).
_OPTIONAL = ("images_estimate", "image_size")
_LAYOUT_KEYS = ("img_dir", "ann_dir", "img_suffix", "seg_suffix", "split_file", "recursive")


@dataclass(frozen=True)
class RawFile:
    """One raw archive or folder as downloaded from the dataset's source.

    Attributes:
        name: file or folder name, e.g. ``"2_Ortho_RGB.zip"``.
        sha256: hex digest when known, else None (then ``note`` says why).
        note: free text (what it holds, why no checksum).
    """

    name: str
    sha256: str | None
    note: str = ""


@dataclass(frozen=True)
class Layout:
    """Converted on-disk layout (mmsegmentation's), relative to the dataset root.

    ``img_dir``, ``ann_dir`` and ``split_file`` may contain ``{split}``. Images are the files in
    ``img_dir`` whose names end in ``img_suffix``; each label is the same relative path with
    ``img_suffix`` replaced by ``seg_suffix`` under ``ann_dir``. With ``split_file`` only the stems
    listed there (one per line) are used. ``recursive`` scans sub-folders (Cityscapes cities).
    """

    img_dir: str
    ann_dir: str
    img_suffix: str
    seg_suffix: str
    split_file: str | None = None
    recursive: bool = False

    def image_folder(self, root: Path, split: str) -> Path:
        """Returns the folder holding the images of ``split``."""
        return Path(root) / self.img_dir.format(split=split)

    def label_folder(self, root: Path, split: str) -> Path:
        """Returns the folder holding the labels of ``split``."""
        return Path(root) / self.ann_dir.format(split=split)

    def split_path(self, root: Path, split: str) -> Path | None:
        """Returns the split list file, or None when the split is a whole folder."""
        return None if self.split_file is None else Path(root) / self.split_file.format(split=split)

    def describe(self, split: str) -> str:
        """One-line description, e.g. ``img_dir/val/*.png + ann_dir/val/*.png``."""
        deep = "**/" if self.recursive else ""
        text = (
            f"{self.img_dir.format(split=split)}/{deep}*{self.img_suffix} + "
            f"{self.ann_dir.format(split=split)}/{deep}*{self.seg_suffix}"
        )
        if self.split_file:
            text += f" listed in {self.split_file.format(split=split)}"
        return text


@dataclass(frozen=True)
class Conversion:
    """How raw downloads become the converted layout.

    Attributes:
        converter: name of our converter in :mod:`alignclip.data.prepare` (None: none here; the
            recipe says which external tool to use).
        recipe: what the conversion does, step by step.
        params: converter parameters (tile lists, crop sizes, ...), plain YAML values.
    """

    converter: str | None
    recipe: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetManifest:
    """Everything known about one evaluation dataset (see ``data_manifests/<name>.yaml``).

    Attributes:
        classes: one entry per class id; each is a comma-separated synonym string exactly as in
            SegEarth-OV/SCLIP (split on commas WITHOUT stripping spaces).
        num_eval_images: expected number of evaluated images, or None when not known.
        ignore_index: label value ignored when scoring (255).
        reduce_zero_label: labels are shifted by mmseg's rule (0 -> 255, then -1, 254 -> 255).
        bg_idx: class id given to pixels under the probability threshold.
        prob_thd: SegEarth-OV's probability threshold for the background class.
        path: the manifest file this was loaded from.
    """

    name: str
    display_name: str
    citation: str
    source: str
    licence: str
    how_to_obtain: tuple[str, ...]
    raw_files: tuple[RawFile, ...]
    split: str
    num_eval_images: int | None
    classes: tuple[str, ...]
    label_encoding: str
    ignore_index: int
    reduce_zero_label: bool
    bg_idx: int
    prob_thd: float
    layout: Layout
    conversion: Conversion
    notes: tuple[str, ...]
    path: Path
    images_estimate: int | None = None
    image_size: tuple[int, int] | None = None

    @property
    def planned_images(self) -> tuple[int | None, bool]:
        """(evaluated images, whether that is an estimate): ``num_eval_images``, else ``images_estimate``."""
        if self.num_eval_images is not None:
            return self.num_eval_images, False
        return self.images_estimate, self.images_estimate is not None

    @property
    def num_classes(self) -> int:
        """Number of classes K (label ids 0..K-1 after decoding)."""
        return len(self.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        """First synonym of every class, e.g. ``"tree"`` for ``"tree,forest"``."""
        return tuple(c.split(",")[0] for c in self.classes)


def manifest_path(name: str) -> Path:
    """Returns the YAML file of dataset ``name``; unknown names raise ConfigError listing all."""
    key = str(name).strip().lower()
    path = MANIFEST_DIR / f"{key}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown dataset {name!r}: no {path}; valid names: {', '.join(list_datasets())}")
    return path


def list_datasets() -> list[str]:
    """Names of all datasets with a manifest, sorted."""
    if not MANIFEST_DIR.is_dir():
        raise ConfigError(
            f"manifest folder {MANIFEST_DIR} is missing; run from a full checkout "
            "of the repository (data_manifests/ sits beside alignclip/)"
        )
    return sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml"))


def manifest_sha256(name: str) -> str:
    """SHA-256 hex digest of the manifest file's bytes (to record which manifest a run used)."""
    return hashlib.sha256(manifest_path(name).read_bytes()).hexdigest()


def load_manifest(name: str) -> DatasetManifest:
    """Loads and validates ``data_manifests/<name>.yaml``.

    Args:
        name: dataset name, e.g. ``"potsdam"`` (case-insensitive).

    Returns:
        The validated manifest.

    Raises:
        ConfigError: unknown name (the message lists the valid ones) or an invalid manifest.
    """
    path = manifest_path(name)
    return _load_cached(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _load_cached(path_str: str, _mtime: int) -> DatasetManifest:
    path = Path(path_str)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"manifest {path} is not valid YAML: {err}".replace("\n", " ")) from err
    return _parse(data, path)


def _fail(path: Path, what: str) -> ConfigError:
    return ConfigError(f"manifest {path}: {what}; fix the YAML file (fields in data_manifests/README.md)")


def _str(data: dict, key: str, path: Path) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"'{key}' must be a non-empty string, got {value!r}")
    return value


def _str_list(data: dict, key: str, path: Path) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(path, f"'{key}' must be a list of non-empty strings")
    return tuple(value)


def _parse(data: Any, path: Path) -> DatasetManifest:
    if not isinstance(data, dict):
        raise _fail(path, "top level must be a mapping")
    missing = [k for k in _REQUIRED if k not in data]
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise _fail(path, f"missing keys {missing}, unknown keys {unknown}")
    name = _str(data, "name", path)
    if name != path.stem:
        raise _fail(path, f"'name' is {name!r} but the file is {path.name}")
    classes = _str_list(data, "classes", path)
    if len(set(classes)) != len(classes):
        raise _fail(path, "'classes' has duplicates")
    num = data["num_eval_images"]
    if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num < 1):
        raise _fail(path, f"'num_eval_images' must be a positive integer or null, got {num!r}")
    estimate = data.get("images_estimate")
    if estimate is not None and (not isinstance(estimate, int) or isinstance(estimate, bool) or estimate < 1):
        raise _fail(path, f"'images_estimate' must be a positive integer or absent, got {estimate!r}")
    if estimate is not None and num is not None:
        raise _fail(path, "'images_estimate' is only for a null 'num_eval_images'")
    size = data.get("image_size")
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
    ):
        raise _fail(path, f"'image_size' must be [height, width] in pixels or absent, got {size!r}")
    ignore = data["ignore_index"]
    if ignore != 255:
        raise _fail(path, f"'ignore_index' must be 255 (mmseg convention), got {ignore!r}")
    if not isinstance(data["reduce_zero_label"], bool):
        raise _fail(path, "'reduce_zero_label' must be true or false")
    bg_idx = data["bg_idx"]
    if not isinstance(bg_idx, int) or not 0 <= bg_idx < len(classes):
        raise _fail(path, f"'bg_idx' must be a class id in [0, {len(classes)}), got {bg_idx!r}")
    prob_thd = data["prob_thd"]
    if not isinstance(prob_thd, (int, float)) or isinstance(prob_thd, bool) or not (0.0 <= prob_thd <= 1.0):
        raise _fail(path, f"'prob_thd' must be a number in [0, 1], got {prob_thd!r}")
    raw_files = []
    for entry in data["raw_files"] or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _fail(path, f"each 'raw_files' entry needs a 'name', got {entry!r}")
        sha = entry.get("sha256")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise _fail(path, f"raw file {entry['name']}: 'sha256' must be 64 hex digits or null")
        if sha is None and not entry.get("note"):
            raise _fail(path, f"raw file {entry['name']}: a null 'sha256' needs a 'note'")
        raw_files.append(RawFile(entry["name"], sha, str(entry.get("note", ""))))
    lay = data["layout"]
    if (
        not isinstance(lay, dict)
        or set(lay) - set(_LAYOUT_KEYS)
        or not all(isinstance(lay.get(k), str) for k in _LAYOUT_KEYS[:4])
    ):
        raise _fail(
            path,
            f"'layout' needs string keys {list(_LAYOUT_KEYS[:4])} (optional split_file, recursive) and nothing else",
        )
    layout = Layout(
        lay["img_dir"],
        lay["ann_dir"],
        lay["img_suffix"],
        lay["seg_suffix"],
        lay.get("split_file"),
        bool(lay.get("recursive", False)),
    )
    conv = data["conversion"]
    if not isinstance(conv, dict) or not isinstance(conv.get("recipe"), str):
        raise _fail(path, "'conversion' needs 'converter' (name or null) and 'recipe' (text)")
    converter = conv.get("converter")
    if converter is not None and not isinstance(converter, str):
        raise _fail(path, "'conversion.converter' must be a name or null")
    params = conv.get("params") or {}
    if not isinstance(params, dict):
        raise _fail(path, "'conversion.params' must be a mapping")
    return DatasetManifest(
        name=name,
        display_name=_str(data, "display_name", path),
        citation=_str(data, "citation", path),
        source=_str(data, "source", path),
        licence=_str(data, "licence", path),
        how_to_obtain=_str_list(data, "how_to_obtain", path),
        raw_files=tuple(raw_files),
        split=_str(data, "split", path),
        num_eval_images=num,
        classes=classes,
        label_encoding=_str(data, "label_encoding", path),
        ignore_index=ignore,
        reduce_zero_label=data["reduce_zero_label"],
        bg_idx=bg_idx,
        prob_thd=float(prob_thd),
        layout=layout,
        conversion=Conversion(converter, conv["recipe"], dict(params)),
        notes=_str_list(data, "notes", path),
        path=path,
        images_estimate=estimate,
        image_size=None if size is None else (int(size[0]), int(size[1])),
    )
