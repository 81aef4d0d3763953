"""The SQLite catalog and the FAISS vector index."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from bindindex.store.catalog import SCHEMA_VERSION, Catalog
from bindindex.store.vectors import VectorIndex, normalise


def _values(path: str, **extra: object) -> dict[str, object]:
    values: dict[str, object] = {
        "path": path,
        "path_bytes": path.encode(),
        "root": "/r",
        "modality": "image",
        "format": "JPEG",
        "size": 10,
        "mtime_ns": 1,
        "content_hash": "sha256:x",
        "status": "indexed",
        "flags": ("rotated",),
        "indexed_at": time.time(),
    }
    values.update(extra)
    return values


def test_catalog_migrates_and_reopens(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    assert catalog.schema_version() == SCHEMA_VERSION
    catalog.close()
    again = Catalog(tmp_path / "c.db")
    assert again.schema_version() == SCHEMA_VERSION
    again.close()


def test_catalog_rejects_newer_schema(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    catalog.close()
    with pytest.raises(Exception, match="newer than this bindindex supports"):
        Catalog(tmp_path / "c.db")


def test_upsert_keeps_item_id(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    with catalog.transaction() as conn:
        first = catalog.upsert_item(conn, _values("/r/a.jpg"))
        second = catalog.upsert_item(conn, _values("/r/b.jpg"))
    with catalog.transaction() as conn:
        again = catalog.upsert_item(conn, _values("/r/a.jpg", size=99))
    assert again == first
    assert second != first
    row = catalog.item(first)
    assert row is not None
    assert row.size == 99
    assert row.flags == ("rotated",)


def test_vectors_round_trip_in_order(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((3, 8)).astype(np.float32)
    with catalog.transaction() as conn:
        ids = [catalog.upsert_item(conn, _values(f"/r/{n}.jpg")) for n in range(3)]
        for item_id, vector in zip(ids, raw, strict=True):
            catalog.put_vector(conn, item_id, vector)
    got_ids, got = catalog.vectors(8)
    assert got_ids.tolist() == ids
    np.testing.assert_array_equal(got, raw)
    some_ids, some = catalog.vectors(8, [ids[2], ids[0]])
    assert some_ids.tolist() == [ids[2], ids[0]]
    np.testing.assert_array_equal(some, raw[[2, 0]])


def test_rollback_leaves_nothing(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    with pytest.raises(RuntimeError), catalog.transaction() as conn:
        catalog.upsert_item(conn, _values("/r/a.jpg"))
        raise RuntimeError("boom")
    assert catalog.items() == []


def test_search_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    xb = normalise(rng.standard_normal((500, 16)))
    ids = np.arange(100, 600, dtype=np.int64)
    index = VectorIndex(16)
    index.add(ids, xb)
    xq = normalise(rng.standard_normal((5, 16)))
    scores, found = index.search(xq, 10)
    exact = xq @ xb.T  # (5, 500)
    expected = ids[np.argsort(-exact, axis=1)[:, :10]]
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(scores, np.sort(exact, axis=1)[:, ::-1][:, :10], rtol=1e-5)


def test_search_restricted_to_allowed_ids() -> None:
    rng = np.random.default_rng(2)
    xb = normalise(rng.standard_normal((50, 8)))
    index = VectorIndex(8)
    index.add(np.arange(50), xb)
    allowed = np.arange(0, 50, 5)
    _, found = index.search(xb[:1], 5, allowed)
    assert set(found[0].tolist()) <= set(allowed.tolist())
    assert len(found[0]) == 5


def test_add_replaces_existing_id() -> None:
    index = VectorIndex(4)
    index.add(np.array([7]), normalise(np.array([[1, 0, 0, 0]])))
    index.add(np.array([7]), normalise(np.array([[0, 1, 0, 0]])))
    assert index.ntotal == 1
    scores, ids = index.search(normalise(np.array([[0, 1, 0, 0]])), 1)
    assert ids[0, 0] == 7
    assert scores[0, 0] == pytest.approx(1.0)


def test_removed_ids_never_returned() -> None:
    rng = np.random.default_rng(3)
    xb = normalise(rng.standard_normal((20, 8)))
    index = VectorIndex(8)
    index.add(np.arange(20), xb)
    assert index.remove(np.array([3, 4])) == 2
    _, found = index.search(xb[3:4], 20)
    assert 3 not in found[0]
    assert 4 not in found[0]


def test_saved_index_loads_only_at_same_generation(tmp_path: Path) -> None:
    index = VectorIndex(4)
    index.add(np.array([1, 2]), normalise(np.eye(4)[:2]))
    path = tmp_path / "v.faiss"
    index.save(path, generation=5)
    loaded = VectorIndex.load(path, 4, generation=5)
    assert loaded is not None
    assert loaded.ntotal == 2
    assert VectorIndex.load(path, 4, generation=6) is None
    path.write_bytes(b"not a faiss index")
    assert VectorIndex.load(path, 4, generation=5) is None
    assert VectorIndex.load(tmp_path / "missing.faiss", 4, generation=5) is None


def test_normalise_keeps_zero_rows_finite() -> None:
    out = normalise(np.array([[0.0, 0.0], [3.0, 4.0]]))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1], [0.6, 0.8])
