"""Dense CRF on a segmentor's prediction (paper App. A.8, Table 13): probabilities at the input size → CRF labels.

The CRF maths is :mod:`alignclip.ops.crf`; this module feeds it the class probabilities exactly as
:meth:`~alignclip.pipeline.segmentor.Segmentor.predict` has them and applies the same labelling rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from alignclip.ops.crf import check_crf_params, dense_crf_marginals
from alignclip.ops.postprocess import class_probabilities, predict_labels
from alignclip.ops.resize import bilinear_rows
from alignclip.pipeline.segmentor import Prediction, Segmentor

__all__ = ["crf_labels", "crf_probabilities"]


def crf_probabilities(
    segmentor: Segmentor, image_shape: Sequence[int], prediction: Prediction, strip_rows: int = 512
) -> np.ndarray:
    """Class probabilities ``[K, H0, W0]`` float32 at the input size, exactly as ``Segmentor.predict`` has them.

    The logits ``[Q, H, W]`` (processing size) are resized bilinearly to ``(H0, W0)`` in strips of rows
    (:func:`alignclip.ops.resize.bilinear_rows`), then softmaxed over queries and reduced to classes
    (:func:`alignclip.ops.postprocess.class_probabilities`).
    """
    h0, w0 = int(image_shape[0]), int(image_shape[1])
    c = segmentor.config
    k = segmentor.classes.num_classes
    out = np.empty((k, h0, w0), dtype=np.float32)
    for r in range(0, h0, strip_rows):  # strips of rows bound the [Q, rows, W0] intermediate
        rows = bilinear_rows(prediction.logits, (h0, w0), r, min(r + strip_rows, h0))
        probs = class_probabilities(rows, segmentor.query_to_class, k, c.logit_scale)
        out[:, r : r + rows.shape[1]] = probs.cpu().numpy()
    return out


def crf_labels(segmentor: Segmentor, image: np.ndarray, prediction: Prediction, **crf_params: Any) -> np.ndarray:
    """Dense-CRF labels ``[H0, W0]`` of one image from its prediction (Table 13's "+denseCRF").

    The CRF runs on the class probabilities at the input size (:func:`crf_probabilities`); its marginals then go
    through the same rule as the plain prediction (:func:`alignclip.ops.postprocess.predict_labels`: argmax, and
    ``bg_idx`` where the best marginal is below the dataset's ``prob_thd``).

    Args:
        segmentor: the segmentor that made ``prediction``.
        image: the input ``[H0, W0, 3]`` uint8 RGB.
        prediction: ``segmentor.predict(image)``.
        crf_params: any of :data:`CRF_DEFAULTS`.

    Returns:
        ``[H0, W0]`` labels, the dtype of ``prediction.labels``.
    """
    params = check_crf_params(crf_params)
    probs = crf_probabilities(segmentor, image.shape[:2], prediction)
    q = dense_crf_marginals(image, probs, **params)
    c = segmentor.config
    labels = predict_labels(torch.from_numpy(q), c.prob_thd, c.bg_idx).numpy()
    return labels.astype(prediction.labels.dtype)
