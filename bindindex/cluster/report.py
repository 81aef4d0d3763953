"""A self-contained HTML page of one cluster run: each cluster's thumbnails and audio players.

Thumbnails are inline JPEG data URIs. Audio files up to ``AUDIO_INLINE_MAX``
bytes are inline data URIs too. Larger ones, or all of them with
``link_audio``, are links relative to the page's folder, and play only while
the media stays at the same place relative to the page.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from bindindex.cluster.history import show_run
from bindindex.errors import UsageError
from bindindex.store.catalog import Catalog, ItemRow

THUMBNAIL_PIXELS = 160
AUDIO_INLINE_MAX = 4 * 1024 * 1024
AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".aiff": "audio/aiff",
    ".aif": "audio/aiff",
}
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
section { border-top: 1px solid #ccc; padding: 0.5em 0; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 180px; font-size: 11px; word-break: break-all; }
figure img { max-width: 170px; max-height: 170px; display: block; }
figure audio { width: 170px; }
.provisional { opacity: 0.6; border: 1px dashed #999; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
"""


def _thumbnail(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=80)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _audio_source(path: Path, page_folder: Path, link_audio: bool) -> str | None:
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if link_audio or size > AUDIO_INLINE_MAX:
        relative = os.path.relpath(path.resolve(), page_folder.resolve())
        return html.escape(Path(relative).as_posix(), quote=True)
    mime = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _figure(
    member: dict[str, Any], item: ItemRow | None, page_folder: Path, link_audio: bool
) -> str:
    item_id = member["item_id"]
    label = html.escape(member["path"] or f"item {item_id} (deleted)")
    classes = "provisional" if member["provisional"] else ""
    body = "<div>file not readable</div>"
    if item is not None and member["modality"] == "image":
        source = _thumbnail(item.fs_path)
        if source is not None:
            body = f'<img src="{source}" alt="{label}">'
    elif item is not None and member["modality"] == "audio":
        source = _audio_source(item.fs_path, page_folder, link_audio)
        if source is not None:
            body = f'<audio controls preload="none" src="{source}"></audio>'
    note = " (provisional)" if member["provisional"] else ""
    return (
        f'<figure class="{classes}" data-item="{item_id}">{body}'
        f"<figcaption>#{item_id}{note} {label}</figcaption></figure>"
    )


def write_report(
    catalog: Catalog, dim: int, run_id: int, target: Path, *, link_audio: bool = False
) -> int:
    """Write the HTML page of ``run_id`` to ``target`` and return the number of items shown."""
    run = show_run(catalog, dim, run_id, with_members=True)
    ids = [m["item_id"] for cluster in run["clusters"] for m in cluster["members"]]
    items = catalog.items_by_ids(ids)

    parts = _header(run)
    for cluster in run["clusters"]:
        parts.append(_section_start(cluster))
        for member in cluster["members"]:
            item = items.get(member["item_id"])
            parts.append(_figure(member, item, target.parent, link_audio))
        parts.append("</div></section>")
    parts.append("</body></html>")

    try:
        target.write_text("\n".join(parts), encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot write report {target}: {exc.strerror or exc}") from exc
    return len(ids)


def _header(run: dict[str, Any]) -> list[str]:
    title = f"bindindex cluster run {run['run']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{run['created_at']}: k={run['k']} over {run['n_items']} items, model "
        f"{html.escape(str(run['model_id']))}, silhouette {_number(run['silhouette'])}, "
        f"modality centring {'on' if run['center'] else 'off'}.</p>",
    ]
    auto_k = run["metrics"].get("auto_k")
    if auto_k:
        parts.append(f"<p>k chosen by rule: {html.escape(auto_k['rule'])}.</p>")
        parts.append(_k_table(auto_k["table"], auto_k["chosen"]))
    return parts


def _section_start(cluster: dict[str, Any]) -> str:
    name = ""
    if cluster["name"]:
        name = f": {html.escape(cluster['name'])} (score {_number(cluster['name_score'])})"
    modalities = ", ".join(f"{k} {v}" for k, v in cluster["modalities"].items())
    return (
        f'<section id="cluster-{cluster["cluster"]}"><h2>cluster {cluster["cluster"]}{name}'
        f"</h2><p>{cluster['size']} items ({modalities}), "
        f'{cluster["provisional"]} provisional</p><div class="grid">'
    )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _k_table(rows: list[dict[str, Any]], chosen: int) -> str:
    header = "<tr><th>k</th><th>inertia</th><th>silhouette</th><th>Calinski-Harabasz</th>"
    header += "<th>Davies-Bouldin</th></tr>"
    lines = [f"<table>{header}"]
    for row in rows:
        mark = " <b>chosen</b>" if row["k"] == chosen else ""
        lines.append(
            f"<tr><td>{row['k']}{mark}</td><td>{_number(row['inertia'])}</td>"
            f"<td>{_number(row['silhouette'])}</td><td>{_number(row['calinski_harabasz'])}</td>"
            f"<td>{_number(row['davies_bouldin'])}</td></tr>"
        )
    lines.append("</table>")
    return "".join(lines)
