"""Export of stored vectors for use in other tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bindindex.errors import UsageError
from bindindex.store.catalog import Catalog
from bindindex.store.vectors import normalise


def export_vectors(catalog: Catalog, dim: int, target: Path) -> int:
    """Write id, path, modality and vectors of every indexed item to ``.npz`` or ``.parquet``.

    ``vectors`` are unit-normalised (what search uses) and ``raw`` are the model
    outputs as ImageBind returns them. Returns the number of items written.
    """
    suffix = target.suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise UsageError(f"cannot export to {target}: the file name must end in .npz or .parquet")
    ids, raw = catalog.vectors(dim)
    items = catalog.items_by_ids(ids.tolist())
    paths = [items[int(i)].path for i in ids]
    modalities = [items[int(i)].modality or "unknown" for i in ids]
    unit = normalise(raw)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npz":
        np.savez(
            target,
            ids=ids,
            paths=np.array(paths, dtype=str),
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
    return len(ids)
