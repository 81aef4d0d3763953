"""Export of stored vectors for use in other tools."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bindindex.errors import UsageError
from bindindex.store.catalog import Catalog
from bindindex.store.vectors import normalise


def export_vectors(catalog: Catalog, dim: int, target: Path) -> int:
    """Write id, path, modality and vectors of every indexed item to ``.npz`` or ``.parquet``.

    ``vectors`` are unit-normalised (what search uses) and ``raw`` are the model
    outputs as ImageBind returns them. Parquet strings must be UTF-8, so there
    ``path`` shows other bytes as backslash escapes and ``path_bytes`` contains the
    exact name. Returns the number of items written.
    """
    suffix = target.suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise UsageError(f"cannot export to {target}: the file name must end in .npz or .parquet")
    if target.is_dir():
        raise UsageError(f"cannot export to {target}: it is a folder; name a file")
    ids, raw = catalog.vectors(dim)
    items = catalog.items_by_ids(ids.tolist())
    paths = [items[int(i)].path for i in ids]
    path_bytes = [items[int(i)].path_bytes for i in ids]
    modalities = [items[int(i)].modality or "unknown" for i in ids]
    unit = normalise(raw)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _write(target, suffix, dim, ids, paths, path_bytes, modalities, unit, raw)
    except OSError as exc:
        raise UsageError(f"cannot export to {target}: {exc.strerror or exc}") from exc
    return len(ids)


def _write(
    target: Path,
    suffix: str,
    dim: int,
    ids: np.ndarray,
    paths: list[str],
    path_bytes: list[bytes],
    modalities: list[str],
    unit: np.ndarray,
    raw: np.ndarray,
) -> None:
    if suffix == ".npz":
        np.savez(
            target,
            ids=ids,
            # NumPy strings hold any code point, so surrogate escapes of
            # names that are not UTF-8 survive and os functions reopen them.
            paths=np.array([os.fsdecode(p) for p in path_bytes], dtype=str),
            modalities=np.array(modalities, dtype=str),
            vectors=unit,
            raw=raw,
        )
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "id": pa.array(ids, type=pa.int64()),
                "path": pa.array(paths, type=pa.string()),
                "path_bytes": pa.array(path_bytes, type=pa.binary()),
                "modality": pa.array(modalities, type=pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(unit.reshape(-1), type=pa.float32()), dim
                ),
                "raw": pa.FixedSizeListArray.from_arrays(
                    pa.array(raw.reshape(-1), type=pa.float32()), dim
                ),
            }
        )
        pq.write_table(table, target)
