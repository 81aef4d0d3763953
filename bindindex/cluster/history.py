"""The stored cluster runs: listing, one run's clusters and members, diffs and export."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bindindex.cluster import store
from bindindex.cluster.identity import drift
from bindindex.errors import UsageError
from bindindex.store.catalog import Catalog

EXPORT_FORMATS = ("csv", "json", "parquet")
MEMBER_FIELDS = (
    "run",
    "item_id",
    "path",
    "modality",
    "cluster",
    "cluster_name",
    "distance",
    "provisional",
)


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def summarise(row: dict[str, Any]) -> dict[str, Any]:
    """Return the one-line view of a ``cluster_runs`` row: parameters, k, silhouette and drift."""
    metrics, params = row["metrics"], row["params"]
    changes = metrics.get("drift") or {}
    return {
        "run": row["id"],
        "created_at": _timestamp(row["created_at"]),
        "k": row["k"],
        "k_requested": row["k_requested"],
        "auto_k": params.get("auto_k"),
        "center": bool(params.get("center")),
        "n_items": row["n_items"],
        "model_id": row["model_id"],
        "silhouette": metrics.get("silhouette"),
        "previous_run": (metrics.get("identity") or {}).get("previous_run"),
        "appeared": len(changes.get("appeared", [])),
        "disappeared": len(changes.get("disappeared", [])),
        "items_moved": changes.get("items_moved"),
    }


def list_runs(catalog: Catalog) -> list[dict[str, Any]]:
    return [summarise(row) for row in catalog.cluster_runs()]


def member_rows(catalog: Catalog, dim: int, run_id: int) -> list[dict[str, Any]]:
    """Return one row per item of the run, with the provisional items of the latest run last."""
    clustered = store.members(catalog, run_id)
    pending = store.provisional(catalog, run_id)
    centroids = store.centroids(catalog, run_id, dim)
    names = dict(zip(centroids.ids, centroids.names, strict=True))
    items = catalog.items_by_ids([*clustered, *pending])
    rows = []
    for table, is_provisional in ((clustered, False), (pending, True)):
        for item_id, (cluster, distance) in sorted(table.items()):
            item = items.get(item_id)
            rows.append(
                {
                    "run": run_id,
                    "item_id": item_id,
                    # An item deleted since the run keeps its row, without a path.
                    "path": None if item is None else item.path,
                    "modality": None if item is None else item.modality,
                    "cluster": cluster,
                    "cluster_name": names.get(cluster),
                    "distance": distance,
                    "provisional": is_provisional,
                }
            )
    return rows


def show_run(catalog: Catalog, dim: int, run_id: int, *, with_members: bool) -> dict[str, Any]:
    """Return a run's summary, metrics and clusters (size by modality, name, and members)."""
    row = store.run_row(catalog, run_id)
    rows = member_rows(catalog, dim, run_id)
    centroids = store.centroids(catalog, run_id, dim)
    clusters = []
    for cluster_id, name, score in zip(
        centroids.ids, centroids.names, centroids.name_scores, strict=True
    ):
        mine = [r for r in rows if r["cluster"] == cluster_id]
        entry: dict[str, Any] = {
            "cluster": cluster_id,
            "name": name,
            "name_score": score,
            "size": sum(1 for r in mine if not r["provisional"]),
            "provisional": sum(1 for r in mine if r["provisional"]),
            "modalities": dict(sorted(Counter(str(r["modality"]) for r in mine).items())),
        }
        if with_members:
            entry["members"] = [
                {key: r[key] for key in ("item_id", "path", "modality", "distance", "provisional")}
                for r in sorted(mine, key=lambda r: r["distance"])
            ]
        clusters.append(entry)
    return {
        **summarise(row),
        "params": row["params"],
        "metrics": row["metrics"],
        "clusters": clusters,
    }


def diff_runs(catalog: Catalog, run_a: int, run_b: int) -> dict[str, Any]:
    """Compare two runs by stable cluster id: clusters that appeared, vanished, split, merged."""
    old = {item: cluster for item, (cluster, _) in store.members(catalog, run_a).items()}
    new = {item: cluster for item, (cluster, _) in store.members(catalog, run_b).items()}
    sizes_a, sizes_b = Counter(old.values()), Counter(new.values())
    return {
        "run_a": run_a,
        "run_b": run_b,
        **drift(old, new),
        "sizes": [
            {"cluster": c, "size_a": sizes_a.get(c, 0), "size_b": sizes_b.get(c, 0)}
            for c in sorted(sizes_a.keys() | sizes_b.keys())
        ],
    }


def export_run(
    catalog: Catalog, dim: int, run_id: int, fmt: str, target: Path | None
) -> str | None:
    """Write the run's member rows as csv, json or parquet to ``target``.

    Without a target, csv and json are returned as text; parquet needs a file.
    """
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"invalid format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    rows = member_rows(catalog, dim, run_id)
    if fmt == "parquet":
        if target is None:
            raise UsageError("parquet is binary: give --output FILE")
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {name: [row[name] for row in rows] for name in MEMBER_FIELDS}
        pq.write_table(pa.table(columns), target)
        return None
    if fmt == "json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MEMBER_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    if target is None:
        return text
    target.write_text(text, encoding="utf-8")
    return None
