"""Choice of k, centring and stable ids, on vectors with planted structure."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import planted_vectors
from sklearn.metrics import adjusted_rand_score

from bindindex.cluster.centering import center, modality_means
from bindindex.cluster.identity import drift, match_ids
from bindindex.cluster.kmeans import choose_k, kmeans, parse_k_range
from bindindex.cluster.measures import cross_modal_cosines
from bindindex.errors import UsageError
from bindindex.store.vectors import normalise


@pytest.mark.parametrize("planted_k", [3, 6])
def test_choose_k_finds_planted_k(planted_k: int) -> None:
    raw, _, _ = planted_vectors(planted_k, 15, spread=0.08, seed=planted_k)
    choice = choose_k(normalise(raw), 2, 10, seed=0)
    assert choice.k == planted_k
    assert [row["k"] for row in choice.table] == list(range(2, 11))
    for row in choice.table:
        assert row["silhouette"] is not None
        assert row["calinski_harabasz"] is not None
        assert row["davies_bouldin"] is not None
    assert choice.warnings == []


def test_choose_k_table_agrees_at_planted_k() -> None:
    raw, _, _ = planted_vectors(4, 20, spread=0.08, seed=11)
    table = {row["k"]: row for row in choose_k(normalise(raw), 2, 8).table}
    # At the planted k, every measure prefers it to its neighbours.
    assert table[4]["calinski_harabasz"] > max(
        table[3]["calinski_harabasz"], table[5]["calinski_harabasz"]
    )
    assert table[4]["davies_bouldin"] < table[3]["davies_bouldin"]
    inertias = [table[k]["inertia"] for k in range(2, 9)]
    assert inertias[2] < inertias[1] < inertias[0]


def test_choose_k_clamps_to_distinct_vectors() -> None:
    x = normalise(np.repeat(np.eye(3, 16), 10, axis=0))
    choice = choose_k(x, 2, 9)
    assert choice.k_max == 3
    assert choice.k == 3
    assert any("clamped to 2..3" in w for w in choice.warnings)


def test_choose_k_identical_vectors_gives_one_cluster() -> None:
    x = normalise(np.ones((12, 8)))
    choice = choose_k(x, 2, 5)
    assert choice.k == 1
    assert "clustered with k=1" in choice.warnings[0]


def test_choose_k_empty_input() -> None:
    with pytest.raises(UsageError, match="no vectors"):
        choose_k(np.zeros((0, 4), dtype=np.float32), 2, 4)


@pytest.mark.parametrize(
    ("text", "message"),
    [("5", "MIN..MAX"), ("a..4", "MIN..MAX"), ("1..4", "at least 2"), ("6..3", "smaller")],
)
def test_parse_k_range_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_k_range(text)


def test_parse_k_range() -> None:
    assert parse_k_range("2..12") == (2, 12)


def test_centring_groups_by_concept_not_modality() -> None:
    raw, modalities, labels = planted_vectors(4, 12, spread=0.15, modality_offset=2.0, seed=3)
    unit = normalise(raw)
    plain = kmeans(unit, 4, seed=0)
    centred = center(unit, modalities, modality_means(unit, modalities))
    fixed = kmeans(centred, 4, seed=0)
    # Without centring the modality offset dominates and clusters mix concepts.
    assert adjusted_rand_score(labels, plain.assignments) < 0.5
    assert adjusted_rand_score(labels, fixed.assignments) > 0.9


def test_centring_closes_the_cross_modal_gap() -> None:
    raw, modalities, labels = planted_vectors(4, 10, spread=0.15, modality_offset=2.0, seed=5)
    unit = normalise(raw)
    before = cross_modal_cosines(unit, modalities, labels)
    after = cross_modal_cosines(
        center(unit, modalities, modality_means(unit, modalities)), modalities, labels
    )
    within_before = min(before["image_image"], before["audio_audio"])
    assert within_before > before["matched"]
    assert after["matched"] > max(after["image_image"], after["audio_audio"])
    assert after["gap"] > before["gap"]


def test_centred_rows_have_zero_modality_mean() -> None:
    raw, modalities, _ = planted_vectors(3, 8, modality_offset=1.0, seed=2)
    unit = normalise(raw)
    means = modality_means(unit, modalities)
    shifted = unit.copy()
    for row, modality in enumerate(modalities):
        shifted[row] -= means[modality]
    kinds = np.array(modalities)
    for modality in ("image", "audio"):
        assert np.abs(shifted[kinds == modality].mean(axis=0)).max() < 1e-5
    text_row = center(unit[:1], ["text"], means)
    assert np.allclose(text_row, unit[:1], atol=1e-6)


def test_match_ids_survives_relabelling() -> None:
    raw, _, _ = planted_vectors(5, 10, seed=8)
    unit = normalise(raw)
    first = kmeans(unit, 5, seed=0)
    second = kmeans(unit, 5, seed=7)
    old_ids = [10, 11, 12, 13, 14]
    stable, similarity = match_ids(second.centroids, first.centroids, old_ids, next_id=15)
    assert sorted(stable) == old_ids
    assert all(s is not None and s > 0.95 for s in similarity)
    first_ids = np.array(old_ids)[first.assignments]
    second_ids = np.array(stable)[second.assignments]
    assert (first_ids == second_ids).mean() > 0.95


def test_match_ids_gives_new_ids_to_new_clusters() -> None:
    raw, _, _ = planted_vectors(4, 10, seed=9)
    unit = normalise(raw)
    first = kmeans(unit[:60], 3, seed=0)
    second = kmeans(unit, 4, seed=0)
    stable, similarity = match_ids(second.centroids, first.centroids, [0, 1, 2], next_id=7)
    assert sorted(stable) == [0, 1, 2, 7]
    assert similarity[stable.index(7)] is None


def test_match_ids_threshold_rejects_distant_pairs() -> None:
    old = normalise(np.eye(2, 8))
    new = normalise(np.eye(2, 8)[::-1] + np.eye(2, 8, 4))
    stable, _ = match_ids(new, old, [0, 1], next_id=2, min_similarity=0.9)
    assert stable == [2, 3]


def test_drift_reports_split_merge_and_moves() -> None:
    old = {i: 0 for i in range(10)} | {i: 1 for i in range(10, 20)} | {i: 2 for i in range(20, 25)}
    new = {i: 0 for i in range(5)} | {i: 5 for i in range(5, 10)} | {i: 1 for i in range(10, 25)}
    new[30] = 1
    result = drift(old, new)
    assert result["split"] == {"0": [0, 5]}
    assert result["merged"] == {"1": [1, 2]}
    assert result["appeared"] == [5]
    assert result["disappeared"] == [2]
    assert result["items_moved"] == 10
    assert result["items_common"] == 25
    assert result["items_added"] == 1
    assert result["items_removed"] == 0


def test_drift_of_identical_runs_is_empty() -> None:
    same = {i: i % 3 for i in range(9)}
    result = drift(same, dict(same))
    assert result["items_moved"] == 0
    assert result["split"] == result["merged"] == {}
    assert result["appeared"] == result["disappeared"] == []
