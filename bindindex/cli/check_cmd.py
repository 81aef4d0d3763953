"""``bindindex check``."""

from __future__ import annotations

from typing import Annotated

import typer

from bindindex.cli.common import IndexOpt, JsonOpt, emit_json, handle_errors, resolve_index


@handle_errors
def check_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report disagreements without repairing them.")
    ] = False,
    index: IndexOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Check that the catalog, its stored vectors and the FAISS file agree, and repair them.

    Exits with code 1 when --dry-run finds a problem.

    Example: bindindex check --dry-run
    """
    from bindindex.index import Index

    with Index.open(resolve_index(index), create=False) as idx:
        report = idx.check(repair=not dry_run)
    problems = (
        report["items_without_vector"]
        or report["vectors_without_item"]
        or report["non_finite_vectors"]
        or report["vector_file"] != "ok"
    )
    if json_output:
        emit_json(report)
    else:
        typer.echo(f"items without a vector:    {len(report['items_without_vector'])}")
        typer.echo(f"vectors without an item:   {len(report['vectors_without_item'])}")
        typer.echo(f"non-finite vectors:        {len(report['non_finite_vectors'])}")
        typer.echo(f"vector file:               {report['vector_file']}")
        if report["repaired"]:
            typer.echo(
                "repaired; items without a vector or with a non-finite one are embedded again "
                "by the next index run (imported vectors are marked failed)"
            )
        elif not problems:
            typer.echo("no problems found")
    if problems and dry_run:
        raise typer.Exit(1)
