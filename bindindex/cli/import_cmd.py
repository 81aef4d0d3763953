"""``bindindex import``: add precomputed embeddings from a .npy file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bindindex.cli.common import (
    CheckpointOpt,
    IndexOpt,
    JsonOpt,
    ModelOpt,
    emit_json,
    handle_errors,
    resolve_index,
    warn,
)
from bindindex.errors import UsageError


@handle_errors
def import_command(
    file: Annotated[
        Path, typer.Argument(help="A .npy file with one embedding per row.", show_default=False)
    ],
    modality: Annotated[
        str,
        typer.Option(
            "--modality",
            help="What the rows embed: image, audio or text. Search filters use it.",
            show_default=False,
        ),
    ],
    names: Annotated[
        Path | None,
        typer.Option(
            "--names",
            help="Text file with one unique name per row (UTF-8), used in item paths "
            "instead of row numbers.",
            show_default=False,
        ),
    ] = None,
    index: IndexOpt = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Import embeddings computed elsewhere with the index's model, one item per row.

    Rows of any float or integer dtype and memory order are stored as float32.
    Rows that are not finite or are all zero are recorded as failed. Importing
    the same file again replaces its vectors and keeps the item ids.

    Example: bindindex import gpu-run/audio.npy --modality audio --names gpu-run/audio.txt
    """
    from bindindex.index import Index

    labels = _read_names(names) if names is not None else None
    with Index.open(resolve_index(index), model=model, checkpoint=checkpoint) as idx:
        report = idx.import_vectors(file, modality=modality, names=labels)
    if json_output:
        emit_json(report.as_dict())
        return
    for failure in report.failures:
        warn(f"skipped {failure.path}: {failure.reason}: {failure.detail}")
    typer.echo(
        f"imported {report.imported} vectors from {file} as {modality} items "
        f"({report.replaced} replaced earlier ones), failed {report.failed}"
    )


def _read_names(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read --names file {path}: {error}") from error
    # Blank lines are skipped, so a trailing newline does not count as a name.
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]
