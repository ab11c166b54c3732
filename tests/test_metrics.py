"""Tests of alignclip.evaluation.confusion (mIoU exactly as mmseg's IoUMetric)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from alignclip.data.labels import reduce_zero_label
from alignclip.errors import DatasetError, InputError
from alignclip.evaluation.confusion import ConfusionAccumulator
from alignclip.evaluation.metrics import confusion_matrix, iou_from_confusion

# 2 classes, 3x3, one ignored pixel (bottom right, predicted 1: must not count).
LABEL = np.array([[0, 0, 0], [0, 1, 1], [1, 1, 255]], dtype=np.uint8)
PRED = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.int64)


def _random_case(rng: np.random.Generator, k: int, shape=(37, 53), ignore_share=0.1):
    label = rng.integers(0, k, size=shape).astype(np.uint8)
    label[rng.random(shape) < ignore_share] = 255
    pred = rng.integers(0, k, size=shape)
    # Make predictions correlated with labels so IoUs are not all tiny.
    agree = rng.random(shape) < 0.5
    pred[agree & (label != 255)] = label[agree & (label != 255)]
    return pred, label


def test_hand_computed_two_class():
    cm = confusion_matrix(PRED, LABEL, num_classes=2)
    # gt 0: predicted 0,0,1,0 ; gt 1: predicted 1,1,1,1 ; the 255 pixel is ignored.
    np.testing.assert_array_equal(cm, [[3, 1], [0, 4]])
    assert cm.dtype == np.int64
    m = iou_from_confusion(cm)
    iou0 = Fraction(3, 4 + 3 - 3)  # inter / (gt + pred - inter)
    iou1 = Fraction(4, 4 + 5 - 4)
    assert m["per_class_iou"] == pytest.approx([float(iou0) * 100, float(iou1) * 100])
    assert m["miou"] == pytest.approx(float((iou0 + iou1) / 2) * 100)  # 77.5
    assert m["aacc"] == pytest.approx(float(Fraction(7, 8)) * 100)
    acc0, acc1 = Fraction(3, 4), Fraction(4, 4)
    assert m["per_class_acc"] == pytest.approx([float(acc0) * 100, float(acc1) * 100])
    assert m["macc"] == pytest.approx(float((acc0 + acc1) / 2) * 100)
    assert m["num_pixels"] == 8
    json.dumps(m)


def test_against_sklearn_and_per_class_loop():
    rng = np.random.default_rng(0)
    k = 6
    total = np.zeros((k, k), dtype=np.int64)
    inter = np.zeros(k)
    union = np.zeros(k)
    gt_area = np.zeros(k)
    for _ in range(5):
        pred, label = _random_case(rng, k)
        valid = label != 255
        expected = sk_confusion_matrix(label[valid], pred[valid], labels=list(range(k)))
        cm = confusion_matrix(pred, label, k)
        np.testing.assert_array_equal(cm, expected)
        total += cm
        for c in range(k):
            p, g = (pred == c) & valid, (label == c) & valid
            inter[c] += np.sum(p & g)
            union[c] += np.sum(p | g)
            gt_area[c] += np.sum(g)
    m = iou_from_confusion(total)
    assert m["per_class_iou"] == pytest.approx(list(inter / union * 100))
    assert m["miou"] == pytest.approx(np.mean(inter / union) * 100)
    assert m["per_class_acc"] == pytest.approx(list(inter / gt_area * 100))
    assert m["aacc"] == pytest.approx(inter.sum() / gt_area.sum() * 100)


def test_torch_inputs_and_mixed():
    rng = np.random.default_rng(1)
    pred, label = _random_case(rng, 4)
    ref = confusion_matrix(pred, label, 4)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(pred), label, 4), ref)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label), 4), ref)
    np.testing.assert_array_equal(confusion_matrix(pred, torch.from_numpy(label), 4), ref)
    # Non-contiguous (negative-stride) numpy views work too.
    np.testing.assert_array_equal(confusion_matrix(pred[::-1], label[::-1], 4), ref)


@pytest.mark.gpu
def test_cuda_tensors():
    if not torch.cuda.is_available():
        pytest.skip("CUDA absent: no GPU on this machine")
    rng = np.random.default_rng(2)
    pred, label = _random_case(rng, 5)
    ref = confusion_matrix(pred, label, 5)
    out = confusion_matrix(torch.from_numpy(pred).cuda(), torch.from_numpy(label).cuda(), 5)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(pred).cuda(), label, 5), ref)


def test_reduce_zero_label():
    label = np.array([[0, 1, 2], [255, 254, 3]], dtype=np.uint8)
    out = reduce_zero_label(label)
    np.testing.assert_array_equal(out, [[255, 0, 1], [255, 253, 2]])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(label, [[0, 1, 2], [255, 254, 3]])  # input untouched


def test_class_absent_everywhere_is_nan_and_excluded():
    cm = confusion_matrix(PRED, LABEL, num_classes=3)  # class 2 never in GT nor prediction
    m = iou_from_confusion(cm)
    assert m["per_class_iou"][2] is None
    assert m["per_class_acc"][2] is None
    assert m["miou"] == pytest.approx(float((Fraction(3, 4) + Fraction(4, 5)) / 2) * 100)
    assert m["macc"] == pytest.approx(87.5)


def test_class_predicted_but_absent_from_gt_counts_as_zero():
    pred = PRED.copy()
    pred[0, 0] = 2  # a GT-0 pixel predicted as class 2, which never occurs in the GT
    m = iou_from_confusion(confusion_matrix(pred, LABEL, num_classes=3))
    assert m["per_class_iou"][2] == 0.0
    iou0, iou1 = Fraction(2, 4 + 2 - 2), Fraction(4, 5)
    assert m["miou"] == pytest.approx(float((iou0 + iou1 + 0) / 3) * 100)
    assert m["per_class_acc"][2] is None  # acc needs GT area: excluded from mAcc


def test_errors():
    bad = LABEL.copy()
    bad[0, 0] = 7
    with pytest.raises(DatasetError, match=r"label values \[7\] outside 0..1 \(ignore 255\)"):
        confusion_matrix(PRED, bad, 2)
    with pytest.raises(InputError, match=r"\(3, 3\).*\(4, 3\).*resolution"):
        confusion_matrix(PRED, np.zeros((4, 3), dtype=np.uint8), 2)
    with pytest.raises(InputError, match="prediction values"):
        confusion_matrix(PRED + 1, LABEL, 2)
    with pytest.raises(InputError, match="integer"):
        confusion_matrix(PRED.astype(np.float32), LABEL, 2)
    with pytest.raises(InputError, match="0 valid pixels"):
        iou_from_confusion(np.zeros((2, 2), dtype=np.int64))


def _filled_accumulator(k=4, n=6, seed=3, prefix="img"):
    rng = np.random.default_rng(seed)
    acc = ConfusionAccumulator(k)
    for i in range(n):
        pred, label = _random_case(rng, k, shape=(11, 13))
        acc.update(pred, label, f"{prefix}{i}")
    return acc


def test_accumulator_total_and_merge():
    full = _filled_accumulator()
    ids, cms = full.per_image()
    assert ids == [f"img{i}" for i in range(6)] and cms.shape == (6, 4, 4)
    np.testing.assert_array_equal(cms.sum(0), full.total())
    a, b = ConfusionAccumulator(4), ConfusionAccumulator(4)
    for i, (image_id, cm) in enumerate(zip(ids, cms, strict=True)):
        (a if i % 2 else b).add_matrix(cm, image_id)
    a.merge(b)
    np.testing.assert_array_equal(a.total(), full.total())
    assert sorted(a.per_image()[0]) == sorted(ids)
    assert a.metrics() == full.metrics()
    with pytest.raises(InputError, match="image counted twice"):
        a.merge(b)


def test_duplicate_id_refused():
    acc = ConfusionAccumulator(2)
    acc.update(PRED, LABEL, "tile_0")
    with pytest.raises(InputError, match="image counted twice"):
        acc.update(PRED, LABEL, "tile_0")
    assert len(acc) == 1
    np.testing.assert_array_equal(acc.total(), [[3, 1], [0, 4]])


def test_compact_round_trip():
    acc = _filled_accumulator(k=5, n=8)
    payload = json.loads(json.dumps(acc.to_compact()))
    back = ConfusionAccumulator.from_compact(payload)
    ids, cms = acc.per_image()
    ids2, cms2 = back.per_image()
    assert ids2 == ids
    np.testing.assert_array_equal(cms2, cms)
    assert back.num_classes == 5 and back.ignore_index == 255
    empty = ConfusionAccumulator.from_compact(ConfusionAccumulator(3).to_compact())
    assert len(empty) == 0 and empty.per_image()[1].shape == (0, 3, 3)
    truncated = dict(payload, data=ConfusionAccumulator(5).to_compact()["data"])
    with pytest.raises(InputError, match="corrupt"):
        ConfusionAccumulator.from_compact(truncated)
    payload["num_pixels"] += 1
    with pytest.raises(InputError, match="corrupt"):
        ConfusionAccumulator.from_compact(payload)
    with pytest.raises(InputError, match="format"):
        ConfusionAccumulator.from_compact({"format": "other"})


def test_npz_round_trip(tmp_path):
    acc = _filled_accumulator()
    path = acc.save_npz(tmp_path / "sub" / "run.npz")
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["run.npz"]  # no temp file left
    back = ConfusionAccumulator.load_npz(path)
    assert back.per_image()[0] == acc.per_image()[0]
    np.testing.assert_array_equal(back.per_image()[1], acc.per_image()[1])
    with pytest.raises(InputError, match="not found"):
        ConfusionAccumulator.load_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="not a confusion file"):
        ConfusionAccumulator.load_npz(tmp_path / "other.npz")
