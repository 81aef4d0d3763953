"""The approximate vector index used above EXACT_MAX_VECTORS, checked against brute force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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
