"""From query logits to a label map (the baseline's post-processing)."""

from __future__ import annotations

import numpy as np
import torch

from alignclip.errors import ConfigError

__all__ = ["class_probabilities", "label_dtype", "predict_labels"]


def class_probabilities(
    logits: torch.Tensor, query_to_class: torch.Tensor, num_classes: int, logit_scale: float = 50.0
) -> torch.Tensor:
    """Softmax over queries of ``logit_scale · logits``, then the max over each class's queries (synonyms).

    Args:
        logits: ``[Q, ...]`` cosine logits, one row per query (a class may have several synonym queries).
        query_to_class: ``[Q]`` long, the class index of every query.
        num_classes: K.
        logit_scale: temperature (50 in the baseline).

    Returns:
        ``[K, ...]`` class probabilities (a class's probability is its best synonym's).
    """
    probs = torch.softmax(logits.float() * logit_scale, dim=0)
    out = torch.full((num_classes, *probs.shape[1:]), float("-inf"), device=probs.device)
    index = query_to_class.to(probs.device).view(-1, *([1] * (probs.dim() - 1))).expand_as(probs)
    return out.scatter_reduce(0, index, probs, reduce="amax", include_self=True)


def predict_labels(class_probs: torch.Tensor, prob_thd: float = 0.0, bg_idx: int = 0) -> torch.Tensor:
    """Eq. 15: ``pred = argmax_k S_final`` over classes; pixels whose best probability is below ``prob_thd`` get
    class ``bg_idx`` (the baseline's background threshold; ``prob_thd = 0`` is the plain argmax of Eq. 15).

    Args:
        class_probs: ``[K, ...]``.

    Returns:
        ``[...]`` long label map.
    """
    k = class_probs.shape[0]
    if not 0 <= bg_idx < k:
        raise ConfigError(f"bg_idx={bg_idx} is not a class index (0..{k - 1}); set bg_idx to the background class")
    best, labels = class_probs.max(dim=0)
    if prob_thd > 0:
        labels = torch.where(best < prob_thd, torch.full_like(labels, bg_idx), labels)
    return labels


def label_dtype(num_classes: int) -> type:
    """The dtype of a label map of ``num_classes`` classes: ``uint8`` up to 256 classes, else ``int32``."""
    return np.uint8 if num_classes <= 256 else np.int32
