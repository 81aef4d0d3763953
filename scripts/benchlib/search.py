"""S1, S2 and the search scaling table: bindindex's vector index against exact search and HNSW."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchlib.common import (
    CACHE_DIR,
    Result,
    exact_top_k,
    peak_rss_bytes,
    recall_at_k,
    rss_bytes,
    rss_split_bytes,
    synthetic_queries,
    synthetic_vectors,
    timer,
)
from bindindex.store.vectors import VectorIndex

DIM = 1024
K = 10
GIB = 1024**3
SCRIPTS_DIR = str(Path(__file__).resolve().parent.parent)


def ground_truth(xb: np.ndarray, xq: np.ndarray, n: int) -> np.ndarray:
    """Exact top-K ids of the queries, cached beside the vectors."""
    path = CACHE_DIR / f"truth-{n}-{len(xq)}.npy"
    if path.is_file():
        return np.load(path)
    truth = exact_top_k(xb, xq, K)
    np.save(path, truth)
    return truth


def build_bindindex(n: int) -> tuple[Path, float, int]:
    """Build bindindex's index over the first ``n`` vectors and save it; return path, seconds, peak RSS."""
    xb = synthetic_vectors(n)
    path = CACHE_DIR / f"bindindex-{n}.faiss"
    with timer() as elapsed:
        index = VectorIndex.build(DIM, np.arange(n, dtype=np.int64), xb)
        index.save(path, generation=1)
    return path, elapsed(), peak_rss_bytes()


def measure_open_and_search(path: Path, n: int, nq: int, nprobes: list[int]) -> dict[str, Any]:
    """Run ``probe`` in a fresh process, so its memory reading holds only the opened index."""
    command = [sys.executable, __file__, str(path), str(n), str(nq), ",".join(map(str, nprobes))]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SCRIPTS_DIR, env.get("PYTHONPATH")]))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"probe of {path} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def probe(path: Path, n: int, nq: int, nprobes: list[int]) -> dict[str, Any]:
    """Open the saved index memory-mapped and time single queries (child process side)."""
    xq = synthetic_queries(nq)
    truth = ground_truth(synthetic_vectors(n), xq, n)
    before = rss_bytes()
    with timer() as elapsed:
        index = VectorIndex.load(path, DIM, generation=1)
    assert index is not None, f"{path} did not load"
    opened = elapsed()
    report: dict[str, Any] = {"open_s": opened, "index_type": index.index_type, "runs": []}
    settings: list[int | None] = [None] if index.ann is None else [None, *nprobes]
    for nprobe in settings:
        if nprobe is not None and index.ann is not None:
            index.ann.nprobe = nprobe
        found, latencies = single_queries(lambda q: index.search(q, K)[1], xq)
        report["runs"].append(
            {
                "nprobe": nprobe,
                "median_ms": float(np.median(latencies) * 1e3),
                "p95_ms": float(np.percentile(latencies, 95) * 1e3),
                "recall_at_10": recall_at_k(found, truth, K),
            }
        )
    report["default"] = report["runs"][0]
    report["rss_gib"] = rss_bytes() / GIB
    split = rss_split_bytes()
    report["rss_anon_gib"] = split.get("anon", 0) / GIB
    report["rss_file_gib"] = split.get("file", 0) / GIB
    report["rss_before_open_gib"] = before / GIB
    return report


def single_queries(search: Any, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run each query alone (batch of one) and return the ids found and each latency in s."""
    search(xq[:1])  # warm-up: first-touch page faults of the mapped file
    found, latencies = [], []
    for q in xq:
        start = time.perf_counter()
        ids = search(q[None])
        latencies.append(time.perf_counter() - start)
        found.append(ids[0])
    return np.array(found), np.array(latencies)


def peers(n: int, nq: int, hnsw_max: int) -> list[dict[str, Any]]:
    """Exact FAISS search, FAISS HNSW32 and hnswlib with their defaults, over the same data."""
    xb = synthetic_vectors(n)
    xq = synthetic_queries(nq)
    truth = ground_truth(xb, xq, n)
    rows = []

    flat = faiss.IndexFlatIP(DIM)
    with timer() as elapsed:
        for start in range(0, n, 100_000):
            flat.add(np.ascontiguousarray(xb[start : start + 100_000]))
    build_s = elapsed()
    # Exact search over a million vectors takes a tenth of a second per query, so
    # 20 queries give a stable median.
    found, lat = single_queries(lambda q: flat.search(q, K)[1], xq[:20])
    rows.append(_peer_row("faiss IndexFlatIP (exact)", n, build_s, lat, found, truth[:20]))
    flat.reset()  # frees the copied vectors before the next peer is built

    if n > hnsw_max:
        return rows
    hnsw = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    with timer() as elapsed:
        hnsw.add(np.ascontiguousarray(xb))
    build_s = elapsed()
    found, lat = single_queries(lambda q: hnsw.search(q, K)[1], xq)
    rows.append(
        _peer_row("faiss IndexHNSWFlat M=32, efSearch 16 (defaults)", n, build_s, lat, found, truth)
    )
    hnsw.reset()

    try:
        import hnswlib
    except ImportError:
        rows.append({"name": "hnswlib", "skipped": "not installed (pip install .[bench])"})
        return rows
    graph = hnswlib.Index(space="ip", dim=DIM)
    graph.init_index(max_elements=n)  # defaults: M=16, ef_construction=200
    with timer() as elapsed:
        graph.add_items(np.ascontiguousarray(xb), np.arange(n))
    build_s = elapsed()
    found, lat = single_queries(lambda q: graph.knn_query(q, k=K)[0], xq)
    rows.append(_peer_row("hnswlib M=16, ef 10 (defaults)", n, build_s, lat, found, truth))
    return rows


def _peer_row(
    name: str, n: int, build_s: float, lat: np.ndarray, found: np.ndarray, truth: np.ndarray
) -> dict[str, Any]:
    return {
        "name": name,
        "n": n,
        "build_s": build_s,
        "median_ms": float(np.median(lat) * 1e3),
        "recall_at_10": recall_at_k(found, truth, K),
    }


def run(sizes: list[int], nq: int, peer_n: int, hnsw_max: int, nprobes: list[int]) -> list[Result]:
    """Build and probe bindindex's index at each size, then the peers at ``peer_n``."""
    results: list[Result] = []
    scaling = []
    # Largest first, so the longest build runs before anything else started later.
    for n in sorted(sizes, reverse=True):
        path, build_s, build_peak = build_bindindex(n)
        # Exact search reads every vector, so it runs here. In the probe process, those
        # pages of the memory-mapped vector file would count in the measured RSS.
        ground_truth(synthetic_vectors(n), synthetic_queries(nq), n)
        probed = measure_open_and_search(path, n, nq, nprobes)
        scaling.append(
            {"n": n, "build_s": build_s, "build_peak_rss_gib": build_peak / GIB, **probed}
        )
    scaling.sort(key=lambda row: row["n"])
    results.append(
        Result(
            "search-scaling",
            "search latency and build time by size",
            None,
            "",
            detail={"sizes": scaling},
        )
    )

    largest = max(scaling, key=lambda row: row["n"])
    default = largest["default"]
    n = largest["n"]
    checks = {
        "median_ms": (default["median_ms"], 2.0),
        "recall_at_10": (default["recall_at_10"], 0.95),
        "build_s": (largest["build_s"], 600.0),
        "rss_gib": (largest["rss_gib"], 1.5),
        "open_s": (largest["open_s"], 1.0),
    }
    met = (
        n >= 1_000_000
        and default["median_ms"] <= 2.0
        and default["recall_at_10"] >= 0.95
        and largest["build_s"] <= 600
        and largest["rss_gib"] <= 1.5
        and largest["open_s"] <= 1.0
    )
    results.append(
        Result(
            "S1",
            f"median single-query latency over {n:,} vectors ({largest['index_type']})",
            default["median_ms"],
            "ms",
            "<= 2 ms at recall@10 >= 0.95 over 1,000,000 vectors; build <= 600 s; RSS <= 1.5 GiB; open <= 1 s",
            met,
            {key: value for key, (value, _) in checks.items()} | {"n": n},
        )
    )

    peer_rows = peers(peer_n, nq, hnsw_max)
    own = next((row for row in scaling if row["n"] == peer_n), None)
    if own is None:
        path, build_s, _ = build_bindindex(peer_n)
        own = {"n": peer_n, "build_s": build_s, **measure_open_and_search(path, peer_n, nq, [])}
    mine = own["default"]
    verdicts = []
    for row in peer_rows:
        if "skipped" in row:
            continue
        row["bindindex_faster"] = mine["median_ms"] < row["median_ms"]
        row["bindindex_recall_not_worse"] = mine["recall_at_10"] >= row["recall_at_10"] - 1e-9
        verdicts.append(row["bindindex_faster"] and row["bindindex_recall_not_worse"])
    results.append(
        Result(
            "S2",
            f"bindindex vs peers at {peer_n:,} vectors (latency, recall@10)",
            mine["median_ms"],
            "ms",
            "faster than each peer at equal or better recall",
            bool(verdicts) and all(verdicts),
            {"bindindex": {"n": peer_n, "build_s": own["build_s"], **mine}, "peers": peer_rows},
        )
    )
    return results


if __name__ == "__main__":
    # Child process of measure_open_and_search: PATH N NQ NPROBES
    target, count, queries, probes = sys.argv[1:5]
    print(
        json.dumps(
            probe(Path(target), int(count), int(queries), [int(p) for p in probes.split(",") if p])
        )
    )
