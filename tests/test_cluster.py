"""K-Means and the clustering measures, on vectors with planted structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from bindindex.cluster import (
    consistency,
    cross_modal_cosines,
    csv_label,
    kmeans,
    read_label_csv,
    silhouette,
    top_folder_label,
)
from bindindex.errors import UsageError
from bindindex.store.vectors import normalise


def planted(n_per: int, k: int, d: int = 64, spread: float = 0.15, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((k, d)))
    truth = np.repeat(np.arange(k), n_per)
    x = normalise(centres[truth] + spread * rng.standard_normal((len(truth), d)) / np.sqrt(d) * 4)
    return x, truth


def test_kmeans_recovers_planted_clusters() -> None:
    x, truth = planted(40, 6)
    result = kmeans(x, 6, seed=1)
    assert result.k == 6
    assert adjusted_rand_score(truth, result.assignments) > 0.95
    assert result.warnings == []


def test_kmeans_inertia_is_sum_of_squared_distances() -> None:
    x, _ = planted(20, 3)
    result = kmeans(x, 3)
    recomputed = ((x - result.centroids[result.assignments]) ** 2).sum()
    assert result.inertia == pytest.approx(float(recomputed), rel=1e-4)


def test_kmeans_clamps_k_to_distinct_vectors() -> None:
    x = normalise(np.eye(5, 16))
    result = kmeans(x, 8)
    assert result.k == 5
    assert result.k_requested == 8
    assert any("clustered with k=5" in w for w in result.warnings)


def test_kmeans_identical_vectors() -> None:
    x = normalise(np.ones((30, 8)))
    result = kmeans(x, 4)
    assert result.k == 1
    assert (result.assignments == 0).all()


def test_kmeans_warns_on_few_points_per_cluster() -> None:
    x, _ = planted(2, 5)
    result = kmeans(x, 5)
    assert any("unreliable" in w for w in result.warnings)


def test_kmeans_empty_input_is_usage_error() -> None:
    with pytest.raises(UsageError, match="no vectors"):
        kmeans(np.zeros((0, 8), dtype=np.float32), 3)


def test_silhouette_high_for_separated_clusters() -> None:
    x, truth = planted(30, 4, spread=0.05)
    value = silhouette(x, truth)
    assert value is not None
    assert value > 0.5
    assert silhouette(x, np.zeros(len(x), dtype=int)) is None


def test_consistency_on_known_assignment() -> None:
    labels = ["dog", "dog", "dog", "cat", "cat", "cat"]
    modalities = ["image", "image", "audio", "image", "audio", "audio"]
    assignments = np.array([0, 0, 0, 1, 1, 0])
    result = consistency(assignments, labels, modalities)
    by_concept = {row["concept"]: row for row in result["concepts"]}
    assert by_concept["dog"]["image_audio_same_cluster"] is True
    assert by_concept["dog"]["majority_share"] == 1.0
    assert by_concept["cat"]["majority_cluster"] == 1
    assert by_concept["cat"]["majority_share"] == pytest.approx(2 / 3)
    assert result["purity"] == pytest.approx(5 / 6)
    assert result["table"]["0"] == {"cat": 1, "dog": 3}
    assert 0.0 < result["nmi"] < 1.0


def test_consistency_perfect_clustering() -> None:
    labels = ["a", "a", "b", "b"]
    result = consistency(np.array([1, 1, 0, 0]), labels, ["image", "audio"] * 2)
    assert result["ari"] == pytest.approx(1.0)
    assert result["nmi"] == pytest.approx(1.0)
    assert result["cross_modal_agreement"] == 1.0


def test_consistency_without_labels_is_usage_error() -> None:
    with pytest.raises(UsageError, match="no indexed item has a label"):
        consistency(np.array([0, 1]), [None, None], ["image", "audio"])


def test_cross_modal_matched_beats_unmatched() -> None:
    rng = np.random.default_rng(4)
    centres = normalise(rng.standard_normal((3, 32)))
    rows, labels, modalities = [], [], []
    for concept in range(3):
        for modality in ("image", "audio"):
            for _ in range(4):
                rows.append(centres[concept] + 0.3 * rng.standard_normal(32) / np.sqrt(32))
                labels.append(f"c{concept}")
                modalities.append(modality)
    unit = normalise(np.array(rows))
    result = cross_modal_cosines(unit, modalities, labels)
    assert result["matched"] > result["unmatched"] + 0.5
    assert result["gap"] == pytest.approx(result["matched"] - result["unmatched"])
    assert set(result["per_concept"]) == {"c0", "c1", "c2"}
    no_labels = cross_modal_cosines(unit, modalities, None)
    assert "matched" not in no_labels
    assert no_labels["image_audio"] is not None


def test_top_folder_label() -> None:
    assert top_folder_label("/m/dog/images/a.jpg", "/m") == "dog"
    assert top_folder_label("/m/a.jpg", "/m") is None
    assert top_folder_label("/other/a.jpg", "/m") is None


def test_label_csv(tmp_path: Path) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("path,label\ndog/a.jpg,dog\n/abs/b.wav,cat\n\n")
    table = read_label_csv(csv_file)
    assert table == {"dog/a.jpg": "dog", "/abs/b.wav": "cat"}
    assert csv_label(table, "/m/dog/a.jpg", "/m", tmp_path) == "dog"
    assert csv_label(table, "/abs/b.wav", "/m", tmp_path) == "cat"
    assert csv_label(table, "/m/x.jpg", "/m", tmp_path) is None


def test_label_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        read_label_csv(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a.jpg\n")
    with pytest.raises(UsageError, match="line 1"):
        read_label_csv(bad)


def test_label_csv_swapped_header_and_conflicts(tmp_path: Path) -> None:
    swapped = tmp_path / "swapped.csv"
    swapped.write_text("label,path\ndog,a.jpg\n")
    assert read_label_csv(swapped) == {"a.jpg": "dog"}
    conflict = tmp_path / "conflict.csv"
    conflict.write_text("a.jpg,dog\nb.jpg,cat\na.jpg,cat\n")
    with pytest.raises(
        UsageError, match=r"line 3: a\.jpg is labelled 'cat' here and 'dog' on line 1"
    ):
        read_label_csv(conflict)
    with pytest.raises(UsageError, match="cannot read label file"):
        read_label_csv(tmp_path)
