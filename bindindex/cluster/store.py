"""Reading and writing cluster runs in the catalog's cluster tables."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bindindex.errors import NotFoundError
from bindindex.store.catalog import Catalog, decode_vectors, encode_vector


@dataclass
class StoredCentroids:
    """The centroids (k, d) of one run, their stable ids and their names (None when unnamed)."""

    ids: list[int]
    vectors: np.ndarray
    names: list[str | None]
    name_scores: list[float | None]


def save_run(
    catalog: Catalog,
    *,
    k: int,
    k_requested: int,
    model_id: str,
    params: dict[str, Any],
    metrics: dict[str, Any],
    item_ids: np.ndarray,
    item_clusters: np.ndarray,
    distances: np.ndarray,
    centroids: StoredCentroids,
    means: dict[str, tuple[int, np.ndarray]],
) -> int:
    """Store one run in one transaction and return its id.

    The provisional assignments made since the previous run are deleted in
    the same transaction, because this run assigns every item for real.
    """
    with catalog.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO cluster_runs (created_at, k, k_requested, n_items, model_id, params, "
            "metrics) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                time.time(),
                k,
                k_requested,
                len(item_ids),
                model_id,
                json.dumps(params),
                json.dumps(metrics),
            ),
        )
        run_id = int(cursor.lastrowid or 0)
        conn.executemany(
            "INSERT INTO cluster_members (run_id, item_id, cluster, distance) VALUES (?, ?, ?, ?)",
            [
                (run_id, int(i), int(c), float(d))
                for i, c, d in zip(item_ids, item_clusters, distances, strict=True)
            ],
        )
        conn.executemany(
            "INSERT INTO cluster_centroids (run_id, cluster, vector, name, name_score) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (run_id, cluster_id, encode_vector(vector), name, score)
                for cluster_id, vector, name, score in zip(
                    centroids.ids,
                    centroids.vectors,
                    centroids.names,
                    centroids.name_scores,
                    strict=True,
                )
            ],
        )
        conn.executemany(
            "INSERT INTO cluster_modality_means (run_id, modality, count, vector) "
            "VALUES (?, ?, ?, ?)",
            [
                (run_id, modality, count, encode_vector(vector))
                for modality, (count, vector) in sorted(means.items())
            ],
        )
        conn.execute("DELETE FROM cluster_provisional")
    return run_id


def run_row(catalog: Catalog, run_id: int) -> dict[str, Any]:
    """Return the ``cluster_runs`` row of ``run_id`` with params and metrics decoded."""
    row = catalog.conn.execute(
        "SELECT id, created_at, k, k_requested, n_items, model_id, params, metrics "
        "FROM cluster_runs WHERE id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError(
            f"cluster run {run_id} not found; 'bindindex clusters list' shows the stored runs"
        )
    keys = ("id", "created_at", "k", "k_requested", "n_items", "model_id", "params", "metrics")
    result = dict(zip(keys, row, strict=True))
    result["params"] = json.loads(result["params"])
    result["metrics"] = json.loads(result["metrics"])
    return result


def latest_run_id(catalog: Catalog) -> int | None:
    row = catalog.conn.execute("SELECT MAX(id) FROM cluster_runs").fetchone()
    return None if row[0] is None else int(row[0])


def resolve_run(catalog: Catalog, run: str | int) -> int:
    """Turn ``latest`` or a run number into an existing run id."""
    if str(run) == "latest":
        latest = latest_run_id(catalog)
        if latest is None:
            raise NotFoundError("no cluster run stored yet; run 'bindindex cluster' first")
        return latest
    try:
        run_id = int(run)
    except ValueError as exc:
        raise NotFoundError(f"invalid run {run!r}: give a run number or 'latest'") from exc
    run_row(catalog, run_id)
    return run_id


def members(catalog: Catalog, run_id: int) -> dict[int, tuple[int, float]]:
    """Return {item id: (stable cluster id, squared distance to its centroid)} of one run."""
    return {
        item_id: (cluster, distance)
        for item_id, cluster, distance in catalog.cluster_members(run_id)
    }


def centroids(catalog: Catalog, run_id: int, dim: int) -> StoredCentroids:
    rows = catalog.conn.execute(
        "SELECT cluster, vector, name, name_score FROM cluster_centroids WHERE run_id = ? "
        "ORDER BY cluster",
        (run_id,),
    ).fetchall()
    return StoredCentroids(
        ids=[int(row[0]) for row in rows],
        vectors=decode_vectors([row[1] for row in rows], dim),
        names=[row[2] for row in rows],
        name_scores=[None if row[3] is None else float(row[3]) for row in rows],
    )


def modality_means(catalog: Catalog, run_id: int, dim: int) -> dict[str, np.ndarray]:
    rows = catalog.conn.execute(
        "SELECT modality, vector FROM cluster_modality_means WHERE run_id = ?", (run_id,)
    ).fetchall()
    return {str(row[0]): decode_vectors([row[1]], dim)[0] for row in rows}


def next_cluster_id(catalog: Catalog) -> int:
    """Return the smallest id above every cluster id ever stored, so that ids are never reused."""
    row = catalog.conn.execute("SELECT MAX(cluster) FROM cluster_centroids").fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def replace_provisional(
    catalog: Catalog,
    run_id: int,
    item_ids: np.ndarray,
    clusters: np.ndarray,
    distances: np.ndarray,
) -> None:
    """Store the provisional clusters of items that ``run_id`` did not cluster."""
    now = time.time()
    with catalog.transaction() as conn:
        conn.execute("DELETE FROM cluster_provisional")
        conn.executemany(
            "INSERT INTO cluster_provisional (item_id, run_id, cluster, distance, assigned_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (int(i), run_id, int(c), float(d), now)
                for i, c, d in zip(item_ids, clusters, distances, strict=True)
            ],
        )


def provisional(catalog: Catalog, run_id: int) -> dict[int, tuple[int, float]]:
    """Return {item id: (cluster id, squared distance)} of items assigned provisionally to a run."""
    rows = catalog.conn.execute(
        "SELECT item_id, cluster, distance FROM cluster_provisional WHERE run_id = ?", (run_id,)
    )
    return {int(i): (int(c), float(d)) for i, c, d in rows}
