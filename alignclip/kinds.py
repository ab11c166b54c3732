"""Is a number a reproduction or a pipeline check? One definition for every JSON file, table, figure and message.

A run is a *reproduction* only when every model in it has pretrained weights; a run with any random model (the tiny
smoke models, or a real architecture with ``pretrained="none"``) is a *pipeline check*: it tests that the code runs,
and its numbers say nothing about the paper. A table or figure that combines runs is a reproduction only when all of
them are.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "KINDS",
    "PIPELINE_CHECK",
    "PIPELINE_CHECK_LABEL",
    "REPRODUCTION",
    "RESULT_NOTES",
    "combined_kind",
    "is_reproduction",
    "kind_of",
    "labelled",
]

PIPELINE_CHECK = "pipeline-check"
REPRODUCTION = "reproduction"
KINDS = (PIPELINE_CHECK, REPRODUCTION)
#: The one wording of the label that figure titles, CLI messages and banners show for pipeline checks.
PIPELINE_CHECK_LABEL = "PIPELINE CHECK (random weights)"
#: The ``note`` of a RESULT.json of each kind.
RESULT_NOTES = {
    PIPELINE_CHECK: "pipeline check on random weights: tests the code path, not a reproduction of the paper",
    REPRODUCTION: "evaluated with pretrained weights",
}


def kind_of(random_weights: bool) -> str:
    """The kind of a run whose models are (``True``) or are not all pretrained."""
    return PIPELINE_CHECK if random_weights else REPRODUCTION


def combined_kind(kinds: str | Iterable[str]) -> str:
    """The kind of something built from runs of these kinds: a reproduction only when all (and at least one) are."""
    values = {kinds} if isinstance(kinds, str) else set(kinds)
    return REPRODUCTION if values == {REPRODUCTION} else PIPELINE_CHECK


def is_reproduction(kinds: str | Iterable[str]) -> bool:
    """True when every kind given is a reproduction (see :func:`combined_kind`)."""
    return combined_kind(kinds) == REPRODUCTION


def labelled(title: str, kinds: str | Iterable[str]) -> str:
    """``title`` with `` — PIPELINE CHECK (random weights)`` appended unless every kind is a reproduction."""
    return title if is_reproduction(kinds) else f"{title} — {PIPELINE_CHECK_LABEL}"
