"""Query terms, their combination, and search results."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bindindex.errors import UsageError

TermKind = Literal["audio", "image", "text", "item"]
TERM_KINDS: tuple[str, ...] = ("audio", "image", "text", "item")
MODALITY_FILTERS = ("image", "audio", "text", "any")


@dataclass(frozen=True)
class QueryTerm:
    """One part of a query: a file, a text, or a stored item, with a weight.

    ``value`` is a path or a text, or for an item its id as a string or an int.
    """

    kind: TermKind
    value: str | int
    weight: float = 1.0


@dataclass(frozen=True)
class Hit:
    """One search result; ``score`` is the cosine similarity to the query."""

    id: int
    path: str
    modality: str
    score: float

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "path": self.path, "modality": self.modality, "score": self.score}


def combine(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return the normalised weighted sum of the unit versions of ``vectors`` (n, d).

    This is ImageBind's embedding arithmetic: each term counts by its weight,
    whatever the length of its raw embedding (audio outputs have norm 20, text
    outputs carry a learned scale).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (n, 1)
    if not np.all(np.isfinite(vectors)) or np.any(norms == 0):
        raise UsageError(
            "a query term produced a zero or non-finite embedding; it cannot be searched"
        )
    unit = vectors / norms  # (n, d)
    total = (np.asarray(weights, dtype=np.float64)[:, None] * unit).sum(axis=0)  # (d,)
    length = float(np.linalg.norm(total))
    if length < 1e-6:
        raise UsageError(
            "the weighted query terms cancel out (their weighted sum is zero); change the weights"
        )
    return (total / length).astype(np.float32)


def check_terms(terms: list[QueryTerm], modality: str, k: int) -> None:
    if not terms:
        raise UsageError("no query given: pass at least one of --audio, --image, --text or --item")
    if modality not in MODALITY_FILTERS:
        raise UsageError(f"invalid modality {modality!r}: use one of {', '.join(MODALITY_FILTERS)}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UsageError(f"invalid k {k!r}: it must be a whole number of at least 1")
    for term in terms:
        if term.kind not in TERM_KINDS:
            raise UsageError(
                f"invalid query kind {term.kind!r}: use one of {', '.join(TERM_KINDS)}"
            )
        is_id = isinstance(term.value, int) and not isinstance(term.value, bool)
        if not isinstance(term.value, str) and not (term.kind == "item" and is_id):
            raise UsageError(f"invalid {term.kind} query {term.value!r}: give it as a string")
        if not np.isfinite(term.weight):
            raise UsageError(f"invalid weight {term.weight} for {term.kind} {term.value!r}")
        if term.kind == "text" and not str(term.value).strip():
            raise UsageError("empty --text query: give some words to search for")


def build_terms(
    audio: Iterable[str] = (),
    image: Iterable[str] = (),
    text: Iterable[str] = (),
    item: Iterable[str] = (),
    weights: Sequence[float] = (),
) -> list[QueryTerm]:
    """Build query terms in the order audio, image, text, item, pairing ``weights`` in that order."""
    terms: list[QueryTerm] = []
    for kind, values in (("audio", audio), ("image", image), ("text", text), ("item", item)):
        terms.extend(QueryTerm(kind, str(value)) for value in values)  # type: ignore[arg-type]
    if weights:
        if len(weights) != len(terms):
            raise UsageError(
                f"{len(weights)} weights for {len(terms)} query terms; give one --weight per term "
                "(in the order --audio, --image, --text, --item) or none"
            )
        terms = [QueryTerm(t.kind, t.value, float(w)) for t, w in zip(terms, weights, strict=True)]
    return terms
