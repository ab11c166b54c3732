"""Every map between this package's names and the paper's: datasets, methods, and the row names of single tables.

Datasets are named by their manifests here (``coco_stuff171``) and by their column headers in the paper
(``COCO-Stuff``); methods by their presets (``segearth-ov+sga``) and by the paper's row names, which differ from
table to table (Table 3 names its rows by the modules switched on, Table 11 by the VFM and module).
"""

from __future__ import annotations

from alignclip.methods import METHODS

__all__ = [
    "NATURAL_COLUMNS",
    "NATURAL_DATASETS",
    "PACKAGE_DATASET",
    "PAPER_DATASET",
    "PAPER_METHOD",
    "RS_COLUMNS",
    "RS_DATASETS",
    "TABLE3_ROWS",
    "TABLE4_DATASETS",
    "TABLE11_ROWS",
    "VARIANT_ROWS",
    "paper_dataset",
    "paper_method",
]

#: Paper column header -> this package's dataset (manifest) name, in the paper's column order.
PACKAGE_DATASET: dict[str, str] = {
    "OpenEarthMap": "openearthmap",
    "LoveDA": "loveda",
    "iSAID": "isaid",
    "Potsdam": "potsdam",
    "Vaihingen": "vaihingen",
    "UAVid": "uavid",
    "UDD5": "udd5",
    "VDD": "vdd",
    "Cityscapes": "cityscapes",
    "ADE20k": "ade20k",
    "COCO-Stuff": "coco_stuff171",
    "Context59": "pascal_context59",
    "VOC20": "pascal_voc20",
}
#: This package's dataset name -> the paper's column header.
PAPER_DATASET: dict[str, str] = {name: column for column, name in PACKAGE_DATASET.items()}

#: The eight remote-sensing benchmarks as the paper's columns (Tables 2-3, 7-10, 13), in its order.
RS_COLUMNS: list[str] = ["OpenEarthMap", "LoveDA", "iSAID", "Potsdam", "Vaihingen", "UAVid", "UDD5", "VDD"]
#: The five natural-image benchmarks of Table 12 as the paper's columns.
NATURAL_COLUMNS: list[str] = ["Cityscapes", "ADE20k", "COCO-Stuff", "Context59", "VOC20"]
#: The same benchmarks by this package's dataset names.
RS_DATASETS: list[str] = [PACKAGE_DATASET[c] for c in RS_COLUMNS]
NATURAL_DATASETS: list[str] = [PACKAGE_DATASET[c] for c in NATURAL_COLUMNS]
#: Table 4's datasets (OEM, PD, UAV, VDD) by this package's names.
TABLE4_DATASETS: list[str] = ["openearthmap", "potsdam", "uavid", "vdd"]

#: Preset -> the paper's row name (Tables 2, 10, 12, 13), from :data:`alignclip.methods.METHODS`.
PAPER_METHOD: dict[str, str] = {name: method.paper_name for name, method in METHODS.items()}
#: Table 3's rows for the ablation presets (decision D14: the +SGA / +CCE rows keep SegEarth-OV's OpenAI
#: templates, the full model uses the remote-sensing ones).
TABLE3_ROWS: dict[str, str] = {
    "segearth-ov": "SegEarth-OV",
    "segearth-ov+sga": "SGA",
    "segearth-ov+cce": "CCE",
    "alignclip-d": "SGA+CCE",
}
#: Table 11's rows for the benchmark's preset specs.
TABLE11_ROWS: dict[str, str] = {
    "segearth-ov": "SegEarth-OV",
    "segearth-ov+sga": "DINO +SGA",
    "segearth-ov+cce": "DINO +CCE",
    "alignclip-d": "AlignCLIP-D",
    "segearth-ov+cce:vfm=sam_vitb": "SAM +CCE",
    "alignclip-s": "AlignCLIP-S",
    "trident": "Trident",
    "corrclip": "CorrCLIP",
}
#: Preset -> the variant name of Tables 6-9.
VARIANT_ROWS: dict[str, str] = {"alignclip-d": "AlignCLIP-D", "alignclip-s": "AlignCLIP-S"}


def paper_dataset(name: str) -> str:
    """The paper's column header of a dataset (unknown names are returned unchanged)."""
    return PAPER_DATASET.get(name, name)


def paper_method(preset: str) -> str:
    """The paper's row name of a preset (unknown names are returned unchanged)."""
    return PAPER_METHOD.get(preset, preset)
