"""The root package's public API: lazy (``import alignclip`` loads no model code) and complete."""

import subprocess
import sys

import pytest

import alignclip


def test_import_is_lazy():
    code = (
        "import sys, alignclip; heavy = [m for m in ('torch', 'open_clip', 'alignclip.pipeline', "
        "'alignclip.models') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", sorted(n for n in alignclip.__all__ if n != "__version__"))
def test_every_public_name_resolves(name):
    assert getattr(alignclip, name) is not None
    assert name in dir(alignclip)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        alignclip.nope  # noqa: B018


def test_api_builds_a_smoke_segmentor():
    import numpy as np

    seg = alignclip.build_segmentor("segearth-ov", classes=["a", "b"], smoke=True, long_side=64, crop=64, stride=64)
    labels = seg.segment(np.zeros((64, 80, 3), np.uint8))
    assert labels.shape == (64, 80) and isinstance(seg, alignclip.Segmentor)
    assert alignclip.__version__ == "0.1.0"
