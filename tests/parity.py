"""Shared checks of the parity tests: our methods against golden outputs of their authors' public code.

Each ``tests/data/parity/<method>/`` holds ``golden.npz`` and a README (the authors' commit, what was stubbed, how to
regenerate). The golden outputs were computed by the authors' code on the shared tiny random weights
(``scripts/parity_weights.py``: the ``tiny-b16`` CLIP and the ``tiny_dino_b8``/``tiny_dino_b16`` VFMs, rebuilt here
from the package's seeds and checked against the digests in ``weights.json``) and on real fixture images (not in the
repository: the tests skip without ``../shared/fixtures``).

``golden.npz`` layout, per image key ``K`` (e.g. ``potsdam``):

- ``K/image``: the fixture path relative to ``../shared/fixtures`` (a 0-d str array);
- ``K/size``: ``[H, W]`` processing size (the image resized as the baseline does: :func:`alignclip.io.images.read_image`
  then :func:`~alignclip.io.images.resize_long_side` with ``long_side``), the same pixels fed to both codes;
- ``K/probes``: ``[P, 2]`` (row, col) probe pixels; ``K/logits``: ``[Q, P]`` the authors' count-averaged query logits
  there (before the softmax); ``K/mask``: ``[H, W]`` the authors' label map (after softmax, synonyms, threshold).
- ``classes`` (the class names, synonyms with commas), ``settings`` (a JSON str of the config overrides that make our
  pipeline run the same settings).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

PARITY = Path(__file__).resolve().parent / "data" / "parity"
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"

LOGIT_TOL = 1e-4  # max |ours - theirs| at the probe pixels
MASK_AGREEMENT = 0.999  # identical labels outside near-ties
TIE_MARGIN = 1e-3  # a pixel whose two best class probabilities (ours) differ by less is a near-tie


def load_golden(method: str) -> dict[str, np.ndarray]:
    path = PARITY / method / "golden.npz"
    assert path.is_file(), f"{path} missing: regenerate it as {path.parent / 'README.md'} says"
    with np.load(path, allow_pickle=False) as data:
        return dict(data)


def image_keys(golden: dict[str, np.ndarray]) -> list[str]:
    return sorted({k.split("/")[0] for k in golden if "/" in k})


def settings(golden: dict[str, np.ndarray]) -> dict:
    return json.loads(str(golden["settings"]))


def classes(golden: dict[str, np.ndarray]) -> list[str]:
    return [str(c) for c in golden["classes"]]


MOMENT_TOL = 1e-5  # relative tolerance of the per-tensor moments when the exact digest differs


def check_weights(method: str) -> None:
    """The package's tiny models are the weights the golden outputs were made with (``weights.json``): the exact
    digest, or, on another kind of CPU, every tensor's L1 and squared L2 norms within :data:`MOMENT_TOL` (the tiny
    VFMs' truncated-normal initialisation goes through a vectorised ``erfinv`` whose last bits differ between AVX2 and
    AVX-512, so the same seed gives weights equal only to the last ulp; any other change of the weights moves the
    moments far more)."""
    from alignclip.models.clip import create_clip, state_digest
    from alignclip.models.vfm import create_vfm

    recorded = json.loads((PARITY / method / "weights.json").read_text())
    for file, entry in recorded.items():
        model = entry["package_model"]
        if model.startswith("create_clip"):
            state = create_clip("tiny-b16", "none").model.state_dict()
        else:
            state = create_vfm(model.split("'")[1], "none").model.state_dict()
        if state_digest(state) == entry["digest"]:
            continue
        moments = entry.get("moments")
        assert moments, f"{file}: the package's {model} is not the parity weights (digest differs, no moments)"
        assert sorted(moments) == sorted(k for k, v in state.items() if v.is_floating_point()), f"{file}: other tensors"
        for key, (l1, l2) in moments.items():
            v = state[key].double()
            got = (float(v.abs().sum()), float(v.square().sum()))
            assert np.allclose(got, (l1, l2), rtol=MOMENT_TOL, atol=1e-12), (
                f"{file}: tensor {key} of the package's {model} is not the parity weights' ({got} vs {(l1, l2)})"
            )


def processed_image(golden: dict[str, np.ndarray], key: str, long_side: int | None) -> np.ndarray:
    """The fixture image of ``key`` at its processing size (skips without the fixtures)."""
    from alignclip.io.images import read_image, resize_long_side

    path = FIXTURES / str(golden[f"{key}/image"])
    if not path.is_file():
        pytest.skip(f"real fixtures absent: {path} (only on the project's machines, not in clones)")
    image = read_image(path)[0]
    if long_side is not None:
        image = resize_long_side(image, long_side)
    assert list(image.shape[:2]) == list(golden[f"{key}/size"]), "fixture image changed since the golden outputs"
    return image


def assert_parity(seg, golden: dict[str, np.ndarray], key: str, image: np.ndarray) -> dict[str, float]:
    """Our logits at the probes within :data:`LOGIT_TOL` and our mask ≥ :data:`MASK_AGREEMENT` identical outside
    near-ties. ``image`` is at the processing size (``seg.config.long_side`` must then leave it unchanged)."""
    from alignclip.ops.postprocess import class_probabilities

    pred = seg.predict(image)
    logits = pred.logits  # [Q, H, W]
    probes = torch.as_tensor(golden[f"{key}/probes"]).long()
    ours = logits[:, probes[:, 0], probes[:, 1]].cpu().numpy()
    theirs = golden[f"{key}/logits"]
    assert ours.shape == theirs.shape
    err = float(np.abs(ours - theirs).max())
    assert err <= LOGIT_TOL, f"{key}: logits differ by {err:.2e} at the probes (tolerance {LOGIT_TOL:.0e})"
    probs = class_probabilities(logits, seg.query_to_class, seg.classes.num_classes, seg.config.logit_scale)
    top2 = probs.topk(2, dim=0).values
    tie = (top2[0] - top2[1] < TIE_MARGIN).cpu().numpy()
    mask = golden[f"{key}/mask"]
    agree = (pred.labels == mask) | tie
    share = float(agree.mean())
    assert share >= MASK_AGREEMENT, f"{key}: masks agree on {share:.4%} of pixels outside near-ties"
    return {"max_logit_error": err, "mask_agreement": share, "near_ties": float(tie.mean())}
