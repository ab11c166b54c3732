"""Checks a converted dataset against its manifest: identity, counts, pairing, sizes and label values."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alignclip.data.labels import reduce_zero_label
from alignclip.data.manifest import load_manifest
from alignclip.data.readers import check_identity, scan_pairs
from alignclip.errors import DatasetError, DatasetNotFoundError, InputError
from alignclip.io.images import read_image, read_label

__all__ = ["verify_dataset"]

_MAX_LINES_PER_KIND = 20


def _orphan_labels(
    pairs: list[tuple[str, Path, Path]], ann_folder: Path, seg_suffix: str, recursive: bool
) -> list[Path]:
    used = {p[2].resolve() for p in pairs}
    files = ann_folder.rglob(f"*{seg_suffix}") if recursive else ann_folder.glob(f"*{seg_suffix}")
    return sorted(f for f in files if not f.name.startswith(".") and f.resolve() not in used)


def verify_dataset(
    name: str, root: Path | str, split: str | None = None, expected_count: int | None = None
) -> list[str]:
    """Checks a converted dataset and returns its problems as human-readable lines.

    Checks: the layout exists; the folder holds this dataset (not fake data of another, see
    :func:`alignclip.data.readers.check_identity`); every image has a label (and, for folder splits, every label an
    image); the number of images equals ``expected_count`` or else the manifest's
    ``num_eval_images`` (skipped when both are None); every file is readable; each label has its
    image's size; decoded label values (after reduce_zero_label) are class ids 0..K-1 or 255.

    Args:
        name: dataset name.
        root: converted dataset root.
        split: split to check (the manifest's by default).
        expected_count: expected number of images, overriding the manifest (e.g. for subsets).

    Returns:
        Problem lines; an empty list means the dataset passed every check. The split's content
        hash to record is :func:`alignclip.data.fingerprint.full_dataset_hash`.
    """
    manifest = load_manifest(name)
    split = manifest.split if split is None else split
    root = Path(root)
    try:
        pairs = scan_pairs(manifest, root, split)
    except (DatasetNotFoundError, DatasetError) as err:
        return [str(err)]
    problems: list[str] = []
    try:
        check_identity(manifest, root, [p[0] for p in pairs])
    except DatasetError as err:
        problems.append(str(err))
    expected = manifest.num_eval_images if expected_count is None else int(expected_count)
    img_folder = manifest.layout.image_folder(root, split)
    if expected is not None and len(pairs) != expected:
        problems.append(
            f"{len(pairs)} images found in {img_folder}, expected {expected} "
            f"({'expected_count' if expected_count is not None else manifest.path}); re-run "
            f"`alignclip data prepare {manifest.name} --raw DIR --out {root} --force` from the "
            "complete raw download"
        )
    if manifest.layout.split_file is None:
        orphans = _orphan_labels(
            pairs, manifest.layout.label_folder(root, split), manifest.layout.seg_suffix, manifest.layout.recursive
        )
        if orphans:
            problems.append(
                f"{len(orphans)} label files have no image, e.g. {orphans[0]}; "
                "remove them or re-run prepare with --force"
            )
    k = manifest.num_classes
    kinds: dict[str, int] = {}

    def report(kind: str, line: str) -> None:
        kinds[kind] = kinds.get(kind, 0) + 1
        if kinds[kind] <= _MAX_LINES_PER_KIND:
            problems.append(line)

    for _, image_path, label_path in pairs:
        try:
            image = read_image(image_path)[0]
        except (InputError, OSError) as err:
            report("image", f"{image_path}: unreadable image ({err})")
            continue
        try:
            raw = read_label(label_path)
        except (InputError, OSError) as err:
            report("label", f"{label_path}: unreadable label ({err})")
            continue
        if raw.shape != image.shape[:2]:
            report(
                "size",
                f"{label_path}: label is {raw.shape[1]}x{raw.shape[0]} but its image "
                f"is {image.shape[1]}x{image.shape[0]} (W x H)",
            )
            continue
        values = np.unique(raw)
        if values.size and int(values[-1]) > 255:
            report("values", f"{label_path}: label values up to {int(values[-1])} (not uint8)")
            continue
        decoded = np.unique(reduce_zero_label(values.astype(np.uint8))) if manifest.reduce_zero_label else values
        bad = decoded[(decoded >= k) & (decoded != manifest.ignore_index)]
        if bad.size:
            shown = ", ".join(str(int(v)) for v in bad[:8])
            report(
                "values",
                f"{label_path}: label values {shown} are outside the {k} classes "
                f"(0..{k - 1}) and ignore 255 after decoding "
                f"(reduce_zero_label={manifest.reduce_zero_label}); the file is "
                "corrupted or from another dataset (palette-mode labels read as "
                "grey levels look like this)",
            )
    for kind, n in kinds.items():
        if n > _MAX_LINES_PER_KIND:
            problems.append(f"... and {n - _MAX_LINES_PER_KIND} more {kind} problems")
    return problems
