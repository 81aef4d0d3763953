"""JSON shapes of items, hits and cluster runs, and the content types of media files."""

from __future__ import annotations

import mimetypes
from collections import Counter
from pathlib import Path
from typing import Any

from bindindex.cluster import top_folder_label
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


def run_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Add the run's URL to the summary that the cluster history gives."""
    return {**summary, "url": f"/clusters/{summary['run']}"}


def run_detail(
    run: dict[str, Any], items: dict[int, ItemRow], max_members: int | None = None
) -> dict[str, Any]:
    """Describe a run (from ``Index.cluster_run`` with members) for the page and API clients.

    Each cluster keeps its stable id and its name from the text encoder (when
    the run named its clusters). ``label`` is that name, or else the most
    common first folder below the indexed root among its members, with
    ``label_share`` the share of members in that folder. Member paths are
    relative to their indexed folder; members whose item was removed after the
    run have ``path`` None. ``max_members`` limits the members listed, not the counts.
    """
    clusters = []
    for cluster in run["clusters"]:
        members = cluster.get("members", [])
        folders = Counter(
            top_folder_label(items[m["item_id"]].path, items[m["item_id"]].root) or "(root)"
            for m in members
            if m["item_id"] in items
        )
        folder, count = folders.most_common(1)[0] if folders else (None, 0)
        named = cluster.get("name") is not None
        listed = members if max_members is None else members[:max_members]
        clusters.append(
            {
                **{key: value for key, value in cluster.items() if key != "members"},
                "label": cluster["name"] if named else folder,
                "label_share": None if named or not members else count / len(members),
                "members": [
                    _member_view(m["item_id"], m["distance"], items.get(m["item_id"]))
                    | {"provisional": m["provisional"]}
                    for m in listed
                ],
            }
        )
    metrics = run["metrics"]
    return {
        **run_summary({key: value for key, value in run.items() if key != "clusters"}),
        "inertia": metrics.get("inertia"),
        "warnings": metrics.get("warnings", []),
        "clusters": clusters,
    }


def _member_view(item_id: int, distance: float, item: ItemRow | None) -> dict[str, Any]:
    modality = item.modality if item is not None else None
    return {
        "id": item_id,
        "path": relative_path(item) if item is not None else None,
        "modality": modality,
        "distance": distance,
        **media_urls(item_id, modality, imported=item is not None and "imported" in item.flags),
    }
