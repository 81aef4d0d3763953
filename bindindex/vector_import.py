"""Read precomputed embeddings from a NumPy ``.npy`` file.

Embeddings made elsewhere (on a GPU server, by another ImageBind program) come
in whatever dtype and memory order the writer used: float64 from NumPy
defaults, Fortran order from a transpose. FAISS and the catalog need
C-contiguous float32 rows, so every array is converted here, once.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bindindex.errors import UsageError
from bindindex.ingest import Failure
from bindindex.store.catalog import Catalog
from bindindex.store.vectors import VectorIndex, normalise, row_norms

# Rows are read with a memory map and converted in blocks of this many rows,
# so a large float64 file is never held twice in memory.
_BLOCK_ROWS = 65_536


def read_vector_file(path: str | os.PathLike[str], dim: int) -> np.ndarray:
    """Return the rows of a 2-D ``.npy`` file as C-contiguous float32 of shape (n, dim).

    Raises UsageError when the file is not a readable ``.npy`` array of real
    numbers with ``dim`` columns. Rows that are not finite or are all zero are
    kept: the caller records them as failed items.
    """
    file = Path(path)
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as error:
        raise UsageError(f"vector file not found: {file}") from error
    except (OSError, ValueError, EOFError) as error:
        # allow_pickle=False turns object arrays (which could run code) into a
        # ValueError, as it does for any file that is not .npy. NumPy's message
        # then suggests loading unsafely, which bindindex never does.
        reason = "pickled Python objects" if "pickle" in str(error) else str(error)
        raise UsageError(
            f"{file} is not a NumPy .npy array file of numbers ({reason}); save the embeddings "
            "with numpy.save(path, array) as a 2-D array with one row per item"
        ) from error
    if not isinstance(array, np.ndarray):
        raise UsageError(f"{file} contains several arrays; give one .npy file with a 2-D array")
    if array.ndim != 2:
        raise UsageError(
            f"{file} contains an array of shape {array.shape}; expected 2 dimensions, "
            f"one row of {dim} numbers per item"
        )
    if array.dtype.kind not in "fiu":
        raise UsageError(
            f"{file} contains {array.dtype} values; expected real numbers (float16, float32 or "
            "float64)"
        )
    if array.shape[1] != dim:
        raise UsageError(
            f"{file} contains vectors of {array.shape[1]} dimensions, but this index stores "
            f"{dim}-dimensional vectors; import embeddings of the index's model only"
        )
    out = np.empty(array.shape, dtype=np.float32)  # (n, dim), C order
    for start in range(0, len(array), _BLOCK_ROWS):
        block = array[start : start + _BLOCK_ROWS]
        with np.errstate(over="ignore", invalid="ignore"):
            # float64 values beyond float32's range become inf here and are
            # then rejected as non-finite, as NaN rows are.
            out[start : start + len(block)] = block
    return out


@dataclass
class ImportReport:
    """Counts and ids of one import of a vector file."""

    imported: int = 0
    replaced: int = 0
    failed: int = 0
    ids: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "replaced": self.replaced,
            "failed": self.failed,
            "ids": self.ids,
            "failures": [f.__dict__ for f in self.failures],
        }


def row_path(source: Path, label: str) -> bytes:
    """Catalog path of one imported row.

    The "vectors:" prefix keeps these rows out of every folder scan: no scanned
    file path starts with it, so re-indexing a folder that contains the .npy file
    never deletes its rows as missing files.
    """
    return b"vectors:" + os.fsencode(source) + b"#" + label.encode("utf-8")


def import_rows(
    catalog: Catalog,
    vectors: VectorIndex,
    source: Path,
    rows: np.ndarray,
    *,
    modality: str,
    labels: Sequence[str],
    model_id: str,
    record_model: Callable[[sqlite3.Connection], None],
) -> ImportReport:
    """Store ``rows`` (n, dim) float32 as items of ``modality``, one transaction per block.

    A row that is not finite or is all zero is recorded as a failed item, and
    its earlier vector, if any, is removed.
    """
    report = ImportReport()
    for start in range(0, len(rows), _BLOCK_ROWS):
        block = rows[start : start + _BLOCK_ROWS]
        block_labels = labels[start : start + len(block)]
        norms = row_norms(block)  # (b,)
        usable = np.isfinite(block).all(axis=1) & (norms > 0)
        good_ids: list[int] = []
        dropped: list[int] = []
        now = time.time()
        with catalog.transaction() as conn:
            if usable.any():
                record_model(conn)
            for vector, label, ok in zip(block, block_labels, usable, strict=True):
                key = row_path(source, label)
                existing = catalog.item_by_path(key)
                values: dict[str, Any] = {
                    "path": key.decode("utf-8", errors="backslashreplace"),
                    "path_bytes": key,
                    "root": "vectors:" + str(source),
                    "modality": modality,
                    "format": "npy",
                    "size": 0,
                    "mtime_ns": 0,
                    "content_hash": None,
                    "flags": ("imported",),
                    "indexed_at": now,
                    "model_id": model_id if ok else None,
                    "precision": "imported" if ok else None,
                    "status": "indexed" if ok else "failed",
                    "reason": None if ok else "non_finite",
                    "detail": None if ok else f"row {label} is not finite or is all zeros",
                }
                item_id = catalog.upsert_item(conn, values)
                if ok:
                    catalog.put_vector(conn, item_id, vector)
                    good_ids.append(item_id)
                    report.imported += 1
                    if existing is not None:
                        report.replaced += 1
                else:
                    if existing is not None and existing.status == "indexed":
                        catalog.delete_vector(conn, item_id)
                        dropped.append(item_id)
                    report.failed += 1
                    report.failures.append(
                        Failure(values["path"], "non_finite", values["detail"])
                    )
            catalog.bump_generation(conn)
        vectors.remove(np.array(dropped, dtype=np.int64))
        vectors.add(np.array(good_ids, dtype=np.int64), normalise(block[usable]))
        report.ids.extend(good_ids)
    return report
