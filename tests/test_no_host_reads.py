"""The window loop never reads a tensor back to the host (on a GPU each read would be a synchronisation).

On the CPU the reads cannot be seen as synchronisations, so the methods that force one (``item``, ``tolist``,
``numpy``, ``cpu``, truth values and Python numbers made from tensors) are made to raise while
:meth:`Segmentor.window_logits` runs. The GPU test of the same property is in tests/test_bench.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignclip.pipeline.segmentor import build_segmentor

_HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__")


def _guard(seg, monkeypatch) -> None:
    """Make the host reads raise while ``seg.window_logits``, ``seg._encode`` or ``seg._upsample`` runs (the latter
    two also in the image-scope SGA pass; the window geometry, computed on the host from CPU tensors of boxes, is
    outside them by design)."""
    inside = {"depth": 0}

    def guarded(run):
        def wrapper(*args, **kwargs):
            inside["depth"] += 1
            try:
                return run(*args, **kwargs)
            finally:
                inside["depth"] -= 1

        return wrapper

    def forbid(name):
        original = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            if inside["depth"]:
                raise AssertionError(f"Tensor.{name} read a tensor to the host inside the window loop")
            return original(self, *args, **kwargs)

        return method

    for name in _HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, forbid(name))
    for method in ("window_logits", "_encode", "_upsample"):
        monkeypatch.setattr(seg, method, guarded(getattr(seg, method)))


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(120, 170, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("preset", "over"),
    [
        ("segearth-ov", {}),
        ("alignclip-d", {}),
        ("alignclip-s", {"vfm": "tiny_sam"}),
        ("alignclip-d", {"crop": 64, "stride": 32}),  # 16 patches < 32 channels: the factored upsampler path
        ("alignclip-d", {"sga_scope": "image", "sga_source": "upsampled"}),
        ("gem", {}),
        ("gem+sga", {"gem_sga_source": "original"}),
        ("sc-clip", {}),
        ("sc-clip+sga", {"sc_clip_sga_source": "multi"}),
        ("resclip", {}),
        ("proxyclip+sga", {}),
        ("cass", {}),
    ],
)
def test_window_logits_make_no_host_reads(preset, over, monkeypatch):
    seg = build_segmentor(preset, classes=["road", "building,roof", "tree"], smoke=True, window_batch=4, **over)
    image = _image()
    expected = seg.predict(image).labels
    _guard(seg, monkeypatch)
    assert np.array_equal(seg.predict(image).labels, expected)


def test_the_guard_sees_a_host_read(monkeypatch):
    seg = build_segmentor("segearth-ov", classes=["road", "tree"], smoke=True)
    run_windows = seg.window_logits

    def reads_back(*args, **kwargs):
        out = run_windows(*args, **kwargs)
        if out.sum() > 0:  # a truth value of a tensor: a synchronisation on a GPU
            return out
        return out

    monkeypatch.setattr(seg, "window_logits", reads_back)
    _guard(seg, monkeypatch)
    with pytest.raises(AssertionError, match="__bool__"):
        seg.predict(_image())
