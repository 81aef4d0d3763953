"""The FAISS index of unit-normalised vectors, keyed by catalog item id.

The index is a cache of the catalog's ``vectors`` table. A sidecar next to its
file records the catalog's vector generation. When the file is missing, stale or
unreadable, it is rebuilt from the catalog instead of trusted.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import faiss
import numpy as np

from bindindex.errors import IndexStateError

log = logging.getLogger(__name__)

INDEX_TYPE = "IndexIDMap2(IndexFlatIP)"


def normalise(x: np.ndarray) -> np.ndarray:
    """Return rows of ``x`` (n, d) scaled to unit length, as contiguous float32.

    Rows of zero length stay zero, so they score 0 against every query instead
    of producing NaN.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = row_norms(x)[:, None]  # (n, 1) float64
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def row_norms(x: np.ndarray) -> np.ndarray:
    """Return the Euclidean length of each row of ``x`` (n, d) as float64 (n,).

    The float32 sum of squares overflows for entries above about 1.8e19 and
    underflows below about 1e-23, which would make a valid vector look zero.
    Rows where that can happen are measured again in float64.
    """
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(x, axis=1).astype(np.float64)  # (n,)
    unsafe = ~np.isfinite(norms) | (norms < _SAFE_NORM)
    if unsafe.any():
        exact = np.asarray(x[unsafe], dtype=np.float64)
        # Scaling by the largest entry keeps the squares in range.
        scale = np.abs(exact).max(axis=1)
        scale[~np.isfinite(scale) | (scale == 0)] = 1.0
        norms[unsafe] = scale * np.linalg.norm(exact / scale[:, None], axis=1)
    return norms


# Below this float32 length, squares of the entries may have underflowed.
_SAFE_NORM = 1e-15


class VectorIndex:
    """Exact inner-product search over unit vectors (so scores are cosines)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, unit: np.ndarray) -> None:
        if len(ids) == 0:
            return
        unit = np.ascontiguousarray(unit, dtype=np.float32)
        if unit.ndim != 2 or unit.shape[1] != self.dim:
            raise IndexStateError(
                f"vectors of shape {unit.shape} do not fit an index of dimension {self.dim}"
            )
        # Replacing a vector means removing the old one first: IndexIDMap2
        # would otherwise keep both under the same id.
        self.remove(ids)
        self.index.add_with_ids(unit, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        return int(self.index.remove_ids(selector))

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def search(
        self, xq: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (D, I), each (nq, k): cosine scores and item ids, -1 where fewer exist."""
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        if self.ntotal == 0 or k <= 0:
            return (
                np.zeros((len(xq), max(k, 0)), dtype=np.float32),
                np.full((len(xq), max(k, 0)), -1, dtype=np.int64),
            )
        if allowed_ids is None:
            return self.index.search(xq, k)
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
        params = faiss.SearchParameters(sel=selector)
        return self.index.search(xq, k, params=params)

    # -- persistence ------------------------------------------------------------

    def save(self, path: Path, generation: int) -> None:
        """Write the index and its generation sidecar, each by atomic rename."""
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)
        sidecar = _sidecar(path)
        tmp_sidecar = sidecar.with_name(sidecar.name + ".tmp")
        tmp_sidecar.write_text(json.dumps({"generation": generation, "ntotal": self.ntotal}))
        os.replace(tmp_sidecar, sidecar)

    @classmethod
    def load(cls, path: Path, dim: int, generation: int) -> VectorIndex | None:
        """Return the saved index, or None when it is missing, stale or unreadable."""
        sidecar = _sidecar(path)
        try:
            stamp = json.loads(sidecar.read_text())
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except FileNotFoundError:
            return None
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("vector index %s is unreadable (%s); it will be rebuilt", path, exc)
            return None
        if stamp.get("generation") != generation or index.d != dim:
            log.info(
                "vector index %s is stale (generation %s, catalog %s); it will be rebuilt",
                path,
                stamp.get("generation"),
                generation,
            )
            return None
        if stamp.get("ntotal") != index.ntotal:
            log.warning(
                "vector index %s contains %d vectors, but its sidecar records %s",
                path,
                index.ntotal,
                stamp,
            )
            return None
        loaded = cls(dim)
        # A memory-mapped index cannot be modified; copy it into a writable one.
        loaded.index = faiss.clone_index(index) if isinstance(index, faiss.IndexIDMap2) else index
        if not isinstance(loaded.index, faiss.IndexIDMap2):
            loaded.index = faiss.IndexIDMap2(loaded.index)
        return loaded


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")
