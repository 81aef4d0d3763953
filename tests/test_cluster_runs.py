"""Cluster runs on real catalogs with planted vectors: ids, drift, provisional items, history."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import add_planted_items, planted_vectors

from bindindex.cluster import runs as cluster_runs
from bindindex.cluster import store as cluster_store
from bindindex.cluster.naming import default_vocabulary, name_clusters, read_vocabulary
from bindindex.errors import NotFoundError, UsageError
from bindindex.index import Index
from bindindex.store.catalog import _MIGRATIONS, SCHEMA_VERSION, Catalog
from bindindex.store.vectors import normalise


def majority_ids(index: Index, run: int | str) -> dict[str, int]:
    """Return the majority cluster id of each planted concept in a run."""
    rows = index.cluster_run(run, members=True)["clusters"]
    votes: dict[str, Counter[int]] = {}
    for cluster in rows:
        for member in cluster["members"]:
            concept = member["path"].split("/")[2]
            votes.setdefault(concept, Counter())[cluster["cluster"]] += 1
    return {concept: counts.most_common(1)[0][0] for concept, counts in votes.items()}


def test_ids_stable_across_seeds(planted_index) -> None:
    path = planted_index(*planted_vectors(5, 8, seed=1))
    with Index.open(path) as index:
        first = index.cluster(5, seed=0)
        second = index.cluster(5, seed=11)
        assert majority_ids(index, first.id) == majority_ids(index, second.id)
        changes = second.metrics["drift"]
        assert changes["items_moved"] <= 0.02 * changes["items_common"]
        assert changes["appeared"] == changes["disappeared"] == []
        assert len(second.metrics["identity"]["matched"]) == 5
        assert second.metrics["identity"]["previous_run"] == first.id


def test_new_concept_appears(tmp_path: Path) -> None:
    raw, modalities, labels = planted_vectors(5, 6, seed=2)
    old = [label != "concept4" for label in labels]
    path = tmp_path / "index"
    add_planted_items(path, raw[old], list(np.array(modalities)[old]), list(np.array(labels)[old]))
    with Index.open(path) as index:
        first = index.cluster(4)
        new = [not keep for keep in old]
        add_planted_items(
            path, raw[new], list(np.array(modalities)[new]), ["concept4"] * sum(new), start=100
        )
        second = index.cluster(4 + 1)
    changes = second.metrics["drift"]
    assert len(changes["appeared"]) == 1
    assert changes["appeared"][0] >= max(row["cluster"] for row in first.metrics["sizes"]) + 1
    assert changes["disappeared"] == []
    assert changes["items_added"] == 12
    assert changes["items_moved"] == 0


def test_removed_concept_disappears(planted_index) -> None:
    path = planted_index(*planted_vectors(4, 6, seed=3))
    with Index.open(path) as index:
        index.cluster(4)
        before = majority_ids(index, "latest")
        gone = [row.id for row in index.catalog.items() if "/concept0/" in row.path]
        with index.catalog.transaction() as conn:
            index.catalog.delete_items(conn, gone)
        second = index.cluster(3)
        after = majority_ids(index, "latest")
    assert second.metrics["drift"]["disappeared"] == [before["concept0"]]
    assert second.metrics["drift"]["items_removed"] == 12
    for concept in ("concept1", "concept2", "concept3"):
        assert after[concept] == before[concept]


def test_merge_and_split_detected(planted_index) -> None:
    path = planted_index(*planted_vectors(4, 8, spread=0.08, seed=4))
    with Index.open(path) as index:
        index.cluster(4)
        merged = index.cluster(3, min_similarity=0.3)
        split = index.cluster(4, min_similarity=0.3)
    assert len(merged.metrics["drift"]["merged"]) == 1
    assert [len(v) for v in merged.metrics["drift"]["merged"].values()] == [2]
    assert merged.metrics["drift"]["split"] == {}
    assert len(split.metrics["drift"]["split"]) == 1
    assert len(split.metrics["drift"]["appeared"]) == 1


# With a modality offset, only the centred run clusters by concept.
@pytest.mark.parametrize(("center", "offset"), [(False, 0.0), (True, 1.5)])
def test_provisional_assignment(tmp_path: Path, center: bool, offset: float) -> None:
    raw, modalities, labels = planted_vectors(4, 10, modality_offset=offset, seed=5)
    later = np.array([n % 10 >= 8 for n in range(len(raw))])
    path = tmp_path / "index"
    add_planted_items(
        path, raw[~later], list(np.array(modalities)[~later]), list(np.array(labels)[~later])
    )
    with Index.open(path) as index:
        run = index.cluster(4, center=center)
        expected = majority_ids(index, run.id)
        added = add_planted_items(
            path,
            raw[later],
            list(np.array(modalities)[later]),
            list(np.array(labels)[later]),
            start=1000,
        )
        assert cluster_runs.assign_provisional(index.catalog, index.dim) == len(added)
        pending = cluster_store.provisional(index.catalog, run.id)
        assert sorted(pending) == sorted(added)
        items = index.catalog.items_by_ids(added)
        for item_id, (cluster, _) in pending.items():
            assert cluster == expected[items[item_id].path.split("/")[2]]
        # The stored distance is measured in the run's space, centred or not.
        means = cluster_store.modality_means(index.catalog, run.id, index.dim)
        assert bool(means) == center
        centroids = cluster_store.centroids(index.catalog, run.id, index.dim)
        new_unit = normalise(raw[later])
        for row, item_id in enumerate(added):
            vector = new_unit[row] - means.get(items[item_id].modality, 0.0)
            vector = vector / np.linalg.norm(vector)
            cluster, distance = pending[item_id]
            centroid = centroids.vectors[centroids.ids.index(cluster)]
            assert distance == pytest.approx(float(((vector - centroid) ** 2).sum()), abs=1e-4)
        shown = index.cluster_run("latest")
        assert sum(c["provisional"] for c in shown["clusters"]) == len(added)
        index.cluster(4, center=center)
        assert cluster_store.provisional(index.catalog, run.id) == {}


def test_change_since_latest(planted_index, tmp_path: Path) -> None:
    raw, modalities, labels = planted_vectors(3, 5, seed=6)
    path = planted_index(raw, modalities, labels)
    with Index.open(path) as index:
        assert index.cluster_change()["fraction"] is None
        index.cluster(3)
        assert index.cluster_change()["fraction"] == 0.0
        add_planted_items(path, raw[:3], modalities[:3], labels[:3], start=500)
        change = index.cluster_change()
    assert change["added"] == 3
    assert change["fraction"] == pytest.approx(3 / 30)


def test_centred_run_groups_modalities(planted_index) -> None:
    path = planted_index(*planted_vectors(4, 8, modality_offset=2.0, seed=7))
    with Index.open(path) as index:
        plain = index.cluster(4, labels="top-folder")
        centred = index.cluster(4, labels="top-folder", center=True)
    assert "cross_modal_centered" not in plain.metrics
    before, after = centred.metrics["cross_modal"], centred.metrics["cross_modal_centered"]
    assert after["gap"] > before["gap"]
    assert centred.metrics["consistency"]["cross_modal_agreement"] == 1.0
    assert plain.metrics["consistency"]["cross_modal_agreement"] < 0.5
    assert centred.metrics["consistency"]["ari"] > 0.9


def test_auto_k_run_stores_table(planted_index) -> None:
    path = planted_index(*planted_vectors(4, 8, spread=0.08, seed=8))
    with Index.open(path) as index:
        run = index.cluster(auto_k=(2, 7))
        listed = index.cluster_runs()
    assert run.k == 4
    assert [row["k"] for row in run.metrics["auto_k"]["table"]] == list(range(2, 8))
    assert "silhouette" in run.metrics["auto_k"]["rule"]
    assert listed[-1]["auto_k"] == [2, 7]


def test_history_export_and_diff(planted_index, tmp_path: Path) -> None:
    path = planted_index(*planted_vectors(3, 5, seed=9))
    with Index.open(path) as index:
        first = index.cluster(3)
        second = index.cluster(4)
        runs = index.cluster_runs()
        diff = index.cluster_diff(first.id, "latest")
        text = index.export_cluster_run(second.id, "csv")
        as_json = json.loads(index.export_cluster_run("latest", "json") or "")
        index.export_cluster_run(second.id, "parquet", tmp_path / "run.parquet")
        with pytest.raises(UsageError, match="--output"):
            index.export_cluster_run(second.id, "parquet")
        with pytest.raises(UsageError, match="invalid format"):
            index.export_cluster_run(second.id, "xml")
    assert [run["run"] for run in runs] == [first.id, second.id]
    assert runs[1]["previous_run"] == first.id
    for key in ("appeared", "disappeared", "split", "merged", "items_moved"):
        assert diff[key] == second.metrics["drift"][key]
    rows = list(csv.DictReader(io.StringIO(text or "")))
    assert len(rows) == len(as_json) == 30
    assert {row["item_id"] for row in rows} == {str(row["item_id"]) for row in as_json}
    table = pq.read_table(tmp_path / "run.parquet").to_pylist()
    assert sorted(r["cluster"] for r in table) == sorted(r["cluster"] for r in as_json)


def test_unknown_run_is_not_found(planted_index) -> None:
    path = planted_index(*planted_vectors(2, 3, seed=10))
    with Index.open(path) as index:
        with pytest.raises(NotFoundError, match="no cluster run"):
            index.cluster_run("latest")
        index.cluster(2)
        with pytest.raises(NotFoundError, match="cluster run 99 not found"):
            index.cluster_run(99)
        with pytest.raises(NotFoundError, match="invalid run"):
            index.cluster_diff("first", "latest")


def test_empty_index_is_usage_error(tmp_path: Path) -> None:
    with Index.open(tmp_path / "empty") as index, pytest.raises(UsageError, match="no vectors"):
        index.cluster(3)


def test_fewer_items_than_k_is_clamped(planted_index) -> None:
    path = planted_index(*planted_vectors(2, 2, seed=11))
    with Index.open(path) as index:
        run = index.cluster(20)
        auto = index.cluster(auto_k=(3, 30))
    assert run.k == 8
    assert any("clustered with k=8" in w for w in run.warnings)
    assert auto.metrics["auto_k"]["evaluated"][1] == 7
    assert any("clamped" in w for w in auto.warnings)


def test_identical_vectors_give_one_cluster(planted_index) -> None:
    vectors = np.ones((10, 16), dtype=np.float32)
    path = planted_index(vectors, ["image"] * 5 + ["audio"] * 5, ["a"] * 10)
    with Index.open(path) as index:
        run = index.cluster(4, center=True)
    assert run.k == 1
    assert any("clustered with k=1" in w for w in run.warnings)


def test_one_modality_only_says_so(planted_index) -> None:
    raw, _, labels = planted_vectors(3, 4, seed=12)
    path = planted_index(raw, ["image"] * len(raw), labels)
    with Index.open(path) as index:
        run = index.cluster(3, center=True, labels="top-folder")
    assert any("only image items" in w for w in run.warnings)
    assert run.metrics["cross_modal"]["image_audio"] is None
    assert run.metrics["consistency"]["ari"] > 0.9


def test_centered_search_matches_brute_force(planted_index) -> None:
    raw, modalities, labels = planted_vectors(3, 6, modality_offset=2.0, seed=13)
    path = planted_index(raw, modalities, labels)
    unit = normalise(raw)
    kinds = np.array(modalities)
    means = {m: unit[kinds == m].mean(axis=0) for m in ("image", "audio")}
    centred = normalise(np.stack([unit[i] - means[m] for i, m in enumerate(modalities)]))
    with Index.open(path) as index:
        from bindindex.search import QueryTerm

        ids = [row.id for row in index.catalog.items()]
        hits = index.search([QueryTerm("item", str(ids[0]))], k=5, center=True)
        audio_hits = index.search(
            [QueryTerm("item", str(ids[0]))], k=3, center=True, modality="audio"
        )
    scores = centred[1:] @ centred[0]
    expected = [ids[1 + j] for j in np.argsort(-scores)[:5]]
    assert [hit.id for hit in hits] == expected
    assert [hit.score for hit in hits] == pytest.approx(sorted(scores, reverse=True)[:5], abs=1e-5)
    assert {hit.modality for hit in audio_hits} == {"audio"}
    # Despite the modality offset, the image's nearest audio is of its own concept.
    assert "/concept0/" in audio_hits[0].path
    assert audio_hits[0].score > 0.5


def test_name_clusters_picks_nearest_prompt() -> None:
    prompts = ["a photo of a dog", "the sound of rain", "a photo of a car"]
    vectors = normalise(np.eye(3, 8))
    centroids = np.stack([vectors[2] * 3 + 0.1 * vectors[0], vectors[1]])
    named = name_clusters(centroids, vectors, prompts)
    assert [name for name, _ in named] == ["a photo of a car", "the sound of rain"]
    assert named[1][1] == pytest.approx(1.0)


def test_vocabulary_files(tmp_path: Path) -> None:
    assert "a photo of a dog" in default_vocabulary()
    assert "the sound of rain falling" in default_vocabulary()
    custom = tmp_path / "words.txt"
    custom.write_text("# animals\na cat\n\na dog\na cat\n")
    assert read_vocabulary(custom) == ["a cat", "a dog"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UsageError, match="contains no prompt"):
        read_vocabulary(tmp_path / "empty.txt")
    with pytest.raises(UsageError, match="not found"):
        read_vocabulary(tmp_path / "missing.txt")


def test_version_one_catalog_migrates(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    conn = sqlite3.connect(path)
    conn.executescript(_MIGRATIONS[0] + "PRAGMA user_version = 1;")
    conn.execute(
        "INSERT INTO cluster_runs (created_at, k, k_requested, n_items, model_id, params, "
        "metrics) VALUES (0, 2, 2, 0, 'm', '{}', '{}')"
    )
    conn.commit()
    conn.close()
    catalog = Catalog(path)
    try:
        assert catalog.schema_version() == SCHEMA_VERSION
        assert len(catalog.cluster_runs()) == 1
        columns = {row[1] for row in catalog.conn.execute("PRAGMA table_info(cluster_centroids)")}
        assert {"name", "name_score"} <= columns
    finally:
        catalog.close()
