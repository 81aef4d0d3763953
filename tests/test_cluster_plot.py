"""The 2-D projection and the PNG picture of a run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import planted_vectors
from PIL import Image

from bindindex.cluster.plot import plot_run, project
from bindindex.errors import UsageError
from bindindex.store.vectors import normalise


def test_pca_keeps_planted_clusters_apart() -> None:
    raw, _, labels = planted_vectors(3, 10, spread=0.05, seed=1)
    points = project(normalise(raw), "pca")
    assert points.shape == (60, 2)
    concepts = np.array(labels)
    centres = {c: points[concepts == c].mean(axis=0) for c in set(labels)}
    within = max(np.linalg.norm(points[concepts == c] - centres[c], axis=1).max() for c in centres)
    between = min(
        np.linalg.norm(centres[a] - centres[b]) for a in centres for b in centres if a < b
    )
    assert between > within


def test_projection_edge_inputs() -> None:
    assert project(np.ones((1, 8), dtype=np.float32), "pca").shape == (1, 2)
    assert project(normalise(np.eye(2, 8)), "pca").shape == (2, 2)
    with pytest.raises(UsageError, match="invalid projection"):
        project(np.ones((3, 8), dtype=np.float32), "tsne")


def test_umap_is_optional() -> None:
    x = normalise(np.random.default_rng(0).standard_normal((30, 8)))
    if importlib.util.find_spec("umap") is None:
        with pytest.raises(UsageError, match="umap-learn"):
            project(x, "umap")
    else:
        assert project(x, "umap").shape == (30, 2)


@pytest.mark.parametrize("with_labels", [False, True])
def test_plot_writes_png(tmp_path: Path, with_labels: bool) -> None:
    raw, modalities, labels = planted_vectors(3, 5, seed=2)
    points = project(normalise(raw), "pca")
    clusters = [int(label[-1]) * 4 for label in labels]
    target = tmp_path / "plot.png"
    plot_run(target, points, clusters, modalities, labels if with_labels else None, title="planted")
    with Image.open(target) as image:
        image.load()
        assert image.format == "PNG"
        # The heatmap panel makes the picture wider.
        assert image.width == (1400 if with_labels else 800)


def test_plot_unwritable_target(tmp_path: Path) -> None:
    points = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(UsageError, match="cannot write plot"):
        plot_run(
            tmp_path / "missing" / "p.png", points, [0, 1], ["image", "audio"], None, title="t"
        )
