"""R1 and the indexing-time table: the ``index`` command with the imagebind-test model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from benchlib.common import CACHE_DIR, Result

# One file in this many is audio, the rest are images, roughly a photo folder with some sounds.
AUDIO_EVERY = 5


def make_corpus(n: int) -> Path:
    """Write ``n`` small distinct media files (320x240 JPEGs and 2 s WAVs), cached by size."""
    root = CACHE_DIR / f"corpus-{n}"
    if (root / ".complete").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        folder = root / f"folder{i // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % AUDIO_EVERY == 0:
            t = np.arange(32_000) / 16_000
            tone = 0.3 * np.sin(2 * np.pi * (200 + i % 800) * t) + 0.01 * rng.standard_normal(
                len(t)
            )
            soundfile.write(folder / f"sound{i:05d}.wav", tone.astype(np.float32), 16_000)
        else:
            base = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            image = Image.fromarray(base).resize((320, 240), Image.Resampling.BILINEAR)
            image.save(folder / f"image{i:05d}.jpg", quality=85)
    (root / ".complete").touch()
    return root


def run_index(corpus: Path, index: Path) -> tuple[float, dict[str, object]]:
    """Run ``bindindex index`` in a new process; return its wall time and JSON report."""
    command = [
        sys.executable,
        "-m",
        "bindindex",
        "index",
        str(corpus),
        "--index",
        str(index),
        "--model",
        "imagebind-test",
        "--json",
        "--no-progress",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=dict(os.environ))
    return time.perf_counter() - start, json.loads(done.stdout)


def rerun_in_process(corpus: Path, index: Path) -> float:
    """Time Index.open and add_paths (scan, compare, save) in this process, imports excluded."""
    from bindindex.index import Index

    start = time.perf_counter()
    with Index.open(index, model="imagebind-test") as opened:
        report = opened.add_paths([corpus])
    seconds = time.perf_counter() - start
    assert report.added == 0, report.as_dict()
    assert report.updated == 0, report.as_dict()
    return seconds


def run(sizes: list[int]) -> list[Result]:
    rows = []
    for n in sizes:
        corpus = make_corpus(n)
        index = CACHE_DIR / f"index-{n}"
        shutil.rmtree(index, ignore_errors=True)
        first_s, first = run_index(corpus, index)
        again_s, again = run_index(corpus, index)
        library_s = rerun_in_process(corpus, index)
        rows.append(
            {
                "files": n,
                "first_run_s": first_s,
                "first_run_in_library_s": first["seconds"],
                "files_per_s": n / first_s,
                "rerun_s": again_s,
                "rerun_ingest_step_s": again["seconds"],
                "rerun_library_s": library_s,
                "rerun_unchanged": again["unchanged"],
                "added": first["added"],
                "failed": first["failed"],
            }
        )
        shutil.rmtree(index, ignore_errors=True)
    largest = rows[-1]
    return [
        Result(
            "index-scaling",
            "indexing time with imagebind-test by file count",
            None,
            "",
            detail={"rows": rows},
        ),
        Result(
            "R1",
            f"re-running index on {largest['files']:,} unchanged files (whole command)",
            largest["rerun_s"],
            "s",
            "<= 2 s for 10,000 unchanged files",
            largest["files"] >= 10_000 and largest["rerun_s"] <= 2.0,
            largest,
        ),
    ]
