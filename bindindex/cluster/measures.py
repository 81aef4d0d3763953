"""Measures of a clustering: sizes by modality, semantic consistency, cross-modal cosines."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from bindindex.errors import UsageError


def sizes_by_modality(
    assignments: np.ndarray, modalities: list[str], cluster_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """Count the items of each cluster in ``cluster_ids``, in total and by modality."""
    table = []
    for cluster in cluster_ids:
        members = [m for m, c in zip(modalities, assignments, strict=True) if c == cluster]
        counts = Counter(members)
        table.append({"cluster": cluster, "size": len(members), **dict(sorted(counts.items()))})
    return table


def consistency(
    assignments: np.ndarray, labels: list[str | None], modalities: list[str]
) -> dict[str, Any]:
    """Per-concept cluster agreement across modalities, purity, ARI and NMI.

    Only items with a label count. For each concept: its majority cluster, the
    share of its items there, and whether the majority cluster of its images is
    the majority cluster of its audio.
    """
    from sklearn import metrics as skm  # slow to import; needed only here

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
