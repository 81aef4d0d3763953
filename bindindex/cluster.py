"""K-Means over stored vectors and the measures of cluster quality."""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import faiss
import numpy as np
from sklearn import metrics as skm

from bindindex.errors import UsageError

log = logging.getLogger(__name__)

# Silhouette needs all pairwise distances; above this many items it runs on a
# seeded random sample of this size.
SILHOUETTE_SAMPLE = 10_000
# Fewer items per cluster than this makes centroids and metrics unreliable.
MIN_POINTS_PER_CLUSTER = 3
# K-Means trains on a seeded sample of at most this many points per centroid
# (FAISS's own default). On the 1024-d benchmark mixture the inertia over all points
# stays within 1 % of training on every point (``scripts/bench.py kmeans``), and
# training a million vectors at k=1000 reads a quarter of them per iteration.
KMEANS_POINTS_PER_CENTROID = 256


@dataclass
class KMeansResult:
    """Centroids (k, d), assignments (n,), squared distances (n,), objective and the k used."""

    centroids: np.ndarray
    assignments: np.ndarray
    distances: np.ndarray
    inertia: float
    k: int
    k_requested: int
    warnings: list[str] = field(default_factory=list)


def kmeans(
    x: np.ndarray, k: int, *, niter: int = 20, seed: int = 0, nredo: int = 1
) -> KMeansResult:
    """Cluster unit vectors ``x`` (n, d) with FAISS K-Means.

    A k above the number of distinct vectors is clamped to that number, and
    ``warnings`` states the k used. The centroids are trained on a seeded sample
    of at most ``KMEANS_POINTS_PER_CENTROID`` vectors per cluster, and then every
    vector is assigned to its nearest centroid.
    """
    n = len(x)
    if k < 1:
        raise UsageError(f"invalid k {k}: it must be at least 1")
    if n == 0:
        raise UsageError("the index contains no vectors to cluster; index some files first")
    warnings: list[str] = []
    distinct = _count_distinct(x, stop_at=k)
    k_used = min(k, distinct)
    if k_used < k:
        warnings.append(
            f"k={k} is more than the {distinct} distinct vectors in the index; clustered with k={k_used}"
        )
    if n < k_used * MIN_POINTS_PER_CLUSTER:
        warnings.append(
            f"only {n} items for k={k_used}: fewer than {MIN_POINTS_PER_CLUSTER} per cluster on "
            "average, so clusters and metrics are unreliable"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    d = x.shape[1]
    if k_used == 1:
        centroids = x.mean(axis=0, keepdims=True)
    else:
        km = faiss.Kmeans(
            d,
            k_used,
            niter=niter,
            seed=seed,
            nredo=nredo,
            min_points_per_centroid=1,
            max_points_per_centroid=KMEANS_POINTS_PER_CENTROID,
            verbose=False,
        )
        km.train(x)
        centroids = km.centroids.copy()
    index = faiss.IndexFlatL2(d)
    index.add(centroids)
    squared, nearest = index.search(x, 1)
    assignments = nearest[:, 0].astype(np.int64)
    distances = np.maximum(squared[:, 0], 0.0).astype(np.float32)
    return KMeansResult(
        centroids=centroids,
        assignments=assignments,
        distances=distances,
        inertia=float(distances.sum()),
        k=k_used,
        k_requested=k,
        warnings=warnings,
    )


def _count_distinct(x: np.ndarray, *, stop_at: int) -> int:
    """Count the distinct rows of ``x`` after rounding to 6 decimals, stopping at ``stop_at``.

    Rows are compared by a digest of their rounded bytes, read in chunks, so a
    million vectors need neither a sorted copy nor a second copy of ``x``.
    """
    seen: set[bytes] = set()
    chunk = 4096
    for start in range(0, len(x), chunk):
        # Adding 0.0 turns -0.0 into 0.0, so both count as one value as in np.unique.
        rounded = np.round(np.asarray(x[start : start + chunk], dtype=np.float32), 6) + 0.0
        for row in rounded:
            seen.add(hashlib.blake2b(row.tobytes(), digest_size=16).digest())
        if len(seen) >= stop_at:
            break
    return len(seen)


def silhouette(x: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> float | None:
    """Mean silhouette (Euclidean on unit vectors), or None where it is undefined."""
    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(x):
        return None
    sample = min(len(x), SILHOUETTE_SAMPLE)
    return float(
        skm.silhouette_score(
            x,
            labels,
            metric="euclidean",
            sample_size=sample if sample < len(x) else None,
            random_state=seed,
        )
    )


def sizes_by_modality(
    assignments: np.ndarray, modalities: list[str], k: int
) -> list[dict[str, Any]]:
    table = []
    for cluster in range(k):
        members = [m for m, c in zip(modalities, assignments, strict=True) if c == cluster]
        counts = Counter(members)
        table.append({"cluster": cluster, "size": len(members), **dict(sorted(counts.items()))})
    return table


# -- labels ----------------------------------------------------------------------


def top_folder_label(path: str, root: str | None) -> str | None:
    """Return the first folder below the indexed root, or None for a file directly in it."""
    if root is None:
        return None
    try:
        relative = PurePath(path).relative_to(root)
    except ValueError:
        return None
    parts = relative.parts
    return parts[0] if len(parts) > 1 else None


def read_label_csv(csv_path: Path) -> dict[str, str]:
    """Read ``path,label`` rows; a first row of ``path,label`` is taken as a header."""
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    path_column, label_column = 0, 1
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or all(not cell.strip() for cell in row):
                    continue
                header = [cell.strip().lower() for cell in row[:2]]
                if number == 1 and sorted(header) == ["label", "path"]:
                    path_column, label_column = header.index("path"), header.index("label")
                    continue
                if len(row) < 2 or not row[label_column].strip():
                    raise UsageError(
                        f"{csv_path}, line {number}: expected 'path,label', found {row!r}"
                    )
                path, label = row[path_column].strip(), row[label_column].strip()
                if path in labels and labels[path] != label:
                    raise UsageError(
                        f"{csv_path}, line {number}: {path} is labelled {label!r} here and "
                        f"{labels[path]!r} on line {first_line[path]}; keep one label per path"
                    )
                labels[path] = label
                first_line.setdefault(path, number)
    except FileNotFoundError as exc:
        raise UsageError(f"label file {csv_path} not found") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"label file {csv_path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read label file {csv_path}: {exc.strerror or exc}") from exc
    return labels


def csv_label(labels: dict[str, str], path: str, root: str | None, csv_folder: Path) -> str | None:
    """Find a file's label by absolute path, path relative to its root, or relative to the CSV."""
    if path in labels:
        return labels[path]
    candidates = []
    for base in (root, csv_folder):
        if base is not None and PurePath(path).is_relative_to(base):
            candidates.append(str(PurePath(path).relative_to(base)))
    for candidate in candidates:
        if candidate in labels:
            return labels[candidate]
    return None


# -- semantic measures -------------------------------------------------------------


def consistency(
    assignments: np.ndarray, labels: list[str | None], modalities: list[str]
) -> dict[str, Any]:
    """Per-concept cluster agreement across modalities, purity, ARI and NMI.

    Only items with a label count. For each concept: its majority cluster, the
    share of its items there, and whether the majority cluster of its images is
    the majority cluster of its audio.
    """
    labelled = [i for i, label in enumerate(labels) if label is not None]
    if not labelled:
        raise UsageError("no indexed item has a label; check --labels and the indexed folders")
    y_true = [labels[i] for i in labelled]
    y_pred = [int(assignments[i]) for i in labelled]

    by_concept: dict[str, list[int]] = defaultdict(list)
    for i in labelled:
        by_concept[str(labels[i])].append(i)

    concepts = []
    for concept in sorted(by_concept):
        members = by_concept[concept]
        clusters = Counter(int(assignments[i]) for i in members)
        majority, majority_count = clusters.most_common(1)[0]
        per_modality: dict[str, int | None] = {}
        for modality in ("image", "audio"):
            chosen = Counter(int(assignments[i]) for i in members if modalities[i] == modality)
            per_modality[modality] = chosen.most_common(1)[0][0] if chosen else None
        both = per_modality["image"] is not None and per_modality["audio"] is not None
        concepts.append(
            {
                "concept": concept,
                "items": len(members),
                "majority_cluster": majority,
                "majority_share": majority_count / len(members),
                "image_cluster": per_modality["image"],
                "audio_cluster": per_modality["audio"],
                "image_audio_same_cluster": (
                    per_modality["image"] == per_modality["audio"] if both else None
                ),
            }
        )

    contingency: dict[int, Counter[str]] = defaultdict(Counter)
    for concept, cluster in zip(y_true, y_pred, strict=True):
        contingency[cluster][concept] += 1
    purity = sum(c.most_common(1)[0][1] for c in contingency.values()) / len(labelled)
    with_both = [c for c in concepts if c["image_audio_same_cluster"] is not None]
    return {
        "labelled_items": len(labelled),
        "concepts": concepts,
        "cross_modal_agreement": (
            sum(1 for c in with_both if c["image_audio_same_cluster"]) / len(with_both)
            if with_both
            else None
        ),
        "purity": purity,
        "ari": float(skm.adjusted_rand_score(y_true, y_pred)),
        "nmi": float(skm.normalized_mutual_info_score(y_true, y_pred)),
        "table": {
            str(cluster): dict(sorted(counts.items()))
            for cluster, counts in sorted(contingency.items())
        },
    }


def cross_modal_cosines(
    unit: np.ndarray, modalities: list[str], labels: list[str | None] | None
) -> dict[str, Any]:
    """Mean cosines between images and audio: matched concepts against unmatched ones.

    Without labels, only the modality means are given: image-image,
    audio-audio and image-audio. The gap between the within-modality means
    and the image-audio mean is the modality gap.
    """
    images = np.array([m == "image" for m in modalities])
    audio = np.array([m == "audio" for m in modalities])
    result: dict[str, Any] = {
        "image_image": _mean_offdiagonal(unit[images]),
        "audio_audio": _mean_offdiagonal(unit[audio]),
        "image_audio": float((unit[images] @ unit[audio].T).mean())
        if images.any() and audio.any()
        else None,
    }
    if labels is None:
        return result
    label_array = np.array([label if label is not None else "" for label in labels], dtype=object)
    img_idx = np.flatnonzero(images & (label_array != ""))
    aud_idx = np.flatnonzero(audio & (label_array != ""))
    if len(img_idx) == 0 or len(aud_idx) == 0:
        result.update(matched=None, unmatched=None, gap=None, per_concept={})
        return result
    cosines = unit[img_idx] @ unit[aud_idx].T  # (n_images, n_audio)
    same = label_array[img_idx][:, None] == label_array[aud_idx][None, :]
    matched = float(cosines[same].mean()) if same.any() else None
    unmatched = float(cosines[~same].mean()) if (~same).any() else None
    per_concept = {}
    for concept in sorted(
        {str(label_array[i]) for i in img_idx} & {str(label_array[i]) for i in aud_idx}
    ):
        rows = label_array[img_idx] == concept
        cols = label_array[aud_idx] == concept
        per_concept[concept] = {
            "matched": float(cosines[np.ix_(rows, cols)].mean()),
            "unmatched": float(cosines[np.ix_(rows, ~cols)].mean()) if (~cols).any() else None,
        }
    result.update(
        matched=matched,
        unmatched=unmatched,
        gap=None if matched is None or unmatched is None else matched - unmatched,
        per_concept=per_concept,
    )
    return result


def _mean_offdiagonal(x: np.ndarray) -> float | None:
    n = len(x)
    if n < 2:
        return None
    gram = x @ x.T  # (n, n)
    return float((gram.sum() - np.trace(gram)) / (n * (n - 1)))
