"""Build the FastAPI application of ``bindindex serve``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from bindindex import __version__
from bindindex.server import admin_routes, cluster_routes, item_routes, search_routes
from bindindex.server.errors import install_error_handlers
from bindindex.server.guards import BodyLimit, TokenGuard
from bindindex.server.service import Service

log = logging.getLogger(__name__)

STATIC = Path(str(resources.files("bindindex.server") / "static"))


def create_app(service: Service) -> FastAPI:
    """Return the API and web page over ``service``, which the app closes at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("serving index %s", service.index.path)
        yield
        service.close()

    app = FastAPI(
        title="bindindex",
        version=__version__,
        description="Search an ImageBind media index across modalities, read its items and "
        "cluster it. Every endpoint but /health needs the token when the service has one.",
        lifespan=lifespan,
    )
    app.state.service = service
    install_error_handlers(app)
    for module in (search_routes, item_routes, cluster_routes, admin_routes):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # The body limit sits inside the token check, so a request without the
    # token is rejected before its body is read.
    app.add_middleware(BodyLimit, max_bytes=service.settings.max_upload_bytes)
    if service.settings.token:
        app.add_middleware(TokenGuard, token=service.settings.token)
    return app
