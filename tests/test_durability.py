"""Killed indexing runs and concurrent readers, with real subprocesses."""

from __future__ import annotations

import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bindindex.index import Index

KILL_POINTS = 30


def _index_command(folder: Path, index: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bindindex",
        "index",
        str(folder),
        "--index",
        str(index),
        "--model",
        "imagebind-test",
        "--no-progress",
        "--batch-size",
        "4",
    ]


def _committed(index: Path) -> int:
    """Count indexed items with a read-only connection, as another process would."""
    try:
        with sqlite3.connect(f"file:{index / 'catalog.db'}?mode=ro", uri=True, timeout=30) as conn:
            return int(
                conn.execute("SELECT COUNT(*) FROM items WHERE status = 'indexed'").fetchone()[0]
            )
    except sqlite3.OperationalError:
        return 0


def _check_consistent(index: Path) -> int:
    """Open the index and check that catalog and vector index agree; return the item count."""
    with Index.open(index, create=False) as idx:
        rows = idx.catalog.items(status="indexed")
        ids, raw = idx.catalog.vectors(idx.dim)
        assert sorted(ids.tolist()) == sorted(row.id for row in rows)
        assert len({row.path_bytes for row in rows}) == len(rows)
        assert np.isfinite(raw).all()
        faiss_ids = idx.vectors().ids()
        assert sorted(faiss_ids.tolist()) == sorted(ids.tolist())
        return len(rows)


@pytest.fixture
def big_folder(tmp_path: Path, paired: Path) -> Path:
    folder = tmp_path / "media"
    for copy in range(3):
        shutil.copytree(paired, folder / f"copy{copy}")
    return folder


def test_sigkill_at_random_moments(big_folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    total = sum(1 for p in big_folder.rglob("*") if p.is_file())
    rng = random.Random(1234)

    # One complete run measures how long a run takes, to spread the kills over it.
    started = time.monotonic()
    subprocess.run(_index_command(big_folder, tmp_path / "timing"), check=True, capture_output=True)
    duration = time.monotonic() - started

    previous = 0
    for point in range(KILL_POINTS):
        if point % 10 == 9:
            # Every tenth round new files appear, so later kills hit fresh work.
            extra = big_folder / f"extra{point}"
            shutil.copytree(big_folder / "copy0" / "dog", extra)
            total += sum(1 for p in extra.rglob("*") if p.is_file())
        process = subprocess.Popen(
            _index_command(big_folder, index), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.2, duration))
        before_kill = _committed(index)
        process.send_signal(signal.SIGKILL)
        process.wait()
        after = _check_consistent(index) if (index / "catalog.db").exists() else 0
        assert after >= before_kill, f"kill {point}: {before_kill} committed, {after} after"
        assert after >= previous
        previous = after

    final = subprocess.run(_index_command(big_folder, index), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert _check_consistent(index) == total


def test_readers_work_while_writer_runs(big_folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    first = subprocess.run(
        _index_command(big_folder / "copy0", index), capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr

    writer = subprocess.Popen(
        _index_command(big_folder, index), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    readers = [
        [
            sys.executable,
            "-m",
            "bindindex",
            "search",
            "--item",
            "1",
            "-k",
            "5",
            "--index",
            str(index),
        ],
        [sys.executable, "-m", "bindindex", "info", "--json", "--index", str(index)],
        [sys.executable, "-m", "bindindex", "cluster", "-k", "3", "--json", "--index", str(index)],
    ]
    rounds = 0
    while writer.poll() is None or rounds == 0:
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for cmd in readers
        ]
        for cmd, proc in zip(readers, procs, strict=True):
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"{cmd[3]} failed while the writer ran: {err.decode()}"
            assert out
        rounds += 1
    assert writer.wait() == 0
    second_writer = subprocess.run(
        _index_command(big_folder, index), capture_output=True, text=True
    )
    assert second_writer.returncode == 0
    assert _check_consistent(index) == sum(1 for p in big_folder.rglob("*") if p.is_file())


# A writer that stops inside its first model call until a line arrives on
# stdin, so that it holds the write lock for as long as the test needs.
_BLOCKED_WRITER = """
import sys
import numpy as np
from bindindex.index import Index

class BlockingEncoder:
    model_name = "imagebind-test"
    model_id = "blocking@1"
    meaningless = True
    precision = "fp32"
    precision_note = "float32"
    dim = 16

    def embed_images(self, x):
        print("embedding", flush=True)
        sys.stdin.readline()
        return np.ones((len(x), self.dim), dtype=np.float32)

    embed_audio = embed_images

with Index.open(sys.argv[1], model="imagebind-test") as index:
    index._encoder = BlockingEncoder()
    report = index.add_paths([sys.argv[2]], batch_size=2)
print("added", report.added, flush=True)
"""


def test_second_writer_exits_with_message(big_folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    folder = big_folder / "copy0"
    holder = subprocess.Popen(
        [sys.executable, "-c", _BLOCKED_WRITER, str(index), str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "embedding", holder.stderr
        second = subprocess.run(_index_command(folder, index), capture_output=True, text=True)
        assert second.returncode == 1
        assert f"is being written by process {holder.pid}" in second.stderr
        reader = subprocess.run(
            [sys.executable, "-m", "bindindex", "info", "--index", str(index), "--json"],
            capture_output=True,
            text=True,
        )
        assert reader.returncode == 0, reader.stderr
        holder.stdin.write("go on\n" * 100)
        holder.stdin.close()
        assert holder.wait(timeout=120) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    files = sum(1 for p in folder.rglob("*") if p.is_file())
    assert _check_consistent(index) == files
