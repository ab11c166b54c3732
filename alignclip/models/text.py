"""Class names → queries → template-averaged text embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from alignclip.errors import InputError

__all__ = ["ClassQueries", "build_text_embeddings", "encode_text", "parse_classes"]


@dataclass(frozen=True)
class ClassQueries:
    """Classes, their synonym queries, and which class each query belongs to."""

    class_names: tuple[str, ...]  # as given, e.g. "tree,forest"
    queries: tuple[str, ...]  # one per synonym, e.g. "tree", "forest"
    query_to_class: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def parse_classes(class_names: Sequence[str]) -> ClassQueries:
    """Split every class into its comma-separated synonyms (one text query each).

    Surrounding spaces are stripped; this changes no embedding, because CLIP's tokenizer collapses and strips
    whitespace itself. Empty names and duplicate queries are refused with one line saying which.
    """
    if isinstance(class_names, str):
        class_names = [class_names]
    if not class_names:
        raise InputError("no class names given; pass --classes NAME [NAME ...] or --classes-file FILE")
    queries: list[str] = []
    q2c: list[int] = []
    seen: dict[str, int] = {}
    for ci, name in enumerate(class_names):
        parts = [p.strip() for p in str(name).split(",")]
        if not any(parts) or any(not p for p in parts):
            raise InputError(
                f"class {ci} ({name!r}) has an empty name; write synonyms as 'tree,forest' without empty entries"
            )
        for p in parts:
            key = p.lower()
            if key in seen:
                raise InputError(
                    f"duplicate class name {p!r} (in class {seen[key]} and class {ci}); every name and "
                    f"synonym must be unique"
                )
            seen[key] = ci
            queries.append(p)
            q2c.append(ci)
    return ClassQueries(tuple(str(n) for n in class_names), tuple(queries), tuple(q2c))


@torch.inference_mode()
def build_text_embeddings(
    model: torch.nn.Module,
    tokenizer,
    queries: Sequence[str],
    templates: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 512,
) -> torch.Tensor:
    """Template-averaged, L2-normalised text embeddings, one per query.

    For each query, every template is filled in, encoded, L2-normalised; the mean over templates is L2-normalised
    again (the baseline's recipe). All prompts go through the text encoder in batches of ``batch_size``.

    Returns:
        ``[Q, D]`` float32.
    """
    prompts = [t.format(q) for q in queries for t in templates]
    feats = []
    starts = range(0, len(prompts), batch_size)
    if len(starts) > 1:  # a bar on a terminal only (tqdm's disable=None): never stored in notebooks or logs
        starts = tqdm(starts, desc="text prompts", unit="batch", leave=False, disable=None)
    for i in starts:
        tokens = tokenizer(prompts[i : i + batch_size]).to(device)
        feats.append(F.normalize(encode_text(model, tokens).float(), dim=-1))
    emb = torch.cat(feats).view(len(queries), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


def encode_text(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)``, computed only up to the longest prompt of the batch.

    CLIP's text transformer is causal and pools the end-of-text token, so the padding positions after the longest
    prompt change nothing; dropping them is exact and several times faster (80 templates × many classes). Models
    that pool differently fall back to ``encode_text``.

    Args:
        tokens: ``[N, context_length]`` token ids (zero padded).

    Returns:
        ``[N, D]`` text embeddings (not normalised).
    """
    pool = getattr(model, "text_pool_type", None)
    causal = getattr(model, "attn_mask", None)
    if pool != "argmax" or causal is None or not hasattr(model, "token_embedding"):
        return model.encode_text(tokens)
    length = int((tokens != 0).sum(dim=1).max())  # prompts are left aligned; EOT is the last non-zero token
    length = max(1, min(length, tokens.shape[1]))
    text = tokens[:, :length]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.transformer(x, attn_mask=causal[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x
