"""Datasets: manifests, readers of the converted layouts, converters, verification, toy data.

Typical use::

    from alignclip.data import open_dataset, prepare_dataset, verify_dataset

    prepare_dataset("potsdam", raw=Path("downloads/potsdam"), out=Path("data/potsdam"))
    assert not verify_dataset("potsdam", "data/potsdam")
    for sample in open_dataset("potsdam", "data/potsdam"):
        sample.image  # [H, W, 3] uint8 RGB
        sample.label  # [H, W] uint8 ids, 255 = ignore
"""

from alignclip.data.fakes import generate_fake_dataset
from alignclip.data.manifest import (
    DatasetManifest,
    list_datasets,
    load_manifest,
    manifest_sha256,
)
from alignclip.data.prepare import PrepareResult, prepare_dataset
from alignclip.data.readers import Dataset, Sample, SegmentationDataset, open_dataset
from alignclip.data.synthetic import generate_synthetic_dataset
from alignclip.data.verify import verify_dataset

__all__ = [
    "Dataset",
    "DatasetManifest",
    "PrepareResult",
    "Sample",
    "SegmentationDataset",
    "generate_fake_dataset",
    "generate_synthetic_dataset",
    "list_datasets",
    "load_manifest",
    "manifest_sha256",
    "open_dataset",
    "prepare_dataset",
    "verify_dataset",
]
