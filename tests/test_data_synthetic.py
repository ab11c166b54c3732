"""The generated synthetic dataset: deterministic bytes, every class present, ignore border."""

import hashlib
import time

import numpy as np
from PIL import Image

from alignclip.data import (
    generate_synthetic_dataset,
    load_manifest,
    open_dataset,
    prepare_dataset,
    verify_dataset,
)
from alignclip.data.synthetic import SYNTHETIC_CLASSES, synthetic_scene


def _digests(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _digests(generate_synthetic_dataset(tmp_path / "a"))
    b = _digests(generate_synthetic_dataset(tmp_path / "b"))
    c = _digests(generate_synthetic_dataset(tmp_path / "c", seed=1))
    assert len(a) == 16 and a == b
    assert all(a[k] != c[k] for k in a)


def test_fast_and_in_the_converted_layout(tmp_path):
    start = time.perf_counter()
    root = generate_synthetic_dataset(tmp_path / "syn", n_images=8, size=256)
    assert time.perf_counter() - start < 1.0
    assert sorted(p.name for p in (root / "img_dir" / "val").iterdir())[0] == "synthetic_0000.png"
    with Image.open(root / "ann_dir" / "val" / "synthetic_0000.png") as label:
        assert label.mode == "L"
    with Image.open(root / "img_dir" / "val" / "synthetic_0000.png") as image:
        assert image.mode == "RGB" and image.size == (256, 256)


def test_every_class_appears_and_border_is_ignored(tmp_path):
    root = generate_synthetic_dataset(tmp_path / "syn")
    ds = open_dataset("synthetic", root)
    assert len(ds) == 8 and ds.classes == SYNTHETIC_CLASSES == load_manifest("synthetic").classes
    total = np.zeros(256, np.int64)
    for i, sample in enumerate(ds):
        counts = np.bincount(sample.label.ravel(), minlength=256)
        total += counts
        assert set(np.flatnonzero(counts)) <= {0, 1, 2, 3, 4, 5, 255}
        if i % 4 == 3:  # 3-pixel ignore border: 256^2 - 250^2 pixels
            assert counts[255] == 256 * 256 - 250 * 250
            assert (sample.label[:3] == 255).all() and (sample.label[:, -3:] == 255).all()
        else:
            assert counts[255] == 0
    assert (total[:6] > 1000).all()
    assert verify_dataset("synthetic", root) == []


def test_classes_have_distinct_colours():
    image, label = synthetic_scene(seed=0, index=0)
    means = np.array([image[label == c].mean(0) for c in range(6)])
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert (gaps[~np.eye(6, dtype=bool)] > 20).all()


def test_prepare_synthetic_uses_manifest_params(tmp_path):
    result = prepare_dataset("synthetic", None, tmp_path / "syn")
    assert result.num_images == 8 and (tmp_path / "syn" / "alignclip_prepared.json").is_file()
    assert verify_dataset("synthetic", tmp_path / "syn") == []
