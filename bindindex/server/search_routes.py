"""``POST /search``: a query file upload, or JSON with text, an item id or weighted terms."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from bindindex.errors import UsageError
from bindindex.search import QueryTerm
from bindindex.server.deps import ServiceDep
from bindindex.server.errors import ApiError
from bindindex.server.service import Service
from bindindex.server.uploads import UPLOAD_FIELDS, save_upload
from bindindex.server.views import hit_view

router = APIRouter(tags=["search"])

MAX_K = 1000
ModalityFilter = Literal["image", "audio", "text", "any"]


class TermIn(BaseModel):
    """One weighted query term: a text or the id of a stored item."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["text", "item"]
    value: str | int
    weight: float = 1.0


class SearchIn(BaseModel):
    """A search by text, by stored item ("more like this"), or by a list of weighted terms.

    The terms of all three fields are combined as the normalised weighted sum
    of their unit vectors.
    """

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="Text query, weight 1.")
    item: int | None = Field(None, description="Id of a stored item, weight 1.")
    terms: list[TermIn] = Field(default_factory=list, description="Weighted text or item terms.")
    modality: ModalityFilter = Field("any", description="Return only items of this modality.")
    k: int = Field(10, ge=1, le=MAX_K, description="Number of results.")


class FormIn(BaseModel):
    """The non-file fields of a multipart search."""

    modality: ModalityFilter = "any"
    k: int = Field(10, ge=1, le=MAX_K)


_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SearchIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "One query file in the field 'file' (audio or image), "
                    "'audio' or 'image'. The content is sniffed; a file that is not the "
                    "declared modality is rejected with 415.",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "audio": {"type": "string", "format": "binary"},
                        "image": {"type": "string", "format": "binary"},
                        "modality": {"type": "string", "enum": ["image", "audio", "text", "any"]},
                        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                    },
                }
            },
        },
    }
}


@router.post("/search", openapi_extra=_OPENAPI_BODY)
async def search(request: Request, service: ServiceDep) -> dict[str, Any]:
    """Return the stored items nearest to the query, best first, with media and thumbnail URLs.

    ``score`` is the cosine similarity; ``path`` is relative to the indexed folder.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _search_upload(request, service)
    if content_type.startswith("application/json"):
        return await _search_json(request, service)
    raise ApiError(
        415,
        "unsupported_media_type",
        f"unsupported content type {content_type or '(none)'!r}: send application/json with "
        "'text', 'item' or 'terms', or multipart/form-data with a query file",
    )


async def _search_json(request: Request, service: Service) -> dict[str, Any]:
    try:
        query = SearchIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise _invalid(exc) from exc
    terms: list[QueryTerm] = []
    if query.text is not None:
        terms.append(QueryTerm("text", query.text))
    if query.item is not None:
        terms.append(QueryTerm("item", str(query.item)))
    terms.extend(QueryTerm(term.kind, str(term.value), term.weight) for term in query.terms)
    if not terms:
        raise ApiError(400, "invalid_request", "no query given: send 'text', 'item' or 'terms'")
    hits = await service.call(_run_search, service, terms, query.modality, query.k)
    return {"query": query.model_dump(), "hits": hits}


async def _search_upload(request: Request, service: Service) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=len(UPLOAD_FIELDS) + 4)
    try:
        uploads = [
            (field, value) for field, value in form.multi_items() if isinstance(value, UploadFile)
        ]
        unknown = sorted({key for key, _ in form.multi_items()} - {*UPLOAD_FIELDS, "modality", "k"})
        if unknown:
            raise ApiError(
                400,
                "invalid_request",
                f"unknown form field {', '.join(unknown)}: use file, audio or image, modality and k",
            )
        if len(uploads) != 1 or uploads[0][0] not in UPLOAD_FIELDS:
            raise ApiError(
                400,
                "invalid_request",
                "send exactly one query file in the form field 'file', 'audio' or 'image'",
            )
        try:
            options = FormIn.model_validate(
                {key: form[key] for key in ("modality", "k") if key in form}
            )
        except ValidationError as exc:
            raise _invalid(exc) from exc
        field, upload = uploads[0]
        with tempfile.TemporaryDirectory(prefix="bindindex-query-") as folder:
            kind, path = await save_upload(upload, UPLOAD_FIELDS[field], Path(folder))
            name = upload.filename or "upload"
            try:
                hits = await service.call(
                    _run_search, service, [QueryTerm(kind, str(path))], options.modality, options.k
                )
            except UsageError as exc:
                if str(path) not in str(exc):
                    raise
                # The file failed to decode. The library names the temporary
                # copy, but the client knows its own file name.
                message = str(exc).replace(str(path), f"upload {name!r}")
                raise ApiError(422, "undecodable_media", message) from exc
        return {"query": {"upload": name, "kind": kind, **options.model_dump()}, "hits": hits}
    finally:
        await form.close()


def _run_search(
    service: Service, terms: list[QueryTerm], modality: str, k: int
) -> list[dict[str, Any]]:
    index = service.index
    index.refresh()
    hits = service.with_model(index.search, terms, modality=modality, k=k)
    return [hit_view(hit, index.item(hit.id)) for hit in hits]


def _invalid(exc: ValidationError) -> ApiError:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )
    return ApiError(422, "invalid_request", f"invalid request: {problems}")
