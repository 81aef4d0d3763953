"""A clustering run over an index's catalog: choose k, centre, cluster, match ids, measure, store.

Also the work between runs: the provisional cluster of newly indexed items,
and how much the index changed since the latest run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bindindex.cluster import store
from bindindex.cluster.centering import center, modality_means
from bindindex.cluster.identity import DEFAULT_MIN_SIMILARITY, drift, match_ids
from bindindex.cluster.kmeans import KMeansResult, choose_k, kmeans, silhouette
from bindindex.cluster.labels import item_labels
from bindindex.cluster.measures import consistency, cross_modal_cosines, sizes_by_modality
from bindindex.errors import UsageError
from bindindex.store.catalog import Catalog
from bindindex.store.vectors import normalise

log = logging.getLogger(__name__)

# Names centroids (k, d): one (prompt, cosine) pair per row.
Namer = Callable[[np.ndarray], list[tuple[str, float]]]


# FAISS stores the K-Means seed in a C int, and scikit-learn's samplers take 0..2**32-1.
MAX_SEED = 2**31 - 1

@dataclass
class ClusterRun:
    """A stored K-Means run: its id, the k used and every measure computed."""

    id: int
    k: int
    k_requested: int
    n_items: int
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.id,
            "k": self.k,
            "k_requested": self.k_requested,
            "n_items": self.n_items,
            "warnings": self.warnings,
            **self.metrics,
        }


@dataclass
class ClusterOptions:
    """How to cluster. ``auto_k`` (MIN, MAX), when given, replaces ``k``."""

    k: int = 8
    auto_k: tuple[int, int] | None = None
    labels: str | os.PathLike[str] | None = None
    seed: int = 0
    niter: int = 20
    center: bool = False
    min_similarity: float = DEFAULT_MIN_SIMILARITY

    def params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "auto_k": list(self.auto_k) if self.auto_k else None,
            "seed": self.seed,
            "niter": self.niter,
            "labels": None if self.labels is None else str(self.labels),
            "center": self.center,
            "min_similarity": self.min_similarity,
        }


def check_options(options: ClusterOptions) -> None:
    """Raise UsageError for a k, seed or iteration count that the clustering code cannot take."""
    for name, value, low, high in (
        ("k", options.k, 1, None),
        ("seed", options.seed, 0, MAX_SEED),
        ("niter", options.niter, 1, None),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"invalid {name} {value!r}: it must be a whole number")
        if value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            raise UsageError(f"invalid {name} {value}: it must be at least {low}{upper}")


def cluster_catalog(
    catalog: Catalog, dim: int, options: ClusterOptions, *, namer: Namer | None = None
) -> ClusterRun:
    """Cluster every stored vector, give the clusters stable ids, measure and store the run."""
    check_options(options)
    ids, raw = catalog.vectors(dim)
    if len(ids) == 0:
        raise UsageError("the index contains no vectors to cluster; index some files first")
    unit = normalise(raw)  # (n, d)
    items = catalog.items_by_ids(ids.tolist())
    rows = [items[int(i)] for i in ids]
    modalities = [row.modality or "unknown" for row in rows]
    labels = item_labels(rows, options.labels) if options.labels is not None else None
    warnings: list[str] = []

    kinds = sorted(set(modalities))
    if len(kinds) < 2:
        warnings.append(
            f"the index contains only {kinds[0]} items, so the cross-modal measures are n/a"
            + ("; centring one modality only subtracts its mean" if options.center else "")
        )
    means = modality_means(unit, modalities) if options.center else {}
    space = center(unit, modalities, means) if options.center else unit  # (n, d)

    metrics: dict[str, Any] = {}
    k_target = options.k
    if options.auto_k is not None:
        choice = choose_k(space, *options.auto_k, seed=options.seed, niter=options.niter)
        k_target = choice.k
        warnings.extend(choice.warnings)
        metrics["auto_k"] = {
            "range": list(options.auto_k),
            "evaluated": [choice.k_min, choice.k_max],
            "sample_size": choice.sample_size,
            "rule": choice.rule,
            "chosen": choice.k,
            "table": choice.table,
        }

    result = kmeans(space, k_target, niter=options.niter, seed=options.seed)
    warnings.extend(result.warnings)

    previous = store.latest_run_id(catalog)
    old_ids, old_centroids, old_members = _previous_clusters(
        catalog, dim, previous, options, ids, space
    )
    stable, similarity = match_ids(
        result.centroids,
        old_centroids,
        old_ids,
        store.next_cluster_id(catalog),
        min_similarity=options.min_similarity,
    )
    item_clusters = np.array(stable, dtype=np.int64)[result.assignments]  # (n,)
    new_members = {int(i): int(c) for i, c in zip(ids, item_clusters, strict=True)}

    metrics["inertia"] = result.inertia
    metrics["silhouette"] = silhouette(space, result.assignments, seed=options.seed)
    metrics["sizes"] = sizes_by_modality(item_clusters, modalities, sorted(stable))
    metrics["cross_modal"] = cross_modal_cosines(unit, modalities, labels)
    if options.center:
        metrics["cross_modal_centered"] = cross_modal_cosines(space, modalities, labels)
    if labels is not None:
        metrics["consistency"] = consistency(item_clusters, labels, modalities)
    metrics["identity"] = {
        "previous_run": previous,
        "matched": {
            str(cluster_id): score
            for cluster_id, score in zip(stable, similarity, strict=True)
            if score is not None
        },
        "new": sorted(c for c, s in zip(stable, similarity, strict=True) if s is None),
    }
    metrics["drift"] = drift(old_members, new_members) if previous is not None else None

    names: list[str | None] = [None] * len(stable)
    scores: list[float | None] = [None] * len(stable)
    if namer is not None:
        for row, (name, score) in enumerate(namer(_uncentred_centroids(unit, result))):
            names[row], scores[row] = name, score
        metrics["names"] = {
            str(cluster_id): {"name": name, "score": score}
            for cluster_id, name, score in zip(stable, names, scores, strict=True)
        }

    run_id = store.save_run(
        catalog,
        k=result.k,
        k_requested=k_target,
        model_id=catalog.get_meta("model_id") or "unknown",
        params=options.params(),
        metrics={**metrics, "warnings": warnings},
        item_ids=ids,
        item_clusters=item_clusters,
        distances=result.distances,
        centroids=store.StoredCentroids(stable, result.centroids, names, scores),
        means={
            modality: (modalities.count(modality), vector) for modality, vector in means.items()
        },
    )
    for warning in warnings:
        log.info("cluster run %d: %s", run_id, warning)
    return ClusterRun(
        id=run_id,
        k=result.k,
        k_requested=k_target,
        n_items=len(ids),
        metrics=metrics,
        warnings=warnings,
    )


def _uncentred_centroids(unit: np.ndarray, result: KMeansResult) -> np.ndarray:
    """Return each cluster's mean (k, d) of its members' uncentred unit vectors ``unit`` (n, d).

    Clusters are named in this space because the text prompts live there. A
    cluster that ended without members keeps its K-Means centroid.
    """
    rows = []
    for cluster in range(result.k):
        chosen = result.assignments == cluster
        rows.append(unit[chosen].mean(axis=0) if chosen.any() else result.centroids[cluster])
    return np.stack(rows)


def _previous_clusters(
    catalog: Catalog,
    dim: int,
    previous: int | None,
    options: ClusterOptions,
    ids: np.ndarray,
    space: np.ndarray,
) -> tuple[list[int], np.ndarray, dict[int, int]]:
    """Return the ids, centroids (in this run's space) and members of the previous run.

    A previous run made in another space (with or without centring) has its
    centroids recomputed from its surviving members' vectors in this run's
    space, so that the matching compares like with like.
    """
    if previous is None:
        return [], np.zeros((0, space.shape[1]), dtype=np.float32), {}
    old_members = {item: cluster for item, (cluster, _) in store.members(catalog, previous).items()}
    stored = store.centroids(catalog, previous, dim)
    same_space = bool(store.run_row(catalog, previous)["params"].get("center")) == options.center
    if same_space:
        return stored.ids, stored.vectors, old_members
    position = {int(item): row for row, item in enumerate(ids)}
    kept_ids, vectors = [], []
    for cluster_id in stored.ids:
        rows = [position[i] for i, c in old_members.items() if c == cluster_id and i in position]
        if rows:
            kept_ids.append(cluster_id)
            vectors.append(space[rows].mean(axis=0))
    if not vectors:
        return [], np.zeros((0, space.shape[1]), dtype=np.float32), old_members
    return kept_ids, np.stack(vectors), old_members


def run_space(
    catalog: Catalog, dim: int, run_id: int, unit: np.ndarray, modalities: list[str]
) -> np.ndarray:
    """Map unit vectors (n, d) into the space that run ``run_id`` clustered in."""
    means = store.modality_means(catalog, run_id, dim)
    return center(unit, modalities, means) if means else unit


def assign_provisional(catalog: Catalog, dim: int) -> int:
    """Assign every item that the latest run did not cluster to its nearest centroid.

    Returns the number of items assigned. The assignment is provisional: the
    next full run replaces it.
    """
    latest = store.latest_run_id(catalog)
    if latest is None:
        return 0
    # Only the vectors of unclustered items are read, so that indexing a few
    # files into a large index stays cheap.
    unclustered = [
        int(row[0])
        for row in catalog.conn.execute(
            "SELECT v.item_id FROM vectors v JOIN items i ON i.id = v.item_id "
            "WHERE i.status = 'indexed' AND v.item_id NOT IN "
            "(SELECT item_id FROM cluster_members WHERE run_id = ?) ORDER BY v.item_id",
            (latest,),
        )
    ]
    new_ids, raw = catalog.vectors(dim, unclustered)
    if len(new_ids) == 0:
        store.replace_provisional(catalog, latest, new_ids, new_ids, np.zeros(0))
        return 0
    items = catalog.items_by_ids(new_ids.tolist())
    modalities = [items[int(i)].modality or "unknown" for i in new_ids]
    space = run_space(catalog, dim, latest, normalise(raw), modalities)  # (m, d)
    centroids = store.centroids(catalog, latest, dim)
    c = centroids.vectors  # (k, d)
    squared = (
        (space**2).sum(axis=1)[:, None] - 2 * space @ c.T + (c**2).sum(axis=1)[None, :]
    )  # (m, k)
    np.maximum(squared, 0.0, out=squared)
    nearest = squared.argmin(axis=1)
    clusters = np.array(centroids.ids, dtype=np.int64)[nearest]
    distances = squared[np.arange(len(new_ids)), nearest]
    store.replace_provisional(catalog, latest, new_ids, clusters, distances)
    return len(new_ids)


def change_since_latest(catalog: Catalog) -> dict[str, Any]:
    """Measure how much the indexed items changed since the latest run.

    ``fraction`` is (added + removed + re-embedded items) divided by the
    number of items the run clustered, or None when no run exists.
    """
    latest = store.latest_run_id(catalog)
    if latest is None:
        return {"run": None, "fraction": None, "added": None, "removed": None, "changed": None}
    run = store.run_row(catalog, latest)
    clustered = set(store.members(catalog, latest))
    current = {
        int(row[0]): float(row[1])
        for row in catalog.conn.execute(
            "SELECT i.id, i.indexed_at FROM items i JOIN vectors v ON v.item_id = i.id "
            "WHERE i.status = 'indexed'"
        )
    }
    added = len(current.keys() - clustered)
    removed = len(clustered - current.keys())
    changed = sum(1 for i in clustered & current.keys() if current[i] > float(run["created_at"]))
    return {
        "run": latest,
        "fraction": (added + removed + changed) / max(int(run["n_items"]), 1),
        "added": added,
        "removed": removed,
        "changed": changed,
    }
