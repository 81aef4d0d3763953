"""K-Means over unit vectors, the silhouette, and the choice of k."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import faiss
import numpy as np

from bindindex.errors import UsageError

log = logging.getLogger(__name__)

# Silhouette needs all pairwise distances; above this many items it runs on a
# seeded random sample of this size.
SILHOUETTE_SAMPLE = 10_000
# Fewer items per cluster than this makes centroids and metrics unreliable.
MIN_POINTS_PER_CLUSTER = 3
# K-Means runs from this many seeded k-means++ starts and keeps the lowest inertia.
DEFAULT_RESTARTS = 3
# Below this many vectors FAISS runs K-Means on one thread. On small inputs its
# OpenMP threads cost more than they save: 36 vectors of 1024 dimensions with
# k=5 took 0.2 s on 2 busy cores and under 1 ms on one thread.
SINGLE_THREAD_BELOW = 10_000
# K-Means trains on a seeded sample of at most this many points per centroid
# (FAISS's own default), and then every vector is assigned to its nearest
# centroid. On the 1024-d benchmark mixture the inertia over all points stays
# within 1 % of training on every point.
KMEANS_POINTS_PER_CENTROID = 256
# From this many vectors on, K-Means runs once from FAISS's random start. The
# k-means++ start costs n * k * d per chosen centre and the restarts multiply the
# training time, while with many points per cluster a random start rarely lands
# two centres in one cluster.
PLUSPLUS_BELOW = 50_000


@dataclass
class KMeansResult:
    """Centroids (k, d), assignments (n,), squared distances (n,), objective and the k used."""

    centroids: np.ndarray
    assignments: np.ndarray
    distances: np.ndarray
    inertia: float
    k: int
    k_requested: int
    warnings: list[str] = field(default_factory=list)


def kmeans(
    x: np.ndarray, k: int, *, niter: int = 20, seed: int = 0, nredo: int = DEFAULT_RESTARTS
) -> KMeansResult:
    """Cluster unit vectors ``x`` (n, d) with FAISS K-Means from k-means++ starts.

    Runs ``nredo`` times from seeded k-means++ initialisations and keeps the
    run with the lowest inertia. A k above the number of distinct vectors is
    clamped to that number, and ``warnings`` states the k used.
    """
    n = len(x)
    if k < 1:
        raise UsageError(f"invalid k {k}: it must be at least 1")
    if n == 0:
        raise UsageError("the index contains no vectors to cluster; index some files first")
    warnings: list[str] = []
    distinct = _count_distinct(x, stop_at=k)
    k_used = min(k, distinct)
    if k_used < k:
        warnings.append(
            f"k={k} is more than the {distinct} distinct vectors in the index; clustered with k={k_used}"
        )
    if n < k_used * MIN_POINTS_PER_CLUSTER:
        warnings.append(
            f"only {n} items for k={k_used}: fewer than {MIN_POINTS_PER_CLUSTER} per cluster on "
            "average, so clusters and metrics are unreliable"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    with _threads_for(n):
        if k_used == 1:
            best = _assign(x, x.mean(axis=0, keepdims=True))
        elif n >= PLUSPLUS_BELOW:
            best = _assign(x, _train(x, k_used, niter=niter, seed=seed, plusplus=False))
        else:
            best = _assign(x, _train(x, k_used, niter=niter, seed=seed))
            for attempt in range(1, nredo):
                candidate = _assign(x, _train(x, k_used, niter=niter, seed=seed + attempt))
                if candidate[2].sum() < best[2].sum():
                    best = candidate
    centroids, assignments, distances = best
    return KMeansResult(
        centroids=centroids,
        assignments=assignments,
        distances=distances,
        inertia=float(distances.sum()),
        k=k_used,
        k_requested=k,
        warnings=warnings,
    )


@contextmanager
def _threads_for(n: int) -> Iterator[None]:
    """Run FAISS on one thread for fewer than ``SINGLE_THREAD_BELOW`` vectors, then restore."""
    if n >= SINGLE_THREAD_BELOW:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _train(
    x: np.ndarray, k: int, *, niter: int, seed: int, plusplus: bool = True
) -> np.ndarray:
    """Return the centroids (k, d) of one FAISS K-Means run.

    FAISS starts from k random items. On small planted sets that often puts two
    starts in one cluster and ends in a worse local optimum, so there the
    starts come from k-means++, which spreads them out.
    """
    from sklearn.cluster import kmeans_plusplus  # slow to import; needed only here

    d = x.shape[1]
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=seed,
        min_points_per_centroid=1,
        max_points_per_centroid=KMEANS_POINTS_PER_CENTROID,
        verbose=False,
    )
    if plusplus:
        start, _ = kmeans_plusplus(x, k, random_state=seed)  # (k, d)
        km.train(x, init_centroids=np.ascontiguousarray(start, dtype=np.float32))
    else:
        km.train(x)
    return np.asarray(km.centroids, dtype=np.float32).copy()


def _count_distinct(x: np.ndarray, *, stop_at: int) -> int:
    """Count the distinct rows of ``x`` after rounding to 6 decimals, stopping at ``stop_at``.

    Rows are compared by a digest of their rounded bytes, read in chunks, so a
    million vectors need neither a sorted copy nor a second copy of ``x``.
    """
    seen: set[bytes] = set()
    chunk = 4096
    for start in range(0, len(x), chunk):
        # Adding 0.0 turns -0.0 into 0.0, so both count as one value as in np.unique.
        rounded = np.round(np.asarray(x[start : start + chunk], dtype=np.float32), 6) + 0.0
        for row in rounded:
            seen.add(hashlib.blake2b(row.tobytes(), digest_size=16).digest())
        if len(seen) >= stop_at:
            break
    return len(seen)


def _assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (centroids, nearest centroid (n,), squared distance (n,)) for ``x`` (n, d)."""
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(centroids)
    squared, nearest = index.search(x, 1)
    return (
        centroids,
        nearest[:, 0].astype(np.int64),
        np.maximum(squared[:, 0], 0.0).astype(np.float32),
    )


def silhouette(x: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> float | None:
    """Mean silhouette (Euclidean on unit vectors), or None where it is undefined."""
    from sklearn import metrics as skm  # slow to import; needed only here

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(x):
        return None
    sample = min(len(x), SILHOUETTE_SAMPLE)
    return float(
        skm.silhouette_score(
            x,
            labels,
            metric="euclidean",
            sample_size=sample if sample < len(x) else None,
            random_state=seed,
        )
    )


# -- choosing k --------------------------------------------------------------------

# Every k of an --auto-k range is scored on one seeded sample of at most this
# many items, so the measures of different k are comparable and silhouette,
# which is quadratic in the sample size, stays affordable.
AUTO_K_SAMPLE = 5_000
# Silhouette values closer than this are treated as equal, and the smaller k wins.
SILHOUETTE_TIE = 0.01
K_RULE = (
    "the k with the highest mean silhouette on the sample; where several k score within "
    f"{SILHOUETTE_TIE} of the best, the smallest of them"
)


@dataclass
class KChoice:
    """The scores of every k tried, the k chosen by ``K_RULE`` and what was clamped."""

    k: int
    table: list[dict[str, float | int | None]]
    k_min: int
    k_max: int
    sample_size: int
    rule: str = K_RULE
    warnings: list[str] = field(default_factory=list)


def parse_k_range(text: str) -> tuple[int, int]:
    """Parse ``MIN..MAX`` (inclusive) into two integers with 2 <= MIN <= MAX."""
    parts = text.split("..")
    try:
        if len(parts) != 2:
            raise ValueError(text)
        low, high = int(parts[0]), int(parts[1])
    except ValueError as exc:
        raise UsageError(f"invalid --auto-k {text!r}: write MIN..MAX, for example 2..12") from exc
    if low < 2:
        raise UsageError(
            f"invalid --auto-k {text!r}: MIN must be at least 2, because the silhouette of "
            "one cluster is undefined"
        )
    if high < low:
        raise UsageError(f"invalid --auto-k {text!r}: MAX is smaller than MIN")
    return low, high


def choose_k(x: np.ndarray, k_min: int, k_max: int, *, seed: int = 0, niter: int = 20) -> KChoice:
    """Run K-Means for every k in ``k_min..k_max`` on unit vectors ``x`` (n, d) and pick one.

    Inertia is over all items. Silhouette, Calinski-Harabasz and Davies-Bouldin
    are computed on one seeded sample shared by every k. A range above the
    number of distinct vectors is clamped, and ``warnings`` states the
    range used.
    """
    from sklearn import metrics as skm  # slow to import; needed only here

    n = len(x)
    if n == 0:
        raise UsageError("the index contains no vectors to cluster; index some files first")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, AUTO_K_SAMPLE), replace=False))
    distinct = len(np.unique(np.round(x, 6), axis=0))
    # Silhouette is defined only for 2 <= k <= sample size - 1.
    high = min(k_max, distinct, len(sample) - 1)
    warnings: list[str] = []
    if high < 2:
        warnings.append(
            f"--auto-k {k_min}..{k_max}: the index has only {distinct} distinct vectors "
            f"among {n} items, so no k of 2 or more can be scored; clustered with k=1"
        )
        return KChoice(1, [], k_min, k_max, len(sample), warnings=warnings)
    low = min(k_min, high)
    if (low, high) != (k_min, k_max):
        warnings.append(
            f"--auto-k {k_min}..{k_max} clamped to {low}..{high}: the index has {distinct} "
            f"distinct vectors among {n} items"
        )

    table: list[dict[str, float | int | None]] = []
    xs = x[sample]
    for k in range(low, high + 1):
        result = kmeans(x, k, niter=niter, seed=seed)
        labels = result.assignments[sample]
        row: dict[str, float | int | None] = {
            "k": k,
            "inertia": result.inertia,
            "silhouette": None,
            "calinski_harabasz": None,
            "davies_bouldin": None,
        }
        if 2 <= len(np.unique(labels)) < len(xs):
            row["silhouette"] = float(skm.silhouette_score(xs, labels, metric="euclidean"))
            row["calinski_harabasz"] = float(skm.calinski_harabasz_score(xs, labels))
            row["davies_bouldin"] = float(skm.davies_bouldin_score(xs, labels))
        table.append(row)

    scored = [row for row in table if row["silhouette"] is not None]
    if not scored:
        warnings.append("no k of the range produced two clusters on the sample; chose the smallest")
        return KChoice(low, table, low, high, len(sample), warnings=warnings)
    best = max(float(row["silhouette"] or 0.0) for row in scored)
    chosen = min(
        int(row["k"] or 0)
        for row in scored
        if float(row["silhouette"] or 0.0) >= best - SILHOUETTE_TIE
    )
    return KChoice(chosen, table, low, high, len(sample), warnings=warnings)
