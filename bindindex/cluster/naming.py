"""Short cluster names from ImageBind's text encoder and a vocabulary of prompts."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from bindindex.errors import UsageError
from bindindex.store.vectors import normalise

# Prompts are embedded in batches of this size, to bound the memory of the text tower.
PROMPT_BATCH = 64


def default_vocabulary() -> list[str]:
    """Return the prompts shipped with bindindex ("a photo of a dog", "the sound of rain", ...)."""
    text = resources.files("bindindex.cluster").joinpath("vocabulary.txt").read_text("utf-8")
    return _prompts(text)


def read_vocabulary(path: Path) -> list[str]:
    """Read one prompt per line from ``path``; blank lines and lines starting with # are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"vocabulary file {path} not found") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"vocabulary file {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read vocabulary file {path}: {exc.strerror or exc}") from exc
    prompts = _prompts(text)
    if not prompts:
        raise UsageError(f"vocabulary file {path} contains no prompt; write one prompt per line")
    return prompts


def _prompts(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def embed_prompts(prompts: list[str], embed_texts: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Return the unit text embeddings (m, d) of ``prompts``, computed in batches."""
    batches = [
        np.asarray(embed_texts(prompts[start : start + PROMPT_BATCH]), dtype=np.float32)
        for start in range(0, len(prompts), PROMPT_BATCH)
    ]
    return normalise(np.concatenate(batches))


def name_clusters(
    centroids: np.ndarray, prompt_vectors: np.ndarray, prompts: list[str]
) -> list[tuple[str, float]]:
    """Name each centroid (k, d) after its nearest prompt, with that cosine as the score.

    The centroids must be in the uncentred space of the stored vectors,
    because no mean of text vectors is stored to centre the prompts with.
    """
    cosine = normalise(centroids) @ prompt_vectors.T  # (k, m)
    best = cosine.argmax(axis=1)  # (k,)
    return [(prompts[int(j)], float(cosine[row, j])) for row, j in enumerate(best)]
