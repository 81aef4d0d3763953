"""Benchmarks of bindindex: embedding, cold start, memory, pipeline, search, K-Means, re-indexing.

Usage: ``PYTHONPATH=. python scripts/bench.py SUITE [options] [--json] [--record]``.
Each suite prints a table (or JSON with ``--json``). ``--record`` merges the
results with a target into ``docs/benchmarks.json``. Suites and their ids:

- ``search``   S1, S2 and the latency/build scaling table (synthetic 1024-d vectors)
- ``kmeans``   K1, K2
- ``reindex``  R1 and the indexing-time scaling table (imagebind-test model)
- ``embed``    E1, E2, E3 (full-size imagebind_huge with random weights)
- ``coldstart`` L1
- ``memory``   M1
- ``pipeline`` P1 (imagebind-test on large JPEGs and long audio)

Data and checkpoints are cached in ``$BINDINDEX_BENCH_CACHE`` (default /tmp/bench-cache).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.common import Result, load_average

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "docs" / "benchmarks.json"


def _sizes(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "suite", choices=["search", "kmeans", "reindex", "embed", "coldstart", "memory", "pipeline"]
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--record", action="store_true", help="merge the results into docs/benchmarks.json"
    )
    search = parser.add_argument_group("search")
    search.add_argument(
        "--sizes",
        type=_sizes,
        default=[10_000, 100_000, 1_000_000],
        help="collection sizes, comma-separated",
    )
    search.add_argument("--queries", type=int, default=200, help="number of single queries timed")
    search.add_argument(
        "--peer-n", type=int, default=100_000, help="collection size for the peer comparison"
    )
    search.add_argument(
        "--hnsw-max",
        type=int,
        default=100_000,
        help="largest size at which the HNSW peers are built",
    )
    search.add_argument(
        "--nprobes",
        type=_sizes,
        default=[8, 16, 32, 64],
        help="IVF nprobe values swept besides the default",
    )
    kmeans = parser.add_argument_group("kmeans")
    kmeans.add_argument("--k1-n", type=int, default=200_000, help="K1 vector count")
    kmeans.add_argument("--k1-k", type=int, default=256, help="K1 cluster count")
    kmeans.add_argument("--k2-n", type=int, default=1_000_000, help="K2 vector count (0 skips K2)")
    kmeans.add_argument("--k2-k", type=int, default=1000, help="K2 cluster count")
    kmeans.add_argument("--niter", type=int, default=20, help="K-Means iterations")
    files = parser.add_argument_group("reindex")
    files.add_argument(
        "--files",
        type=_sizes,
        default=[100, 1_000, 10_000],
        help="file counts for the indexing table",
    )
    embed = parser.add_argument_group("embed, coldstart, memory, pipeline")
    embed.add_argument("--images", type=int, default=8, help="images per measured run")
    embed.add_argument("--audio", type=int, default=4, help="audio files per measured run")
    embed.add_argument("--batch-size", type=int, default=8, help="bindindex batch size")
    embed.add_argument(
        "--checkpoint", type=Path, default=None, help="full-size checkpoint (made when missing)"
    )
    embed.add_argument(
        "--pipeline-files", type=int, default=24, help="files in the pipeline folder"
    )
    embed.add_argument(
        "--pipeline-megapixels", type=float, default=12.0, help="size of each pipeline JPEG"
    )
    embed.add_argument(
        "--pipeline-audio-s", type=int, default=300, help="length of each pipeline WAV in seconds"
    )
    embed.add_argument(
        "--matmul-rows",
        type=int,
        default=4 * 257,
        help="rows of the matmul that measures the floor (4 images of 257 tokens)",
    )
    embed.add_argument(
        "--model",
        default="imagebind-huge",
        help="model of the embed suites (imagebind-test for a quick check)",
    )
    return parser.parse_args(argv)


def run_suite(args: argparse.Namespace) -> list[Result]:
    if args.suite == "search":
        from benchlib import search

        return search.run(args.sizes, args.queries, args.peer_n, args.hnsw_max, args.nprobes)
    if args.suite == "kmeans":
        from benchlib import kmeans

        return kmeans.run(args.k1_n, args.k1_k, args.k2_n, args.k2_k, args.niter)
    if args.suite == "reindex":
        from benchlib import reindex

        return reindex.run(args.files)
    from benchlib import embed

    return embed.run(args.suite, args)


def print_table(results: list[Result]) -> None:
    print(f"{'id':<15} {'value':>12} {'unit':<8} {'met':<5} what / target")
    for result in results:
        value = "-" if result.value is None else f"{result.value:.4g}"
        met = {True: "yes", False: "NO", None: ""}[result.met]
        print(f"{result.id:<15} {value:>12} {result.unit:<8} {met:<5} {result.what}")
        if result.target:
            print(f"{'':<43} target: {result.target}")
    for result in results:
        if result.detail:
            print(f"\n{result.id} detail:\n{json.dumps(result.detail, indent=2, default=float)}")


def record(results: list[Result], command: str, environment: dict[str, Any]) -> None:
    existing = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
    for result in results:
        existing[result.id] = {
            "value": result.value,
            "unit": result.unit,
            "target": result.target,
            "met": result.met,
            "what": result.what,
            "date": stamp,
            "command": command,
            "environment": environment,
            "detail": result.detail,
        }
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(dict(sorted(existing.items())), indent=2, default=float) + "\n")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    before = load_average()
    results = run_suite(args)
    environment = {
        "load_average_before": before,
        "load_average_after": load_average(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    command = "PYTHONPATH=. python scripts/bench.py " + shlex.join(
        a for a in argv if a != "--record"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "environment": environment,
                    "command": command,
                    "results": [r.as_dict() for r in results],
                },
                indent=2,
                default=float,
            )
        )
    else:
        print_table(results)
        print(f"\nload average before {before}, after {environment['load_average_after']}")
    if args.record:
        record(results, command, environment)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
