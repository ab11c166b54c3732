"""Dense CRF post-processing of the segmentor's class probabilities (paper App. A.8, Table 13).

The paper applies "denseCRF (Krähenbühl & Koltun, 2011)" to the logit maps of AlignCLIP-D and reports +0.9 mIoU
on average, without giving any CRF parameter. We use the fully connected CRF with Gaussian edge potentials of
Krähenbühl & Koltun (2011), Eq. 1-3 there: energy ``E(x) = Σ_i ψ_u(x_i) + Σ_{i<j} ψ_p(x_i, x_j)`` with the unary
``ψ_u = -log p`` of our class probabilities and the pairwise Potts kernel

    ``k(i, j) = w1 · exp(-|p_i - p_j|² / 2θα² - |I_i - I_j|² / 2θβ²) + w2 · exp(-|p_i - p_j|² / 2θγ²)``

solved by ``n_iter`` mean-field steps (``pydensecrf``, PyPI ``pydensecrf2==1.1``, imported lazily). The default
parameters are those of the authors' reference example (``dense_inference.cpp``, repeated in pydensecrf's README):
θγ = 3 px, w2 = 3 (smoothness kernel); θα = 80 px, θβ = 13 (RGB units), w1 = 10 (appearance kernel); 10 steps.

This module holds the CRF maths on arrays; :mod:`alignclip.pipeline.crf` applies it to a segmentor's prediction,
:mod:`alignclip.evaluation.crf` evaluates a method with and without it, :mod:`alignclip.study.crf` runs it for the
study.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from alignclip.errors import ConfigError, InputError
from alignclip.ops.postprocess import label_dtype

__all__ = [
    "CRF_DEFAULTS",
    "PIP_COMMAND",
    "check_crf_params",
    "crf_available",
    "dense_crf",
    "dense_crf_marginals",
    "require_densecrf",
]

PIP_COMMAND = "pip install pydensecrf2==1.1"

#: Default CRF parameters (Krähenbühl & Koltun's reference example; the paper gives none).
CRF_DEFAULTS: dict[str, float] = dict(
    n_iter=10, sxy_gaussian=3.0, compat_gaussian=3.0, sxy_bilateral=80.0, srgb=13.0, compat_bilateral=10.0
)
_EPS = 1e-8


def require_densecrf():
    """The ``pydensecrf.densecrf`` module, or one line saying how to install it."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise ImportError(
            f"dense CRF needs the optional package pydensecrf (not found in {sys.executable}); "
            f"install it with `{PIP_COMMAND}` (builds with gcc in ~1 min)"
        ) from None
    return dcrf


def crf_available() -> bool:
    """True when ``pydensecrf`` can be imported."""
    try:
        require_densecrf()
    except ImportError:
        return False
    return True


def check_crf_params(params: dict[str, Any]) -> dict[str, float]:
    """The full parameter set (defaults filled in); unknown names or invalid values raise ConfigError."""
    bad = sorted(set(params) - set(CRF_DEFAULTS))
    if bad:
        raise ConfigError(f"unknown CRF parameter(s) {', '.join(bad)}; valid: {', '.join(CRF_DEFAULTS)}")
    full = {**CRF_DEFAULTS, **params}
    if int(full["n_iter"]) != full["n_iter"] or full["n_iter"] < 0:
        raise ConfigError(f"n_iter={full['n_iter']} must be a whole number >= 0 of mean-field steps (e.g. 10)")
    for name in ("sxy_gaussian", "sxy_bilateral", "srgb"):
        if not full[name] > 0:
            raise ConfigError(f"{name}={full[name]} must be > 0 (a kernel width); default {CRF_DEFAULTS[name]}")
    for name in ("compat_gaussian", "compat_bilateral"):
        if not full[name] >= 0:
            raise ConfigError(f"{name}={full[name]} must be >= 0 (a kernel weight; 0 drops the kernel)")
    return {k: (int(v) if k == "n_iter" else float(v)) for k, v in full.items()}


def dense_crf_marginals(
    image_rgb: np.ndarray,
    probs: np.ndarray | torch.Tensor,
    n_iter: int = 10,
    sxy_gaussian: float = 3.0,
    compat_gaussian: float = 3.0,
    sxy_bilateral: float = 80.0,
    srgb: float = 13.0,
    compat_bilateral: float = 10.0,
) -> np.ndarray:
    """Mean-field marginals of the fully connected CRF (Krähenbühl & Koltun 2011, Eq. 1-3 and Alg. 1).

    Args:
        image_rgb: the image ``[H, W, 3]`` uint8 RGB (drives the appearance kernel).
        probs: class probabilities ``[K, H, W]`` (non-negative; each pixel is renormalised to sum to 1, so the
            per-class maxima of :func:`alignclip.ops.postprocess.class_probabilities` can be passed as they are).
        n_iter: mean-field steps (0 returns the normalised input).
        sxy_gaussian: θγ, spatial width in pixels of the smoothness kernel.
        compat_gaussian: w2, Potts weight of the smoothness kernel (0 drops it).
        sxy_bilateral: θα, spatial width in pixels of the appearance kernel.
        srgb: θβ, colour width (0-255 RGB units) of the appearance kernel.
        compat_bilateral: w1, Potts weight of the appearance kernel (0 drops it).

    Returns:
        ``[K, H, W]`` float32 marginals (sum to 1 over K).
    """
    p = check_crf_params(
        dict(
            n_iter=n_iter,
            sxy_gaussian=sxy_gaussian,
            compat_gaussian=compat_gaussian,
            sxy_bilateral=sxy_bilateral,
            srgb=srgb,
            compat_bilateral=compat_bilateral,
        )
    )
    if (
        not isinstance(image_rgb, np.ndarray)
        or image_rgb.ndim != 3
        or image_rgb.shape[2] != 3
        or image_rgb.dtype != np.uint8
    ):
        raise InputError(
            f"image_rgb must be an RGB uint8 array [H, W, 3], got {type(image_rgb).__name__} "
            f"{getattr(image_rgb, 'shape', None)} {getattr(image_rgb, 'dtype', '')}"
        )
    probs = probs.detach().float().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    h, w = image_rgb.shape[:2]
    if probs.ndim != 3 or probs.shape[1:] != (h, w) or probs.shape[0] < 1:
        raise InputError(
            f"probs must be [K, H, W] = [K, {h}, {w}] (the image's size), got {probs.shape}; resize "
            f"the probabilities to the image first (see crf_labels)"
        )
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise InputError("probs hold negative or non-finite values; pass probabilities (softmax output), not logits")
    k = probs.shape[0]
    q = np.maximum(probs.astype(np.float32), _EPS)
    q /= q.sum(axis=0, keepdims=True)
    if k == 1 or p["n_iter"] == 0:
        return q
    dcrf = require_densecrf()
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(q).reshape(k, h * w)))
    if p["compat_gaussian"] > 0:
        crf.addPairwiseGaussian(sxy=p["sxy_gaussian"], compat=p["compat_gaussian"])
    if p["compat_bilateral"] > 0:
        rgb = np.require(image_rgb, np.uint8, ["C", "W"])  # pydensecrf refuses read-only buffers
        crf.addPairwiseBilateral(sxy=p["sxy_bilateral"], srgb=p["srgb"], rgbim=rgb, compat=p["compat_bilateral"])
    return np.asarray(crf.inference(p["n_iter"]), dtype=np.float32).reshape(k, h, w)


def dense_crf(
    image_rgb: np.ndarray,
    probs: np.ndarray | torch.Tensor,
    n_iter: int = 10,
    sxy_gaussian: float = 3.0,
    compat_gaussian: float = 3.0,
    sxy_bilateral: float = 80.0,
    srgb: float = 13.0,
    compat_bilateral: float = 10.0,
) -> np.ndarray:
    """Labels ``[H, W]`` (argmax of :func:`dense_crf_marginals`; same arguments) of a ``[K, H, W]`` map."""
    q = dense_crf_marginals(
        image_rgb, probs, n_iter, sxy_gaussian, compat_gaussian, sxy_bilateral, srgb, compat_bilateral
    )
    return q.argmax(axis=0).astype(label_dtype(q.shape[0]))
