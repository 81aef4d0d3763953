"""A PNG picture of a run: a 2-D projection coloured by cluster, and a concept heatmap."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from bindindex.errors import UsageError

PROJECTIONS = ("pca", "umap")
MARKERS = {"image": "o", "audio": "^", "text": "s"}


def project(x: np.ndarray, method: str, *, seed: int = 0) -> np.ndarray:
    """Project ``x`` (n, d) to (n, 2) with PCA, or with UMAP when it is installed."""
    if method not in PROJECTIONS:
        raise UsageError(f"invalid projection {method!r}: use one of {', '.join(PROJECTIONS)}")
    if len(x) < 2:
        return np.zeros((len(x), 2), dtype=np.float32)
    if method == "umap":
        try:
            import umap
        except ImportError as exc:
            raise UsageError(
                "the umap projection needs the umap-learn package: pip install 'bindindex[umap]', "
                "or use --projection pca"
            ) from exc
        reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1))
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)
    from sklearn.decomposition import PCA

    components = min(2, x.shape[1], len(x))
    points = PCA(n_components=components, random_state=seed).fit_transform(x)
    if components < 2:
        points = np.hstack([points, np.zeros((len(x), 2 - components))])
    return np.asarray(points, dtype=np.float32)


def plot_run(
    path: Path,
    points: np.ndarray,
    clusters: list[int],
    modalities: list[str],
    labels: list[str | None] | None,
    *,
    title: str,
) -> None:
    """Draw ``points`` (n, 2) coloured by cluster with one marker per modality into a PNG.

    With ``labels``, a second panel shows the concept-by-cluster counts as a heatmap.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_heatmap = labels is not None and any(label is not None for label in labels)
    figure, axes = plt.subplots(
        1, 2 if with_heatmap else 1, figsize=(14 if with_heatmap else 8, 6), squeeze=False
    )
    scatter = axes[0][0]
    cluster_ids = sorted(set(clusters))
    palette = plt.get_cmap("tab20", max(len(cluster_ids), 1))
    colour = {cluster: palette(i) for i, cluster in enumerate(cluster_ids)}
    cluster_array = np.array(clusters)
    modality_array = np.array(modalities, dtype=object)
    for modality in sorted(set(modalities)):
        for cluster in cluster_ids:
            chosen = (modality_array == modality) & (cluster_array == cluster)
            if chosen.any():
                scatter.scatter(
                    points[chosen, 0],
                    points[chosen, 1],
                    color=colour[cluster],
                    marker=MARKERS.get(modality, "x"),
                    s=36,
                    edgecolors="black",
                    linewidths=0.3,
                )
    for cluster in cluster_ids:
        scatter.scatter([], [], color=colour[cluster], marker="o", label=f"cluster {cluster}")
    for modality in sorted(set(modalities)):
        scatter.scatter([], [], color="grey", marker=MARKERS.get(modality, "x"), label=modality)
    scatter.legend(fontsize=7, loc="best", ncol=2)
    scatter.set_title(title)

    if with_heatmap and labels is not None:
        concepts = sorted({label for label in labels if label is not None})
        counts = Counter(
            (label, cluster) for label, cluster in zip(labels, clusters, strict=True) if label
        )
        grid = np.array([[counts[(c, k)] for k in cluster_ids] for c in concepts])
        heat = axes[0][1]
        image = heat.imshow(grid, cmap="Blues", aspect="auto")
        heat.set_xticks(range(len(cluster_ids)), [str(k) for k in cluster_ids])
        heat.set_yticks(range(len(concepts)), concepts)
        heat.set_xlabel("cluster")
        heat.set_title("items per concept and cluster")
        for row in range(len(concepts)):
            for col in range(len(cluster_ids)):
                if grid[row, col]:
                    dark = grid[row, col] > grid.max() / 2
                    heat.text(
                        col,
                        row,
                        str(grid[row, col]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
        figure.colorbar(image, ax=heat)
    figure.tight_layout()
    try:
        figure.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise UsageError(f"cannot write plot {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(figure)
