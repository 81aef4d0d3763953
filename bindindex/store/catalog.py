"""The SQLite catalog: items, their vectors, index metadata and cluster runs.

The catalog is the source of truth. The FAISS file next to it is derived from
the ``vectors`` table and can always be rebuilt from it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from bindindex.errors import IndexStateError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

# Each entry upgrades the schema from version i to i + 1. A new column or
# table goes here as a new function; released ones are never edited.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        path TEXT NOT NULL,
        path_bytes BLOB NOT NULL UNIQUE,
        root TEXT,
        modality TEXT,
        format TEXT,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        content_hash TEXT,
        status TEXT NOT NULL,
        reason TEXT,
        detail TEXT,
        flags TEXT NOT NULL DEFAULT '',
        duration_s REAL,
        width INTEGER,
        height INTEGER,
        model_id TEXT,
        precision TEXT,
        indexed_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS items_hash ON items (content_hash);
    CREATE INDEX IF NOT EXISTS items_status ON items (status, modality);
    CREATE TABLE IF NOT EXISTS vectors (
        item_id INTEGER PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,
        raw BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS cluster_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        k INTEGER NOT NULL,
        k_requested INTEGER NOT NULL,
        n_items INTEGER NOT NULL,
        model_id TEXT NOT NULL,
        params TEXT NOT NULL,
        metrics TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS cluster_members (
        run_id INTEGER NOT NULL REFERENCES cluster_runs (id) ON DELETE CASCADE,
        item_id INTEGER NOT NULL,
        cluster INTEGER NOT NULL,
        distance REAL NOT NULL,
        PRIMARY KEY (run_id, item_id)
    );
    CREATE TABLE IF NOT EXISTS cluster_centroids (
        run_id INTEGER NOT NULL REFERENCES cluster_runs (id) ON DELETE CASCADE,
        cluster INTEGER NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (run_id, cluster)
    );
    """,
    # Version 2: cluster names, the modality means of centred runs, and the
    # provisional cluster of items indexed after the latest run. Cluster
    # numbers in runs from here on are stable ids matched across runs.
    """
    ALTER TABLE cluster_centroids ADD COLUMN name TEXT;
    ALTER TABLE cluster_centroids ADD COLUMN name_score REAL;
    CREATE TABLE IF NOT EXISTS cluster_modality_means (
        run_id INTEGER NOT NULL REFERENCES cluster_runs (id) ON DELETE CASCADE,
        modality TEXT NOT NULL,
        count INTEGER NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (run_id, modality)
    );
    CREATE TABLE IF NOT EXISTS cluster_provisional (
        item_id INTEGER PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,
        run_id INTEGER NOT NULL REFERENCES cluster_runs (id) ON DELETE CASCADE,
        cluster INTEGER NOT NULL,
        distance REAL NOT NULL,
        assigned_at REAL NOT NULL
    );
    """,
]

ITEM_COLUMNS = (
    "id, path, path_bytes, root, modality, format, size, mtime_ns, content_hash, status, "
    "reason, detail, flags, duration_s, width, height, model_id, precision, indexed_at"
)


@dataclass(frozen=True)
class ItemRow:
    """One catalog row: an indexed file or a file that failed with a reason."""

    id: int
    path: str
    path_bytes: bytes
    root: str | None
    modality: str | None
    format: str | None
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    reason: str | None
    detail: str | None
    flags: tuple[str, ...]
    duration_s: float | None
    width: int | None
    height: int | None
    model_id: str | None
    precision: str | None
    indexed_at: float

    @property
    def fs_path(self) -> Path:
        """The path to open on disk, with non-UTF-8 names restored from the stored bytes."""
        return Path(os.fsdecode(self.path_bytes))


def _row_to_item(row: Sequence[Any]) -> ItemRow:
    values = list(row)
    values[12] = tuple(flag for flag in (values[12] or "").split(",") if flag)
    return ItemRow(*values)


def encode_vector(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stack float32 blobs into an (n, dim) array."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    joined = np.frombuffer(b"".join(blobs), dtype="<f4")
    return joined.reshape(len(blobs), dim).astype(np.float32, copy=False)


class Catalog:
    """SQLite file ``catalog.db`` with the items, vectors and cluster runs of one index.

    The database runs in WAL mode so that readers (search, info, cluster) keep
    working while an indexing run writes, and waits up to ``busy_timeout_s``
    for a lock instead of failing with "database is locked".
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 60.0, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        if readonly:
            uri = f"file:{path}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=busy_timeout_s, check_same_thread=False)
        # Autocommit mode: transactions are opened explicitly by ``transaction``.
        conn.isolation_level = None
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        if not readonly:
            self._migrate()
        elif self.schema_version() != SCHEMA_VERSION:
            raise IndexStateError(
                f"{path}: catalog schema version {self.schema_version()} is not the "
                f"version {SCHEMA_VERSION} this bindindex reads; open it once without "
                "read-only mode to upgrade it"
            )

    # -- schema -----------------------------------------------------------------

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise IndexStateError(
                f"{self.path}: catalog schema version {version} is newer than this "
                f"bindindex supports ({SCHEMA_VERSION}); upgrade bindindex"
            )
        for number in range(version, SCHEMA_VERSION):
            # executescript commits any open transaction first, so the script
            # carries its own BEGIN and COMMIT around the schema change.
            self.conn.executescript(
                f"BEGIN IMMEDIATE; {_MIGRATIONS[number]} PRAGMA user_version = {number + 1}; COMMIT;"
            )
            log.info("migrated catalog %s to schema version %d", self.path, number + 1)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one IMMEDIATE transaction, so writers queue instead of deadlocking."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    # -- metadata ---------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta(self) -> dict[str, str]:
        return {str(row["key"]): str(row["value"]) for row in self.db["meta"].rows}

    def set_meta(self, values: dict[str, str], conn: sqlite3.Connection | None = None) -> None:
        target = conn or self.conn
        target.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def vector_generation(self) -> int:
        return int(self.get_meta("vector_generation") or 0)

    def bump_generation(self, conn: sqlite3.Connection) -> int:
        """Increase the counter that the FAISS file is checked against; call inside a transaction."""
        generation = int(
            (
                conn.execute("SELECT value FROM meta WHERE key = 'vector_generation'").fetchone()
                or [0]
            )[0]
        )
        self.set_meta({"vector_generation": str(generation + 1)}, conn)
        return generation + 1

    # -- items ------------------------------------------------------------------

    def item(self, item_id: int) -> ItemRow | None:
        row = self.conn.execute(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,)
        ).fetchone()
        return None if row is None else _row_to_item(row)

    def item_by_path(self, path_bytes: bytes) -> ItemRow | None:
        row = self.conn.execute(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE path_bytes = ?", (path_bytes,)
        ).fetchone()
        return None if row is None else _row_to_item(row)

    def items(self, *, status: str | None = None, modality: str | None = None) -> list[ItemRow]:
        clauses, params = [], []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if modality is not None:
            clauses.append("modality = ?")
            params.append(modality)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.conn.execute(f"SELECT {ITEM_COLUMNS} FROM items {where} ORDER BY id", params)
        return [_row_to_item(row) for row in rows]

    def items_by_ids(self, ids: Iterable[int]) -> dict[int, ItemRow]:
        requested = list(dict.fromkeys(int(i) for i in ids))
        found: dict[int, ItemRow] = {}
        for start in range(0, len(requested), 500):
            chunk = requested[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT {ITEM_COLUMNS} FROM items WHERE id IN ({marks})", chunk
            )
            for row in rows:
                item = _row_to_item(row)
                found[item.id] = item
        return found

    def indexed_items_by_hash(self, content_hash: str) -> list[ItemRow]:
        rows = self.conn.execute(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE content_hash = ? AND status = 'indexed'",
            (content_hash,),
        )
        return [_row_to_item(row) for row in rows]

    def counts(self) -> dict[str, dict[str, int]]:
        """Item counts as {status: {modality: n}}."""
        result: dict[str, dict[str, int]] = {}
        query = (
            "SELECT status, COALESCE(modality, 'unknown') AS modality, COUNT(*) AS n "
            "FROM items GROUP BY 1, 2"
        )
        for row in self.db.query(query):
            result.setdefault(str(row["status"]), {})[str(row["modality"])] = int(row["n"])
        return result

    def precision_counts(self) -> dict[str, int]:
        """Indexed item counts by the precision their vectors were computed in."""
        query = (
            "SELECT precision, COUNT(*) AS n FROM items WHERE status = 'indexed' GROUP BY precision"
        )
        return {str(row["precision"]): int(row["n"]) for row in self.db.query(query)}

    def upsert_item(self, conn: sqlite3.Connection, values: dict[str, Any]) -> int:
        """Insert or replace the row for ``values['path_bytes']`` and return its id.

        An existing row keeps its id, so an updated file keeps the id that
        cluster runs and users refer to.
        """
        values = dict(values)
        values["flags"] = ",".join(values.get("flags") or ())
        columns = [c for c in ITEM_COLUMNS.split(", ") if c != "id" and c in values]
        existing = conn.execute(
            "SELECT id FROM items WHERE path_bytes = ?", (values["path_bytes"],)
        ).fetchone()
        if existing is None:
            marks = ",".join("?" * len(columns))
            cursor = conn.execute(
                f"INSERT INTO items ({', '.join(columns)}) VALUES ({marks})",
                [values[c] for c in columns],
            )
            return int(cursor.lastrowid or 0)
        item_id = int(existing[0])
        assignments = ", ".join(f"{c} = ?" for c in columns)
        conn.execute(
            f"UPDATE items SET {assignments} WHERE id = ?", [values[c] for c in columns] + [item_id]
        )
        return item_id

    def move_item(self, conn: sqlite3.Connection, item_id: int, values: dict[str, Any]) -> None:
        """Point an indexed item at a new path (a moved file keeps its vector)."""
        conn.execute(
            "UPDATE items SET path = ?, path_bytes = ?, root = ?, size = ?, mtime_ns = ?, "
            "indexed_at = ? WHERE id = ?",
            (
                values["path"],
                values["path_bytes"],
                values["root"],
                values["size"],
                values["mtime_ns"],
                time.time(),
                item_id,
            ),
        )

    def touch_item(self, conn: sqlite3.Connection, item_id: int, size: int, mtime_ns: int) -> None:
        conn.execute(
            "UPDATE items SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, item_id)
        )

    def delete_items(self, conn: sqlite3.Connection, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            conn.execute(f"DELETE FROM vectors WHERE item_id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)

    # -- vectors ----------------------------------------------------------------

    def put_vector(self, conn: sqlite3.Connection, item_id: int, raw: np.ndarray) -> None:
        conn.execute(
            "INSERT INTO vectors (item_id, raw) VALUES (?, ?) "
            "ON CONFLICT (item_id) DO UPDATE SET raw = excluded.raw",
            (item_id, encode_vector(raw)),
        )

    def delete_vector(self, conn: sqlite3.Connection, item_id: int) -> None:
        conn.execute("DELETE FROM vectors WHERE item_id = ?", (item_id,))

    def vectors(self, dim: int, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids (n,) int64, raw vectors (n, dim) float32) of indexed items, ordered by id."""
        if ids is None:
            rows = self.conn.execute(
                "SELECT v.item_id, v.raw FROM vectors v JOIN items i ON i.id = v.item_id "
                "WHERE i.status = 'indexed' ORDER BY v.item_id"
            ).fetchall()
        else:
            rows = []
            requested = [int(i) for i in ids]
            for start in range(0, len(requested), 500):
                chunk = requested[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows.extend(
                    self.conn.execute(
                        f"SELECT item_id, raw FROM vectors WHERE item_id IN ({marks})", chunk
                    ).fetchall()
                )
            order = {item_id: n for n, item_id in enumerate(requested)}
            rows.sort(key=lambda row: order[int(row[0])])
        id_array = np.array([int(row[0]) for row in rows], dtype=np.int64)
        return id_array, decode_vectors([row[1] for row in rows], dim)

    # -- cluster runs -----------------------------------------------------------

    def cluster_runs(self) -> list[dict[str, Any]]:
        runs = []
        for row in self.db["cluster_runs"].rows_where(order_by="id"):
            row["params"] = json.loads(row["params"])
            row["metrics"] = json.loads(row["metrics"])
            runs.append(row)
        return runs

    def cluster_members(self, run_id: int) -> list[tuple[int, int, float]]:
        rows = self.conn.execute(
            "SELECT item_id, cluster, distance FROM cluster_members WHERE run_id = ? ORDER BY item_id",
            (run_id,),
        )
        return [(int(i), int(c), float(d)) for i, c, d in rows]
