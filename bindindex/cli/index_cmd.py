"""``bindindex index`` and ``bindindex failures``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bindindex.cli.common import (
    CheckpointOpt,
    IndexOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    emit_json,
    handle_errors,
    resolve_index,
    warn,
)


@handle_errors
def index_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Folders or files to index.", show_default=False)
    ],
    index: IndexOpt = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    precision: PrecisionOpt = "fp32",
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Files per model call.")
    ] = 8,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Try files that failed before even if unchanged.")
    ] = False,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="Hide the progress bar.")
    ] = False,
    max_pixels: Annotated[
        int,
        typer.Option(
            "--max-pixels",
            envvar="BINDINDEX_MAX_PIXELS",
            min=1,
            help="Reject images with more pixels than this (width x height) as possible "
            "decompression bombs, before decoding them.",
        ),
    ] = 178_956_970,
    json_output: JsonOpt = False,
) -> None:
    """Index images and audio under PATHS: add new files, re-embed changed ones, drop deleted ones.

    Files are recognised by content, not by extension. A file that cannot be
    decoded is recorded with a reason and the rest are indexed.

    Example: bindindex index ~/Pictures ~/Sounds --index ~/media-index
    """
    from bindindex.index import Index

    with Index.open(
        resolve_index(index), model=model, checkpoint=checkpoint, precision=precision
    ) as idx:
        report = idx.add_paths(
            paths,
            batch_size=batch_size,
            retry_failed=retry_failed,
            progress=not no_progress,
            max_pixels=max_pixels,
        )
    if json_output:
        emit_json(report.as_dict())
        return
    for failure in report.failures:
        warn(f"skipped {failure.path}: {failure.reason}: {failure.detail}")
    if report.model_id is not None:
        warn(f"embedded with {report.model_id}, {report.precision_note}")
    typer.echo(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"removed {report.removed}, failed {report.failed}"
        + (f", moved {report.moved}" if report.moved else "")
        + (f", ignored {report.ignored} non-media files" if report.ignored else "")
    )


@handle_errors
def failures_command(index: IndexOpt = None, json_output: JsonOpt = False) -> None:
    """List the files that could not be indexed, with their reason codes.

    Example: bindindex failures --json
    """
    from bindindex.index import Index

    with Index.open(resolve_index(index), create=False) as idx:
        failures = idx.failures()
    if json_output:
        emit_json([f.__dict__ for f in failures])
        return
    for failure in failures:
        typer.echo(f"{failure.path}\t{failure.reason}\t{failure.detail}")
