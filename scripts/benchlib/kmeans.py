"""K1 and K2: bindindex's K-Means against scikit-learn, and at a million vectors."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from benchlib.common import Result, peak_rss_bytes, synthetic_vectors, timer
from bindindex.cluster import kmeans

GIB = 1024**3


def run(k1_n: int, k1_k: int, k2_n: int, k2_k: int, niter: int) -> list[Result]:
    results = [k1(k1_n, k1_k, niter)]
    if k2_n:
        results.append(k2(k2_n, k2_k, niter))
    return results


def k1(n: int, k: int, niter: int) -> Result:
    """Time both on the same vectors; compare inertia over all points."""
    x = np.ascontiguousarray(synthetic_vectors(n))
    with timer() as elapsed:
        ours = kmeans(x, k, niter=niter, seed=0)
    ours_s = elapsed()
    # tol=0 makes scikit-learn run every iteration instead of stopping at convergence.
    reference = KMeans(n_clusters=k, n_init=1, max_iter=niter, tol=0.0, random_state=0)
    with timer() as elapsed:
        reference.fit(x)
    reference_s = elapsed()
    speedup = reference_s / ours_s
    inertia_ratio = ours.inertia / float(reference.inertia_)
    return Result(
        "K1",
        f"K-Means speed-up over scikit-learn, {n:,} x {x.shape[1]}, k={k}, {niter} iterations",
        speedup,
        "x",
        ">= 5x faster than scikit-learn KMeans (n_init=1) at inertia within 1 %",
        speedup >= 5 and inertia_ratio <= 1.01,
        {
            "bindindex_s": ours_s,
            "sklearn_s": reference_s,
            "bindindex_inertia": ours.inertia,
            "sklearn_inertia": float(reference.inertia_),
            "inertia_ratio": inertia_ratio,
            "sklearn_iterations": int(reference.n_iter_),
        },
    )


def k2(n: int, k: int, niter: int) -> Result:
    x = synthetic_vectors(n)  # memory-mapped; K-Means reads it without a copy
    with timer() as elapsed:
        result = kmeans(x, k, niter=niter, seed=0)
    seconds = elapsed()
    return Result(
        "K2",
        f"K-Means time, {n:,} x {x.shape[1]}, k={k}, {niter} iterations",
        seconds,
        "s",
        "<= 180 s at 1,000,000 x 1024, k=1000",
        n >= 1_000_000 and seconds <= 180,
        {"inertia": result.inertia, "peak_rss_gib": peak_rss_bytes() / GIB, "k_used": result.k},
    )
