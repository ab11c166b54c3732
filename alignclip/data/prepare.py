"""Dataset preparation: raw downloads -> the converted layout described by each manifest.

``prepare_dataset(name, raw, out)`` runs the converter named in ``data_manifests/<name>.yaml``
(``conversion.converter``) and writes a provenance file ``alignclip_prepared.json`` into ``out``.
Converters here: ``isprs`` (Potsdam, Vaihingen), ``isaid``, ``uavid`` (in
:mod:`alignclip.data.convert_crops`), ``openearthmap``, ``loveda``, ``copy_released`` (UDD5, VDD)
and ``synthetic``. Labels are always written single-channel mode 'L' (or, for OpenEarthMap, the
original single-band GeoTIFF after checking it), never palette. Conversion is staged in a scratch
folder and checked with :func:`alignclip.data.verify.verify_dataset` before it replaces anything.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignclip.data.convert_crops import convert_isaid, convert_isprs, convert_uavid
from alignclip.data.fakes import FAKE_MARKER
from alignclip.data.labels import rgb_to_index
from alignclip.data.manifest import DatasetManifest, list_datasets, load_manifest, manifest_sha256
from alignclip.data.raw import check_replaceable, copy_file, gather_raw, is_skipped, staging_folder, swap_in
from alignclip.data.synthetic import generate_synthetic_dataset
from alignclip.data.verify import verify_dataset
from alignclip.errors import AlignCLIPError, ConfigError, DatasetError, DatasetNotFoundError, InputError
from alignclip.io.files import atomic_write
from alignclip.io.images import read_image, read_label, write_mask

__all__ = ["CONVERTERS", "PrepareResult", "prepare_dataset", "verify_dataset"]

PROVENANCE_FILE = "alignclip_prepared.json"


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare_dataset` wrote.

    Attributes:
        name: dataset name.
        root: the converted dataset root (``out``).
        split: split written.
        num_images: number of image/label pairs written.
        notes: human-readable remarks (skipped tiles, unknown colours, ...).
    """

    name: str
    root: Path
    split: str
    num_images: int
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.name}: wrote {self.num_images} image/label pairs ({self.split}) to {self.root}"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def _read_index_label(path: Path, max_id: int, palette: list | None = None) -> np.ndarray:
    """Reads a label of ids (or an RGB colour label when ``palette`` is given) and checks it."""
    try:
        label = read_label(path)
    except InputError as err:
        if palette is None or "RGB colour label" not in str(err):
            raise DatasetError(f"cannot read label {path} ({err}); download it again") from err
        label = None
    if label is None:  # an RGB colour label: map it with the manifest's palette
        colours = read_image(path)[0]
        label, unknown = rgb_to_index(colours, {tuple(c): i for i, c in enumerate(palette)}, 255)
        if unknown:
            raise DatasetError(
                f"{path} has {unknown} pixels of colours outside the manifest's "
                "palette; check the release or extend conversion.params.palette"
            )
    top = int(label.max()) if label.size else 0
    if top > max_id and top != 255:
        raise DatasetError(
            f"label {path} holds value {top}, above the largest id {max_id}; "
            "it is not an index label of this dataset (corrupted or wrong file)"
        )
    return label


def _convert_loveda(
    manifest: DatasetManifest, raw: Path, img_dir: Path, ann_dir: Path, tmp: Path, skip: Sequence[Path] = ()
) -> tuple[int, list[str]]:
    """LoveDA: Val/{Rural,Urban}/{images_png,masks_png} merged into one split."""
    domains = "|".join(manifest.conversion.params.get("domains", ["Rural", "Urban"]))
    prefix = "^" if raw.name == "Val" else "(?:^|/)Val/"  # --raw may be the Val folder itself
    pattern = re.compile(rf"{prefix}({domains})/(images_png|masks_png)/([^/]+\.png)$")
    found = gather_raw(raw, lambda rel: bool(pattern.search(rel)), tmp, skip)
    images: dict[str, tuple[str, Path]] = {}
    masks: dict[str, Path] = {}
    for rel, path in sorted(found.items()):
        domain, kind, fname = pattern.search(rel).groups()
        if kind == "masks_png":
            masks[fname] = path
            continue
        if fname in images and images[fname][0] != domain:
            raise DatasetError(
                f"LoveDA file name {fname} appears in both {images[fname][0]} and "
                f"{domain}; the domains cannot be merged into one folder"
            )
        images[fname] = (domain, path)
    if not images:
        raise DatasetNotFoundError(
            f"no LoveDA validation images under {raw}; expected Val.zip "
            "or Val/Rural/images_png and Val/Urban/images_png there"
        )
    unlabelled = sorted(set(images) - set(masks))
    if unlabelled:
        raise DatasetError(
            f"{len(unlabelled)} LoveDA images have no mask in masks_png, e.g. {unlabelled[0]}; download Val.zip again"
        )
    for fname, (_, path) in sorted(images.items()):
        copy_file(path, img_dir / fname)
        write_mask(ann_dir / fname, _read_index_label(masks[fname], manifest.num_classes))
    counts = {d: sum(1 for v in images.values() if v[0] == d) for d in domains.split("|")}
    return len(images), [f"domains merged: {counts}"]


def _convert_openearthmap(
    manifest: DatasetManifest, raw: Path, img_dir: Path, ann_dir: Path, tmp: Path, skip: Sequence[Path] = ()
) -> tuple[int, list[str]]:
    """OpenEarthMap: copy the val tiles listed in val.txt, skipping xBD regions."""
    params = manifest.conversion.params
    list_name = params.get("split_list", "val.txt")
    lists = gather_raw(raw, lambda rel: rel.rsplit("/", 1)[-1] == list_name, tmp, skip)
    if not lists:
        raise DatasetNotFoundError(
            f"no {list_name} under {raw}; unzip OpenEarthMap_wo_xBD there "
            f"(it holds {list_name} and <region>/images, <region>/labels)"
        )
    list_path = min(lists.values(), key=lambda p: len(p.parts))
    names = []
    for line in list_path.read_text().splitlines():
        line = line.strip()
        if line:
            names.append(line if line.lower().endswith(".tif") else line + ".tif")
    wanted = set(names)
    excluded = tuple(p.lower() for p in params.get("exclude_region_prefixes", []))
    tile_re = re.compile(r"(?:^|/)(images|labels)/([^/]+\.tif)$")

    def want(rel: str) -> bool:
        m = tile_re.search(rel)
        return bool(m) and m.group(2) in wanted

    found = gather_raw(raw, want, tmp, skip)
    images, labels = {}, {}
    for rel, path in sorted(found.items()):
        kind, fname = tile_re.search(rel).groups()
        (images if kind == "images" else labels)[fname] = path
    skipped = sorted(n for n in images if n.rsplit("_", 1)[0].lower() in excluded)
    absent = sorted(wanted - set(images))
    kept = sorted(set(images) - set(skipped))
    if not kept:
        raise DatasetNotFoundError(
            f"none of the {len(wanted)} tiles listed in {list_path} were found as {raw}/<region>/images/<name>.tif"
        )
    unlabelled = [n for n in kept if n not in labels]
    if unlabelled:
        raise DatasetError(
            f"{len(unlabelled)} OpenEarthMap tiles have no labels/<name>.tif, "
            f"e.g. {unlabelled[0]}; unzip the full release again"
        )
    for fname in kept:
        label = _read_index_label(labels[fname], manifest.num_classes - 1)
        if label.ndim != 2:
            raise DatasetError(f"{labels[fname]} is not a single-band label")
        copy_file(images[fname], img_dir / fname)
        copy_file(labels[fname], ann_dir / fname)
    notes = []
    if skipped:
        notes.append(f"{len(skipped)} xBD tiles skipped ({', '.join(skipped[:5])}...)")
    if absent:
        notes.append(
            f"{len(absent)} names in {list_name} not present in the download (expected "
            f"for the xBD tiles of OpenEarthMap_wo_xBD), e.g. {absent[0]}"
        )
    return len(kept), notes


def _convert_copy_released(
    manifest: DatasetManifest, raw: Path, img_dir: Path, ann_dir: Path, tmp: Path, skip: Sequence[Path] = ()
) -> tuple[int, list[str]]:
    """UDD5/VDD: copy <split>/src images and rewrite <split>/gt labels as mode 'L'."""
    split, lay = manifest.split, manifest.layout
    src_rel = lay.img_dir.format(split=split)
    candidates = sorted(
        p
        for p in [raw, *raw.rglob("*")]
        if p.is_dir() and p.as_posix().endswith("/" + src_rel) and not is_skipped(p, skip)
    )
    if not candidates:
        raise DatasetNotFoundError(
            f"no folder ending in {src_rel} under {raw}; unzip the {manifest.display_name} release there"
        )
    if len(candidates) > 1:
        raise DatasetError(
            f"several folders ending in {src_rel} under {raw}: "
            f"{[str(c) for c in candidates[:3]]}; pass the one to use as --raw"
        )
    src_dir = candidates[0]
    gt_dir = src_dir.parents[len(Path(src_rel).parts) - 1] / lay.ann_dir.format(split=split)
    palette = manifest.conversion.params.get("palette")
    count = 0
    for image in sorted(src_dir.iterdir()):
        if not image.name.lower().endswith(lay.img_suffix.lower()):
            continue
        stem = image.name[: len(image.name) - len(lay.img_suffix)]
        label_path = gt_dir / (stem + lay.seg_suffix)
        if not label_path.is_file():
            raise DatasetError(f"{image} has no label {label_path}; download the release again")
        label = _read_index_label(label_path, manifest.num_classes - 1, palette)
        copy_file(image, img_dir / image.name)
        write_mask(ann_dir / (stem + lay.seg_suffix), label)
        count += 1
    return count, [f"copied from {src_dir}"]


Converter = Callable[..., tuple[int, list[str]]]
#: Converter name (manifest ``conversion.converter``) -> function.
CONVERTERS: dict[str, Converter] = {
    "isprs": convert_isprs,
    "isaid": convert_isaid,
    "uavid": convert_uavid,
    "loveda": _convert_loveda,
    "openearthmap": _convert_openearthmap,
    "copy_released": _convert_copy_released,
    "synthetic": lambda *a, **k: (0, []),  # handled in prepare_dataset (no raw input)
}


def prepare_dataset(name: str, raw: Path | str | None, out: Path | str, force: bool = False) -> PrepareResult:
    """Converts a raw download into the layout :func:`alignclip.data.open_dataset` reads.

    The conversion is staged: it writes into a scratch folder next to ``out``
    (``<out>.tmp-<random>``), which :func:`verify_dataset` then checks; only a conversion that
    passes replaces the split's image and label folders and the provenance file in ``out`` (by
    renames; the old entries are deleted after the new ones are in place, and a stale fake-data
    marker is removed with them). On any failure ``out`` is left exactly as it was and the scratch
    folder is removed. Other files in ``out`` are never touched.

    Args:
        name: dataset name with a converter in its manifest (see :func:`list_datasets`).
        raw: folder holding the raw downloads (zips or unzipped); unused for ``synthetic``.
        out: dataset root to write (e.g. ``data/potsdam``); must differ from ``raw``.
        force: replace an existing non-empty output split (checked before any work).

    Returns:
        A :class:`PrepareResult` (``str()`` gives a printable summary).

    Raises:
        ConfigError: unknown dataset, or a dataset without a converter here.
        DatasetNotFoundError: raw folder or the expected raw files are missing.
        DatasetError: raw files inconsistent, the converted files fail verification, or the
            output exists and ``force`` is False.
    """
    manifest = load_manifest(name)
    converter = manifest.conversion.converter
    if converter is None:
        raise ConfigError(
            f"{manifest.name} has no converter in alignclip; follow how_to_obtain "
            f"in {manifest.path} (conversion: {manifest.conversion.recipe}) "
            f"Datasets alignclip can prepare: {', '.join(_preparable())}"
        )
    if converter not in CONVERTERS:
        raise ConfigError(
            f"{manifest.path}: converter {converter!r} is unknown; valid: {', '.join(sorted(CONVERTERS))}"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} is a file; pass a folder to hold the converted {manifest.name}")
    rels = _replaced_entries(manifest)
    if converter != "synthetic":
        raw = _check_raw(manifest, raw, out, rels)
    check_replaceable([out / rel for rel in rels], force, manifest.name)
    staging = staging_folder(out)
    try:
        img_dir = manifest.layout.image_folder(staging, manifest.split)
        ann_dir = manifest.layout.label_folder(staging, manifest.split)
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        if converter == "synthetic":
            params = manifest.conversion.params
            count, notes = int(params["n_images"]), []
            generate_synthetic_dataset(staging, count, int(params["size"]), int(params["seed"]), manifest.split)
        else:
            extract = staging / ".alignclip-extract"
            extract.mkdir()
            count, notes = CONVERTERS[converter](manifest, raw, img_dir, ann_dir, extract, (out, staging))
            shutil.rmtree(extract)
        _check_converted(manifest, raw, out, staging, count)
        _note_count(manifest, count, notes)
        _write_provenance(manifest, staging, count, notes)
        swap_in(staging, out, rels)
    except AlignCLIPError:
        raise
    except OSError as err:
        raise DatasetError(
            f"writing the converted {manifest.name} into {staging} failed ({err}); {out} is unchanged: "
            "check free space and permissions there, then run again"
        ) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PrepareResult(manifest.name, out, manifest.split, count, notes)


def _replaced_entries(manifest: DatasetManifest) -> list[str]:
    """Paths relative to the dataset root that a conversion replaces (outermost only, no duplicates)."""
    lay, split = manifest.layout, manifest.split
    rels = [lay.img_dir.format(split=split), lay.ann_dir.format(split=split), PROVENANCE_FILE, FAKE_MARKER]
    if lay.split_file is not None:
        rels.append(lay.split_file.format(split=split))
    rels = list(dict.fromkeys(Path(r).as_posix() for r in rels))
    return [r for r in rels if not any(o != r and Path(o) in Path(r).parents for o in rels)]


def _check_raw(manifest: DatasetManifest, raw: Path | str | None, out: Path, rels: list[str]) -> Path:
    """Checks ``--raw`` before any work: it exists and is neither ``out`` nor inside a replaced folder."""
    if raw is None or not Path(raw).is_dir():
        raise DatasetNotFoundError(
            f"raw folder {raw} for {manifest.name} does not exist; "
            f"download the files listed under how_to_obtain in "
            f"{manifest.path} and pass their folder as --raw"
        )
    raw = Path(raw)
    if raw.resolve() == out.resolve():
        raise DatasetError(
            f"--out {out} is the raw folder; write the converted dataset to another folder (e.g. data/<name>)"
        )
    for rel in rels:
        if is_skipped(raw, [out / rel]):
            raise DatasetError(
                f"--raw {raw} lies inside {out / rel}, which prepare replaces; move the raw downloads "
                "out of the dataset folder (or choose another --out)"
            )
    return raw


def _check_converted(manifest: DatasetManifest, raw: Path | None, out: Path, staging: Path, count: int) -> None:
    """Runs :func:`verify_dataset` on the staged conversion; problems abort before ``out`` is touched."""
    if count == 0:
        raise DatasetNotFoundError(
            f"no {manifest.display_name} image was converted from {raw}; {out} is unchanged: put the files "
            f"listed under how_to_obtain in {manifest.path} there"
        )
    problems = verify_dataset(manifest.name, staging, manifest.split, expected_count=count)
    if problems:
        first = " ".join(problems[0].split())
        raise DatasetError(
            f"the converted {manifest.name} failed verification ({len(problems)} problem(s), first: {first}); "
            f"{out} is unchanged: check the raw download{f' in {raw}' if raw else ''} and run again"
        )


def _preparable() -> list[str]:
    return [n for n in list_datasets() if load_manifest(n).conversion.converter is not None]


def _note_count(manifest: DatasetManifest, count: int, notes: list[str]) -> None:
    expected = manifest.num_eval_images
    if expected is not None and count != expected and manifest.conversion.converter != "synthetic":
        notes.append(
            f"wrote {count} images but the manifest expects {expected}: check that the "
            "raw download is complete and is the release named in the manifest"
        )


def _write_provenance(manifest: DatasetManifest, root: Path, count: int, notes: list[str]) -> None:
    record = {
        "dataset": manifest.name,
        "split": manifest.split,
        "num_images": count,
        "converter": manifest.conversion.converter,
        "params": manifest.conversion.params,
        "manifest_sha256": manifest_sha256(manifest.name),
        "notes": notes,
    }
    text = json.dumps(record, indent=2, default=str) + "\n"
    atomic_write(root / PROVENANCE_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
