"""``bindindex report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bindindex.cli.common import IndexOpt, handle_errors, resolve_index


@handle_errors
def report_command(
    run: Annotated[str, typer.Argument(help="Run number, or 'latest'.", show_default=False)],
    html: Annotated[Path, typer.Option("--html", help="HTML file to write.", show_default=False)],
    link_audio: Annotated[
        bool,
        typer.Option(
            "--link-audio",
            help="Link audio files by their path relative to the HTML file instead of "
            "embedding them; audio files above 4 MiB are always linked.",
        ),
    ] = False,
    index: IndexOpt = None,
) -> None:
    """Write one HTML page of a cluster run with each cluster's thumbnails and audio players.

    Thumbnails and audio are embedded as data URIs, so the page is one
    self-contained file. Linked audio plays only while the media stays at the
    same place relative to the page.

    Example: bindindex report latest --html clusters.html
    """
    from bindindex.index import Index

    with Index.open(resolve_index(index), create=False) as idx:
        shown = idx.cluster_report(run, html, link_audio=link_audio)
    typer.echo(f"wrote {html} with {shown} items")
