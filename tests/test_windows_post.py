import pytest
import torch

from alignclip.postprocess import class_probabilities, predict_labels
from alignclip.windows import (
    accumulate_windows,
    extract_windows,
    pad_to_multiple,
    window_boxes,
    window_counts,
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
