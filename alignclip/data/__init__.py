"""Datasets: manifests, readers of the converted layouts, converters, verification, toy data.

Typical use::

    from alignclip.data import check_complete, full_dataset_hash, open_dataset, prepare_dataset, verify_dataset

    prepare_dataset("potsdam", raw=Path("downloads/potsdam"), out=Path("data/potsdam"))
    assert not verify_dataset("potsdam", "data/potsdam")
    print(full_dataset_hash("potsdam", "data/potsdam"))  # record it beside the results
    data = open_dataset("potsdam", "data/potsdam")
    warning = check_complete(data, limit=None, allow_partial=False)  # raises when images are missing
    for sample in data:
        sample.image  # [H, W, 3] uint8 RGB
        sample.label  # [H, W] uint8 ids, 255 = ignore
        sample.label_path  # the file, to name in messages
"""

from alignclip.data.fakes import generate_fake_dataset
from alignclip.data.fingerprint import dataset_fingerprint, full_dataset_hash, sample_fingerprint
from alignclip.data.manifest import (
    DatasetManifest,
    list_datasets,
    load_manifest,
    manifest_sha256,
)
from alignclip.data.prepare import PrepareResult, prepare_dataset
from alignclip.data.readers import (
    Dataset,
    Sample,
    SegmentationDataset,
    check_complete,
    check_identity,
    open_dataset,
)
from alignclip.data.synthetic import generate_synthetic_dataset
from alignclip.data.verify import verify_dataset

__all__ = [
    "Dataset",
    "DatasetManifest",
    "PrepareResult",
    "Sample",
    "SegmentationDataset",
    "check_complete",
    "check_identity",
    "dataset_fingerprint",
    "full_dataset_hash",
    "generate_fake_dataset",
    "generate_synthetic_dataset",
    "list_datasets",
    "load_manifest",
    "manifest_sha256",
    "open_dataset",
    "prepare_dataset",
    "sample_fingerprint",
    "verify_dataset",
]
