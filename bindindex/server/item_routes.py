"""``/items/{id}``: an item's record, its original file and its thumbnail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from bindindex.errors import NotFoundError
from bindindex.server.deps import ServiceDep
from bindindex.server.service import Service
from bindindex.server.views import item_view, media_type, missing_file_message, relative_path
from bindindex.store.catalog import ItemRow

router = APIRouter(tags=["items"])


async def _indexed_item(service: Service, item_id: int) -> ItemRow:
    item = await service.call(service.index.item, item_id)
    if item.status != "indexed":
        raise NotFoundError(
            f"item {item_id} ({relative_path(item)}) was not indexed: "
            f"{item.status}, {item.reason or 'no reason recorded'}"
        )
    return item


@router.get("/items/{item_id}")
async def get_item(item_id: int, service: ServiceDep) -> dict[str, Any]:
    """Return an item's path (relative to its indexed folder), modality, format and URLs."""
    item = await service.call(service.index.item, item_id)
    return item_view(item)


@router.get(
    "/items/{item_id}/media",
    response_class=FileResponse,
    responses={206: {"description": "The requested byte range of the file."}},
)
async def get_media(item_id: int, service: ServiceDep) -> FileResponse:
    """Stream the item's original file with its content type; Range requests get 206.

    The file is found by item id only. A file that was moved or deleted
    since it was indexed gives 404.
    """
    item = await _indexed_item(service, item_id)
    path = item.fs_path
    if not path.is_file():
        raise NotFoundError(missing_file_message(item))
    # NOTE: a file deleted between this check and the response still fails
    # inside Starlette's FileResponse, which returns 500.
    return FileResponse(
        path,
        media_type=media_type(item),
        # The stored display path, because a name that is not UTF-8 cannot go in a header.
        filename=Path(item.path).name,
        content_disposition_type="inline",
        headers={"x-content-type-options": "nosniff"},
    )


@router.get(
    "/items/{item_id}/thumbnail",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def get_thumbnail(item_id: int, service: ServiceDep) -> FileResponse:
    """Return a JPEG thumbnail of an image item, made once and cached under the index folder."""
    item = await _indexed_item(service, item_id)
    if item.modality != "image":
        raise NotFoundError(
            f"item {item_id} is {item.modality or 'not media'}; only images have thumbnails"
        )
    path = await run_in_threadpool(service.thumbnails.get, item)
    return FileResponse(
        path, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"}
    )
