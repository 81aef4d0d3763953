"""``bindindex serve``."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated

import typer

from bindindex.cli.common import (
    CheckpointOpt,
    IndexOpt,
    ModelOpt,
    PrecisionOpt,
    handle_errors,
    resolve_index,
    warn,
)
from bindindex.errors import UsageError


def is_loopback(host: str) -> bool:
    """Return whether ``host`` names only this machine: localhost or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@handle_errors
def serve_command(
    index: IndexOpt = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    precision: PrecisionOpt = "fp32",
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Anything but a loopback address also needs --allow-remote.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow a --host that other machines can reach. Without --token, anyone who "
            "reaches the port can search the index and download every indexed file.",
        ),
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="BINDINDEX_TOKEN",
            help="Require this token on every request but /health, as 'Authorization: Bearer "
            "TOKEN' or, for the web page, ?token=TOKEN in its URL.",
            show_default=False,
        ),
    ] = None,
    root: Annotated[
        list[Path] | None,
        typer.Option(
            "--root",
            help="Folder that POST /index indexes again (repeatable). Default: the folders "
            "the index's items were found under.",
            show_default=False,
        ),
    ] = None,
    max_upload_mb: Annotated[
        float,
        typer.Option(
            "--max-upload-mb", min=0.001, help="Largest request body, uploads included, in MiB."
        ),
    ] = 50.0,
) -> None:
    """Serve the index over HTTP: a JSON API (OpenAPI at /docs) and a search page at /.

    The model loads on the first query and stays loaded; queries run one at a
    time on it. The service listens on 127.0.0.1 unless --host and
    --allow-remote name another address.

    Example: bindindex serve --index ~/media-index --port 8000, then open http://127.0.0.1:8000/
    """
    import uvicorn

    from bindindex.server import ServerSettings, Service, create_app

    if not is_loopback(host):
        if not allow_remote:
            raise UsageError(
                f"--host {host} is not a loopback address, so other machines could reach the "
                "service; add --allow-remote (and --token) to listen there"
            )
        if not token:
            warn(
                f"warning: listening on {host}:{port} without a token: anyone who reaches it can "
                "search the index and download every indexed file; set --token or BINDINDEX_TOKEN"
            )
    settings = ServerSettings(
        index=resolve_index(index),
        model=model,
        checkpoint=checkpoint,
        precision=precision,
        roots=tuple(path.expanduser().resolve() for path in root or ()),
        token=token or None,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
    )
    service = Service.open(settings)
    shown_host = f"[{host}]" if ":" in host else host
    warn(f"serving {settings.index} at http://{shown_host}:{port}/ (press Ctrl+C to stop)")
    if token:
        warn("open the page with ?token=TOKEN appended to that address")
    level = logging.getLogger().getEffectiveLevel()
    uvicorn.run(
        create_app(service),
        host=host,
        port=port,
        log_level="info" if level <= logging.INFO else "warning",
        # uvicorn's access log prints query strings, which can contain ?token=.
        access_log=False,
    )
