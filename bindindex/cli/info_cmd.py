"""``bindindex info`` and ``bindindex export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bindindex.cli.common import IndexOpt, JsonOpt, emit_json, handle_errors, resolve_index


@handle_errors
def info_command(index: IndexOpt = None, json_output: JsonOpt = False) -> None:
    """Show the model, item counts by modality and status, and the index type.

    Example: bindindex info --index ~/media-index
    """
    from bindindex.index import Index

    with Index.open(resolve_index(index), create=False) as idx:
        info = idx.info()
    if json_output:
        emit_json(info)
        return
    typer.echo(f"index        {info['index']}")
    if info["model_id"] is None:
        typer.echo("model        none yet: no file has been embedded into this index")
    else:
        typer.echo(f"model        {info['model_name']} ({info['model_id']})")
    if info["meaningless"]:
        typer.echo(
            "WARNING      built with the random-weight test model: its vectors carry no meaning"
        )
    typer.echo(f"preprocess   version {info['preprocess_version'] or 'n/a'}")
    typer.echo(
        f"index type   {info['index_type']}, {info['vectors']} vectors of dimension {info['dim']}"
    )
    for status, by_modality in sorted(info["items"].items()):
        parts = ", ".join(f"{modality} {n}" for modality, n in sorted(by_modality.items()))
        typer.echo(f"{status:<12} {parts}")
    precision = ", ".join(f"{name} {n}" for name, n in sorted(info["precision"].items()))
    typer.echo(
        f"precision    {precision or 'n/a'} (vectors by the precision they were computed in)"
    )
    typer.echo(f"cluster runs {info['cluster_runs']}")


@handle_errors
def export_command(
    file: Annotated[
        Path, typer.Argument(help="Output file ending in .npz or .parquet.", show_default=False)
    ],
    index: IndexOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Write every item's id, path, modality and vector to FILE (.npz or .parquet).

    Example: bindindex export vectors.parquet
    """
    from bindindex.index import Index

    with Index.open(resolve_index(index), create=False) as idx:
        count = idx.export(file)
    if json_output:
        emit_json({"file": str(file), "items": count})
    else:
        typer.echo(f"wrote {count} items to {file}")
