"""Stable cluster ids across runs, and the drift between two runs.

K-Means numbers its clusters arbitrarily, so each new run is matched to the
previous one. The Hungarian algorithm pairs new and old centroids to maximise
the total cosine similarity. A pair keeps the old id when its similarity
reaches a threshold, and every other new cluster gets an id never used before.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from bindindex.store.vectors import normalise

# Centroids of the same concept in two runs of an unchanged index have a
# cosine near 1. Below this a pair is treated as two different clusters.
# NOTE: 0.5 was checked on planted clusters only, not tuned on imagebind_huge indexes.
DEFAULT_MIN_SIMILARITY = 0.5
# A cluster counts as split when at least this share of its surviving items
# went to each of two or more clusters. A merge is the same in reverse.
DRIFT_SHARE = 0.2


def match_ids(
    new_centroids: np.ndarray,
    old_centroids: np.ndarray,
    old_ids: list[int],
    next_id: int,
    *,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
) -> tuple[list[int], list[float | None]]:
    """Return a stable id for each row of ``new_centroids`` (k_new, d) and its match similarity.

    ``old_centroids`` (k_old, d) carry ``old_ids``. Unmatched new clusters get
    ``next_id``, ``next_id + 1``, ... in their row order. The similarity is
    None for an unmatched cluster.
    """
    from scipy.optimize import linear_sum_assignment  # slow to import; needed only here

    k_new = len(new_centroids)
    ids: list[int | None] = [None] * k_new
    similarity: list[float | None] = [None] * k_new
    if len(old_centroids) and k_new:
        cosine = normalise(new_centroids) @ normalise(old_centroids).T  # (k_new, k_old)
        rows, cols = linear_sum_assignment(cosine, maximize=True)
        for row, col in zip(rows, cols, strict=True):
            if cosine[row, col] >= min_similarity:
                ids[row] = old_ids[col]
                similarity[row] = float(cosine[row, col])
    stable: list[int] = []
    for cluster_id in ids:
        if cluster_id is None:
            cluster_id = next_id
            next_id += 1
        stable.append(cluster_id)
    return stable, similarity


def drift(old: dict[int, int], new: dict[int, int]) -> dict[str, Any]:
    """Compare two runs given as {item id: stable cluster id}.

    Returns the clusters that appeared and disappeared, the splits and the
    merges. A split is an old cluster that sent at least ``DRIFT_SHARE`` of
    its items to each of several new clusters, and a merge the reverse.
    ``items_moved`` counts the items present in both runs whose cluster changed.
    """
    common = old.keys() & new.keys()
    old_ids, new_ids = set(old.values()), set(new.values())
    flows: Counter[tuple[int, int]] = Counter((old[i], new[i]) for i in common)
    out_of: dict[int, Counter[int]] = defaultdict(Counter)
    into: dict[int, Counter[int]] = defaultdict(Counter)
    for (source, target), count in flows.items():
        out_of[source][target] += count
        into[target][source] += count

    moved = sum(1 for i in common if old[i] != new[i])
    return {
        "appeared": sorted(new_ids - old_ids),
        "disappeared": sorted(old_ids - new_ids),
        "split": _spread(out_of),
        "merged": _spread(into),
        "items_common": len(common),
        "items_moved": moved,
        "moved_share": moved / len(common) if common else None,
        "items_added": len(new.keys() - old.keys()),
        "items_removed": len(old.keys() - new.keys()),
    }


def _spread(flows: dict[int, Counter[int]]) -> dict[str, list[int]]:
    """Return the clusters whose items went at least ``DRIFT_SHARE`` each to several others."""
    spread = {}
    for cluster, counts in sorted(flows.items()):
        total = sum(counts.values())
        parts = sorted(other for other, count in counts.items() if count >= DRIFT_SHARE * total)
        if len(parts) >= 2:
            spread[str(cluster)] = parts
    return spread
