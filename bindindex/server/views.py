"""JSON shapes of items, hits and cluster runs, and the content types of media files."""

from __future__ import annotations

import mimetypes
from collections import Counter
from pathlib import Path
from typing import Any

from bindindex.cluster import top_folder_label
from bindindex.index import ClusterRun
from bindindex.search import Hit
from bindindex.store.catalog import ItemRow

# Content types by the format name that bindindex.media.detect stores for an item.
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WebP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
    "ICO": "image/vnd.microsoft.icon",
    "PNM": "image/x-portable-anymap",
    "JPEG 2000": "image/jp2",
    "AVIF": "image/avif",
    "WAV": "audio/wav",
    "RF64": "audio/wav",
    "FLAC": "audio/flac",
    "Ogg": "audio/ogg",
    "Ogg Vorbis": "audio/ogg",
    "Ogg Opus": "audio/ogg",
    "Ogg FLAC": "audio/ogg",
    "AIFF": "audio/aiff",
    "AIFF-C": "audio/aiff",
    "AU": "audio/basic",
    "MP3": "audio/mpeg",
    "MPEG audio": "audio/mpeg",
}


def relative_path(item: ItemRow) -> str:
    """Return the item's path relative to the folder it was indexed under."""
    if item.root:
        try:
            return Path(item.path).relative_to(item.root).as_posix()
        except ValueError:
            pass
    return Path(item.path).name


def missing_file_message(item: ItemRow) -> str:
    """Return the 404 message for an item whose file is no longer on disk."""
    if "imported" in item.flags:
        return f"item {item.id} is a vector imported from a .npy file; it has no media file"
    return (
        f"the file of item {item.id} ({relative_path(item)}) no longer exists; "
        "index its folder again to update the index"
    )


def media_type(item: ItemRow) -> str:
    """Return the content type of the item's file, from its sniffed format."""
    if item.format in MEDIA_TYPES:
        return MEDIA_TYPES[item.format]
    guessed, _ = mimetypes.guess_type(item.path)
    return guessed or "application/octet-stream"


def media_urls(item_id: int, modality: str | None, *, imported: bool = False) -> dict[str, str | None]:
    if imported:
        # A vector imported from a .npy file has no file to serve.
        return {"media_url": None, "thumbnail_url": None}
    return {
        "media_url": f"/items/{item_id}/media",
        "thumbnail_url": f"/items/{item_id}/thumbnail" if modality == "image" else None,
    }


def item_view(item: ItemRow) -> dict[str, Any]:
    """Describe an item without its absolute path, which the service does not expose."""
    return {
        "id": item.id,
        "path": relative_path(item),
        "modality": item.modality,
        "format": item.format,
        "media_type": media_type(item),
        "status": item.status,
        "reason": item.reason,
        "size": item.size,
        "width": item.width,
        "height": item.height,
        "duration_s": item.duration_s,
        "flags": list(item.flags),
        "indexed_at": item.indexed_at,
        **media_urls(item.id, item.modality, imported="imported" in item.flags),
    }


def hit_view(hit: Hit, item: ItemRow) -> dict[str, Any]:
    return {
        "id": hit.id,
        "path": relative_path(item),
        "modality": hit.modality,
        "score": hit.score,
        **media_urls(hit.id, hit.modality, imported="imported" in item.flags),
    }


def run_summary(run: ClusterRun) -> dict[str, Any]:
    return {
        "run": run.id,
        "created_at": run.created_at,
        "k": run.k,
        "k_requested": run.k_requested,
        "n_items": run.n_items,
        "labels": run.params.get("labels"),
        "inertia": run.metrics.get("inertia"),
        "silhouette": run.metrics.get("silhouette"),
        "warnings": run.warnings,
        "url": f"/clusters/{run.id}",
    }


def run_detail(
    run: ClusterRun,
    members: list[tuple[int, int, float]],
    items: dict[int, ItemRow],
    max_members: int | None = None,
) -> dict[str, Any]:
    """Describe a run with its clusters, each with a label, sizes and members nearest first.

    A cluster's label is the most common first folder below the indexed root
    among its members, with the share of members in it. Members whose item was
    removed from the index after the run are listed with ``path`` None.
    ``max_members`` limits the members listed per cluster, not the counts.
    """
    by_cluster: dict[int, list[tuple[int, float]]] = {}
    for item_id, cluster, distance in members:
        by_cluster.setdefault(cluster, []).append((item_id, distance))
    clusters = []
    for cluster in range(run.k):
        rows = sorted(by_cluster.get(cluster, []), key=lambda pair: pair[1])
        folders = Counter(
            top_folder_label(items[i].path, items[i].root) or "(root)"
            for i, _ in rows
            if i in items
        )
        modalities = Counter(items[i].modality or "unknown" for i, _ in rows if i in items)
        label, count = folders.most_common(1)[0] if folders else (None, 0)
        clusters.append(
            {
                "cluster": cluster,
                "label": label,
                "label_share": count / len(rows) if rows else None,
                "size": len(rows),
                "modalities": dict(modalities),
                "members": [_member_view(i, d, items.get(i)) for i, d in rows[:max_members]],
            }
        )
    return {**run_summary(run), "params": run.params, "metrics": run.metrics, "clusters": clusters}


def _member_view(item_id: int, distance: float, item: ItemRow | None) -> dict[str, Any]:
    modality = item.modality if item is not None else None
    return {
        "id": item_id,
        "path": relative_path(item) if item is not None else None,
        "modality": modality,
        "distance": distance,
        **media_urls(item_id, modality, imported=item is not None and "imported" in item.flags),
    }
