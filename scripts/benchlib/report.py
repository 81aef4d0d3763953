"""Render docs/benchmarks.json as the Markdown tables of docs/benchmarks.md.

Usage: ``python scripts/benchlib/report.py`` prints the tables on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORD = Path(__file__).resolve().parent.parent.parent / "docs" / "benchmarks.json"
ORDER = ["E1", "E2", "E3", "L1", "M1", "P1", "S1", "S2", "K1", "K2", "R1"]


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def summary(record: dict[str, Any]) -> list[str]:
    lines = ["| id | measured | target | met | date |", "|---|---|---|---|---|"]
    for rid in ORDER:
        entry = record.get(rid)
        if entry is None:
            lines.append(f"| {rid} | not measured | | | |")
            continue
        digits = 6 if entry["unit"] == "cosine" else 3
        value = f"{fmt(entry['value'], digits)} {entry['unit']}"
        met = {True: "met", False: "**not met**", None: "-"}[entry["met"]]
        lines.append(f"| {rid} | {value} | {entry['target']} | {met} | {entry['date']} |")
    return lines


def search_table(record: dict[str, Any]) -> list[str]:
    entry = record.get("search-scaling")
    if entry is None:
        return []
    lines = [
        "| vectors | index | build s | open s | median ms | p95 ms | recall@10 | RSS GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in entry["detail"]["sizes"]:
        default = row["default"]
        lines.append(
            f"| {row['n']:,} | {row['index_type']} | {fmt(row['build_s'])} | {fmt(row['open_s'])} "
            f"| {fmt(default['median_ms'])} | {fmt(default['p95_ms'])} "
            f"| {fmt(default['recall_at_10'], 4)} | {fmt(row['rss_gib'])} |"
        )
    lines += ["", "nprobe sweep (same candidates, exact re-ranking):", ""]
    lines += ["| vectors | nprobe | median ms | recall@10 |", "|---|---|---|---|"]
    for row in entry["detail"]["sizes"]:
        for run in row["runs"][1:]:
            lines.append(
                f"| {row['n']:,} | {run['nprobe']} | {fmt(run['median_ms'])} "
                f"| {fmt(run['recall_at_10'], 4)} |"
            )
    return lines


def peer_table(record: dict[str, Any]) -> list[str]:
    entry = record.get("S2")
    if entry is None:
        return []
    own = entry["detail"]["bindindex"]
    lines = ["| index | vectors | build s | median ms | recall@10 |", "|---|---|---|---|---|"]
    lines.append(
        f"| bindindex | {own['n']:,} | {fmt(own['build_s'])} | {fmt(own['median_ms'])} "
        f"| {fmt(own['recall_at_10'], 4)} |"
    )
    for peer in entry["detail"]["peers"]:
        if "skipped" in peer:
            lines.append(f"| {peer['name']} | skipped: {peer['skipped']} | | | |")
            continue
        lines.append(
            f"| {peer['name']} | {peer['n']:,} | {fmt(peer['build_s'])} "
            f"| {fmt(peer['median_ms'])} | {fmt(peer['recall_at_10'], 4)} |"
        )
    return lines


def index_table(record: dict[str, Any]) -> list[str]:
    entry = record.get("index-scaling")
    if entry is None:
        return []
    lines = [
        "| files | first run s (command) | files/s | re-run s (command) "
        "| re-run s (Index.open + add_paths, in process) | ingest step of the command re-run s |",
        "|---|---|---|---|---|---|",
    ]
    for row in entry["detail"]["rows"]:
        lines.append(
            f"| {row['files']:,} | {fmt(row['first_run_s'])} | {fmt(row['files_per_s'])} "
            f"| {fmt(row['rerun_s'])} | {fmt(row.get('rerun_library_s'))} "
            f"| {fmt(row.get('rerun_ingest_step_s'))} |"
        )
    return lines


def main() -> None:
    record = json.loads(RECORD.read_text())
    for title, lines in (
        ("Summary", summary(record)),
        ("Search scaling", search_table(record)),
        ("Peers", peer_table(record)),
        ("Indexing scaling", index_table(record)),
    ):
        print(f"### {title}\n")
        print("\n".join(lines))
        print()


if __name__ == "__main__":
    main()
