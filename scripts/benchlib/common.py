"""Result records, timers, memory readings and the synthetic vector collection."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CACHE_DIR = Path(os.environ.get("BINDINDEX_BENCH_CACHE", "/tmp/bench-cache"))


@dataclass
class Result:
    """One measured figure with its target. ``met`` is None where there is no target."""

    id: str
    what: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """Yield a function that returns the seconds elapsed since entering the block."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def rss_bytes() -> int:
    """Current resident set size of this process, file-backed pages included."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_split_bytes() -> dict[str, int]:
    """Return the resident anonymous memory and mapped file pages of this process, in bytes."""
    fields = {"RssAnon:": "anon", "RssFile:": "file"}
    split = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name, *rest = line.split()
            if name in fields:
                split[fields[name]] = int(rest[0]) * 1024
    return split


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def synthetic_vectors(
    n: int, dim: int = 1024, *, seed: int = 0, concepts: int = 3000
) -> np.ndarray:
    """Return ``n`` unit vectors from a concept mixture, memory-mapped from a cached ``.npy``.

    Each vector is a concept centre plus its modality's offset (two modalities) plus
    Gaussian noise, normalised. The noise has the norm of the centre, so two items
    of one concept and modality have a cosine near 0.54 and items of different
    concepts near 0. The file is written in chunks, so memory stays at one chunk.
    """
    path = CACHE_DIR / f"vectors-{n}-{dim}-{concepts}-{seed}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    centres, offsets = _mixture(dim, concepts)
    tmp = path.with_name(path.name + ".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    rng = np.random.default_rng(seed + 1)
    chunk = 50_000
    for start in range(0, n, chunk):
        out[start : start + chunk] = _draw(rng, centres, offsets, min(chunk, n - start))
    out.flush()
    del out
    tmp.replace(path)
    return np.load(path, mmap_mode="r")


def synthetic_queries(
    nq: int, dim: int = 1024, *, seed: int = 12345, concepts: int = 3000
) -> np.ndarray:
    """Return ``nq`` new draws from the mixture of ``synthetic_vectors``, as queries."""
    centres, offsets = _mixture(dim, concepts)
    return _draw(np.random.default_rng(seed), centres, offsets, nq)


def _mixture(dim: int, concepts: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2024)
    centres = rng.standard_normal((concepts, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    offsets = rng.standard_normal((2, dim)).astype(np.float32)
    offsets *= 0.4 / np.linalg.norm(offsets, axis=1, keepdims=True)
    return centres, offsets


def _draw(rng: np.random.Generator, centres: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
    dim = centres.shape[1]
    concept = rng.integers(0, len(centres), n)
    modality = rng.integers(0, len(offsets), n)
    x = centres[concept] + offsets[modality]  # (n, dim)
    x += rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32, copy=False)


def exact_top_k(xb: np.ndarray, xq: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    """Return the ids (row numbers) of the exact top ``k`` inner products, read in chunks."""
    best_scores = np.full((len(xq), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(xq), 0), dtype=np.int64)
    for start in range(0, len(xb), chunk):
        block = np.ascontiguousarray(xb[start : start + chunk], dtype=np.float32)
        scores = xq @ block.T  # (nq, chunk)
        ids = np.broadcast_to(np.arange(start, start + len(block)), scores.shape)
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, ids], axis=1)
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, top, axis=1)
        best_ids = np.take_along_axis(ids, top, axis=1)
    order = np.argsort(-best_scores, axis=1)
    return np.take_along_axis(best_ids, order, axis=1)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of the true top ``k`` that ``found`` (nq, >=k) contains in its first ``k``."""
    hits = sum(
        len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)
    )
    return hits / (len(truth) * k)
