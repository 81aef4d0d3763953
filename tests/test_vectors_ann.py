"""The approximate vector index used above EXACT_MAX_VECTORS, checked against brute force."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bindindex.errors import IndexStateError
from bindindex.store import vectors
from bindindex.store.vectors import VectorIndex, normalise

DIM = 128


def clustered(n: int, seed: int, concepts: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((concepts, DIM)).astype(np.float32)
    centres = normalise(centres)
    noise = rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return normalise(centres[rng.integers(0, concepts, n)] + noise)


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "EXACT_MAX_VECTORS", 1000)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def test_ann_recall_against_brute_force() -> None:
    xb = clustered(3000, seed=1)
    ids = np.arange(3000, dtype=np.int64) * 7 + 3
    index = VectorIndex(DIM)
    for start in range(0, 3000, 500):
        index.add(ids[start : start + 500], xb[start : start + 500])
    assert index.ann is not None
    xq = clustered(50, seed=2)
    truth = ids[np.argsort(-(xq @ xb.T), axis=1)[:, :10]]
    _, found = index.search(xq, 10)
    assert recall(found, truth) >= 0.95


def test_ann_scores_are_exact_cosines() -> None:
    xb = clustered(2000, seed=3)
    index = VectorIndex.build(DIM, np.arange(2000), xb)
    xq = clustered(5, seed=4)
    scores, found = index.search(xq, 5)
    for row in range(5):
        expected = xb[found[row]] @ xq[row]
        np.testing.assert_allclose(scores[row], expected, rtol=1e-5, atol=1e-6)
        assert list(scores[row]) == sorted(scores[row], reverse=True)


def test_ann_respects_allowed_ids() -> None:
    xb = clustered(2000, seed=5)
    index = VectorIndex.build(DIM, np.arange(2000), xb)
    allowed = np.arange(0, 2000, 3)
    _, found = index.search(clustered(4, seed=6), 10, allowed)
    assert set(found[found >= 0].tolist()) <= set(allowed.tolist())
    assert (found >= 0).sum() > 0


def test_ann_save_load_and_modify(tmp_path: Path) -> None:
    xb = clustered(2000, seed=7)
    index = VectorIndex.build(DIM, np.arange(2000), xb)
    path = tmp_path / "vectors.faiss"
    index.save(path, generation=3)
    loaded = VectorIndex.load(path, DIM, generation=3)
    assert loaded is not None
    assert loaded.ann is not None
    _, found = loaded.search(xb[:3], 1)
    assert found[:, 0].tolist() == [0, 1, 2]

    assert loaded.remove(np.array([0, 1])) == 2
    _, found = loaded.search(xb[:1], 5)
    assert 0 not in found[0].tolist()
    loaded.add(np.array([5000]), xb[:1])
    _, found = loaded.search(xb[:1], 1)
    assert found[0, 0] == 5000
    assert sorted(loaded.ids().tolist()) == sorted([*range(2, 2000), 5000])

    loaded.save(path, generation=4)
    again = VectorIndex.load(path, DIM, generation=4)
    assert again is not None
    assert again.ntotal == 1999


def test_ann_sidecar_mismatch_means_rebuild(tmp_path: Path) -> None:
    index = VectorIndex.build(DIM, np.arange(2000), clustered(2000, seed=8))
    path = tmp_path / "vectors.faiss"
    index.save(path, generation=1)
    sidecar = path.with_name(path.name + ".json")
    stamp = json.loads(sidecar.read_text())
    stamp["ann_ntotal"] = 17
    sidecar.write_text(json.dumps(stamp))
    assert VectorIndex.load(path, DIM, generation=1) is None


def test_ann_missing_file_means_rebuild(tmp_path: Path) -> None:
    index = VectorIndex.build(DIM, np.arange(2000), clustered(2000, seed=9))
    path = tmp_path / "vectors.faiss"
    index.save(path, generation=1)
    path.with_name(path.name + ".ann").unlink()
    assert VectorIndex.load(path, DIM, generation=1) is None


def test_ann_retrains_after_growth() -> None:
    xb = clustered(5000, seed=10)
    index = VectorIndex.build(DIM, np.arange(1200), xb[:1200])
    assert index.ann_trained_n == 1200
    index.add(np.arange(1200, 5000), xb[1200:])
    assert index.ann_trained_n == 5000
    assert index.ann is not None
    assert index.ann.ntotal == 5000


def test_small_collection_stays_exact() -> None:
    index = VectorIndex.build(DIM, np.arange(500), clustered(500, seed=11))
    assert index.ann is None
    assert index.index_type == vectors.INDEX_TYPE


def test_unchanged_index_saves_only_sidecar(tmp_path: Path) -> None:
    index = VectorIndex.build(DIM, np.arange(2000), clustered(2000, seed=12))
    path = tmp_path / "vectors.faiss"
    index.save(path, generation=1)
    loaded = VectorIndex.load(path, DIM, generation=1)
    assert loaded is not None
    before = (path.stat().st_mtime_ns, path.with_name(path.name + ".ann").stat().st_mtime_ns)
    loaded.save(path, generation=2)
    after = (path.stat().st_mtime_ns, path.with_name(path.name + ".ann").stat().st_mtime_ns)
    assert after == before
    assert VectorIndex.load(path, DIM, generation=2) is not None


@pytest.fixture
def pread_always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "PREAD_MIN_BYTES", 0)


def saved_ann(tmp_path: Path, n: int = 2000) -> tuple[np.ndarray, np.ndarray, Path]:
    """Save an approximate index over ``n`` clustered vectors with scattered ids."""
    xb = clustered(n, seed=11)
    ids = np.arange(n, dtype=np.int64)[::-1] * 5 + 1  # ids not in slot order
    path = tmp_path / "vectors.faiss"
    VectorIndex.build(DIM, ids, xb).save(path, generation=1)
    return xb, ids, path


@pytest.mark.usefixtures("pread_always")
def test_loaded_ann_reranks_with_reads(tmp_path: Path) -> None:
    xb, ids, path = saved_ann(tmp_path)
    xq = clustered(20, seed=12)
    in_memory = VectorIndex.build(DIM, ids, xb)
    loaded = VectorIndex.load(path, DIM, generation=1)
    assert loaded is not None

    assert loaded._rows is not None, "a saved flat index is re-ranked with pread"
    assert loaded.ann is not None
    assert loaded.ann.implem == vectors.FAST_SCAN_IMPLEM
    read_scores, read_ids = loaded.search(xq, 10)
    mapped_scores, mapped_ids = in_memory.search(xq, 10)
    np.testing.assert_array_equal(read_ids, mapped_ids)
    np.testing.assert_array_equal(read_scores, mapped_scores)
    rows = loaded._rows.read(ids[[5, 0, 1999]])
    np.testing.assert_array_equal(rows, xb[[5, 0, 1999]])
    with pytest.raises(IndexStateError, match=r"no rows for ids \[2\]"):
        loaded._rows.read(np.array([ids[0], 2]))


@pytest.mark.usefixtures("pread_always")
def test_ann_reads_mapped_file_after_replace(tmp_path: Path) -> None:
    xb, ids, path = saved_ann(tmp_path)
    loaded = VectorIndex.load(path, DIM, generation=1)
    assert loaded is not None
    before = loaded.search(xb[:5], 10)

    # A writer replaces the file by rename, as save() does. The open index keeps
    # reading the vectors it mapped.
    other = clustered(2000, seed=13)
    VectorIndex.build(DIM, ids, other).save(path, generation=2)
    after = loaded.search(xb[:5], 10)

    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])


@pytest.mark.usefixtures("pread_always")
def test_unknown_flat_layout_reranks_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xb, ids, path = saved_ann(tmp_path)
    expected = VectorIndex.build(DIM, ids, xb).search(xb[:5], 10)
    monkeypatch.setattr(vectors, "_FLAT_TAG", b"IxF2")

    loaded = VectorIndex.load(path, DIM, generation=1)

    assert loaded is not None
    assert loaded._rows is None
    scores, found = loaded.search(xb[:5], 10)
    np.testing.assert_array_equal(found, expected[1])
    np.testing.assert_array_equal(scores, expected[0])


@pytest.mark.usefixtures("pread_always")
def test_ann_reads_from_threads(tmp_path: Path) -> None:
    _, _, path = saved_ann(tmp_path)
    loaded = VectorIndex.load(path, DIM, generation=1)
    assert loaded is not None
    queries = clustered(40, seed=14)
    expected = [loaded.search(q[None], 10)[1] for q in queries]

    def search_all(_: int) -> list[np.ndarray]:
        return [loaded.search(q[None], 10)[1] for q in queries]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(search_all, range(8)))

    for result in results:
        for got, want in zip(result, expected, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.usefixtures("pread_always")
def test_modified_ann_stops_reading_file(tmp_path: Path) -> None:
    xb, _, path = saved_ann(tmp_path)
    loaded = VectorIndex.load(path, DIM, generation=1)
    assert loaded is not None

    loaded.add(np.array([7_000_000]), xb[:1] * -1)

    assert loaded._rows is None
    _, found = loaded.search(-xb[:1], 1)
    assert found[0, 0] == 7_000_000


def test_small_flat_file_reranks_mapped(tmp_path: Path) -> None:
    xb, ids, path = saved_ann(tmp_path)

    loaded = VectorIndex.load(path, DIM, generation=1)

    assert loaded is not None
    assert loaded.ann is not None
    assert loaded._rows is None, "a file below PREAD_MIN_BYTES stays mapped"
    scores, found = loaded.search(xb[:3], 1)
    assert found[:, 0].tolist() == ids[:3].tolist()
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)


def found_by_own_vector(index: VectorIndex, ids: np.ndarray, xb: np.ndarray) -> float:
    """Return the share of ``ids`` among the approximate index's candidates for their own rows."""
    assert index.ann is not None
    _, proposed = index.ann.search(np.ascontiguousarray(xb), 50)
    return float(np.mean([item in row for item, row in zip(ids, proposed, strict=True)]))


def test_replaced_vectors_stay_findable(tmp_path: Path) -> None:
    xb = clustered(3000, seed=21)
    ids = np.arange(3000, dtype=np.int64)
    index = VectorIndex.build(DIM, ids, xb)
    assert found_by_own_vector(index, ids[:500], xb[:500]) == 1.0

    index.add(ids[:500], xb[:500])  # the same items again, as a re-import does
    index.remove(ids[2500:])
    index.add(np.arange(5000, 5300), xb[2500:2800])  # new items after a removal

    scores, found = index.search(xb[:5], 1)
    assert found[:, 0].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    assert found_by_own_vector(index, ids[:500], xb[:500]) == 1.0
    assert found_by_own_vector(index, np.arange(5000, 5300), xb[2500:2800]) == 1.0
    assert index.ann is not None
    assert index.ann.ntotal == index.ntotal == 2800

    path = tmp_path / "vectors.faiss"
    index.save(path, generation=4)
    loaded = VectorIndex.load(path, DIM, generation=4)
    assert loaded is not None
    assert found_by_own_vector(loaded, ids[:500], xb[:500]) == 1.0


def test_ann_from_earlier_version_is_rebuilt(tmp_path: Path) -> None:
    xb = clustered(2000, seed=22)
    path = tmp_path / "vectors.faiss"
    VectorIndex.build(DIM, np.arange(2000), xb).save(path, generation=1)
    sidecar = path.with_name(path.name + ".json")
    stamp = json.loads(sidecar.read_text())
    del stamp["ann_version"]
    sidecar.write_text(json.dumps(stamp))

    assert VectorIndex.load(path, DIM, generation=1) is None
