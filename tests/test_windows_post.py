import pytest
import torch

from alignclip.ops.postprocess import class_probabilities, predict_labels
from alignclip.ops.windows import (
    accumulate_windows,
    axis_counts,
    axis_windows,
    extract_windows,
    pad_to_multiple,
    stream_windows,
    window_boxes,
    window_counts,
    window_size,
)


@pytest.mark.parametrize("h,w,n", [(448, 448, 9), (448, 252, 6), (224, 224, 1), (100, 448, 3), (300, 500, 8)])
def test_window_layout(h, w, n):
    boxes = window_boxes(h, w)
    assert len(boxes) == n
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] <= h).all() and (boxes[:, 3] <= w).all()
    assert ((boxes[:, 1] - boxes[:, 0]) == min(224, h)).all()
    assert window_counts(h, w, boxes).min() >= 1


def test_window_layout_448x252_exact():
    boxes = window_boxes(252, 448).tolist()
    # rows: starts 0 and 112 -> end min(336, 252)=252 -> start clamped to 28
    assert boxes[:3] == [[0, 224, 0, 224], [0, 224, 112, 336], [0, 224, 224, 448]]
    assert boxes[3:] == [[28, 252, 0, 224], [28, 252, 112, 336], [28, 252, 224, 448]]


def test_extract_accumulate_roundtrip():
    img = torch.arange(3 * 300 * 500, dtype=torch.float32).reshape(3, 300, 500)
    boxes = window_boxes(300, 500)
    wins = extract_windows(img, boxes)
    assert wins.shape == (len(boxes), 3, 224, 224)
    y1, y2, x1, x2 = boxes[5].tolist()
    torch.testing.assert_close(wins[5], img[:, y1:y2, x1:x2])
    acc = torch.zeros(3, 300, 500)
    accumulate_windows(acc, wins, boxes)
    torch.testing.assert_close(acc / window_counts(300, 500, boxes), img)


def test_pad_to_multiple():
    assert pad_to_multiple(224, 224, 16) == (0, 0, 0, 0)
    assert pad_to_multiple(100, 224, 16) == (0, 0, 6, 6)
    assert pad_to_multiple(101, 225, 16) == (7, 8, 5, 6)


def test_probabilities_synonyms_and_threshold():
    logits = torch.tensor([[0.2, 0.0], [0.1, 0.0], [0.0, 0.0]]).view(3, 2, 1)
    q2c = torch.tensor([0, 1, 1])
    probs = class_probabilities(logits, q2c, 2, logit_scale=10.0)
    e = torch.exp(torch.tensor([2.0, 1.0, 0.0]))
    torch.testing.assert_close(probs[:, 0, 0], torch.stack([e[0] / e.sum(), e[1] / e.sum()]))
    torch.testing.assert_close(probs[:, 1, 0], torch.tensor([1 / 3, 1 / 3]))
    labels = predict_labels(probs, prob_thd=0.5, bg_idx=1)
    assert labels[:, 0].tolist() == [0, 1]


def test_axis_counts_hand_checked():
    # size 10, crop 4, stride 3: windows [0,4) [3,7) [6,10)
    assert axis_counts(10, 4, 3).tolist() == [1, 1, 1, 2, 1, 1, 2, 1, 1, 1]
    # size 11: the last window [9,13) is snapped back to [7,11)
    assert axis_windows(11, 4, 3)[0].tolist() == [0, 3, 6, 7]
    assert axis_counts(11, 4, 3).tolist() == [1, 1, 1, 2, 1, 1, 2, 2, 2, 2, 1]  # [6,10) and [7,11) overlap
    assert axis_counts(5, 8, 4).tolist() == [1] * 5  # smaller than the crop: one window


@pytest.mark.parametrize(
    "h,w,crop,stride",
    [
        (448, 448, 224, 112),
        (300, 500, 224, 112),
        (100, 448, 224, 112),
        (50, 60, 224, 112),
        (333, 257, 64, 48),
        (97, 131, 32, 32),
        (250, 251, 100, 7),
        (225, 449, 224, 112),
        (31, 200, 16, 15),
    ],
)
def test_count_outer_product_equals_dense_counts(h, w, crop, stride):
    dense = window_counts(h, w, window_boxes(h, w, crop, stride))
    product = axis_counts(h, crop, stride)[:, None] * axis_counts(w, crop, stride)[None, :]
    assert torch.equal(product, dense)


def _fake_window_fn(crops: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """[n, 3, h, w] → [n, 4, h, w]: non-linear in the pixels so overlaps do not average to the input."""
    return torch.cat([crops[:, :1].sin(), crops[:, 1:2].cos(), crops[:, 2:] * 0.37, (crops[:, :1] * 3.1).tanh()], dim=1)


@pytest.mark.parametrize(
    "h,w,crop,stride,batch",
    [
        (300, 500, 224, 112, 1),
        (300, 500, 224, 112, 4),
        (333, 257, 64, 48, 3),
        (333, 257, 64, 48, 100),
        (50, 60, 224, 112, 2),
        (97, 131, 32, 32, 5),
        (250, 251, 100, 7, 32),
    ],
)
def test_stream_windows_is_bit_identical_to_dense(h, w, crop, stride, batch):
    img = torch.randn(3, h, w, generator=torch.Generator().manual_seed(h + w))
    boxes = window_boxes(h, w, crop, stride)
    dense = torch.zeros(4, h, w)
    for i in range(0, len(boxes), batch):
        accumulate_windows(dense, _fake_window_fn(extract_windows(img, boxes[i : i + batch])), boxes[i : i + batch])
    dense = dense / window_counts(h, w, boxes)
    asked = []

    def region(y1, y2, x1, x2):
        asked.append((y2 - y1) * (x2 - x1))
        return img[:, y1:y2, x1:x2]

    bands = list(stream_windows(h, w, crop, stride, batch, region, _fake_window_fn))
    starts = [r for r, _ in bands]
    stops = [r + b.shape[1] for r, b in bands]
    assert starts[0] == 0 and stops[-1] == h and starts[1:] == stops[:-1]  # consecutive, every row once
    assert torch.equal(torch.cat([b for _, b in bands], dim=1), dense)
    wh, ww = window_size(h, w, crop)
    assert max(asked) <= (wh + (batch // max(1, len(axis_windows(w, crop, stride)[0])) + 1) * stride) * w
    if batch == 1:
        assert max(asked) == wh * ww  # one window: only its own pixels


def test_stream_windows_band_rows_stay_bounded():
    """A tall image: no band and no buffer grows with the height (one window row per batch here)."""
    h, w, crop, stride = 2000, 100, 64, 32
    img = torch.zeros(3, h, w)
    heights = [
        b.shape[1]
        for _, b in stream_windows(h, w, crop, stride, 4, lambda *r: img[:, r[0] : r[1], r[2] : r[3]], _fake_window_fn)
    ]
    assert sum(heights) == h and max(heights) <= crop
