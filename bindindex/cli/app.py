"""The ``bindindex`` command: one Typer app with a command per job."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from bindindex.cli.check_cmd import check_command
from bindindex.cli.cluster_cmd import cluster_command
from bindindex.cli.clusters_cmd import clusters_app
from bindindex.cli.demo_cmd import demo_command
from bindindex.cli.import_cmd import import_command
from bindindex.cli.index_cmd import failures_command, index_command
from bindindex.cli.info_cmd import export_command, info_command
from bindindex.cli.report_cmd import report_command
from bindindex.cli.search_cmd import search_command
from bindindex.cli.serve_cmd import serve_command

app = typer.Typer(
    name="bindindex",
    help="Index images and audio in ImageBind's joint embedding space, search across "
    "modalities and cluster with K-Means.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def configure(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Log more: -v info, -vv debug.")
    ] = 0,
) -> None:
    """Index images and audio in ImageBind's joint space, search across modalities, cluster."""
    levels = {0: logging.WARNING, 1: logging.INFO}
    level = levels.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


app.command("index")(index_command)
app.command("search")(search_command)
app.command("cluster")(cluster_command)
app.add_typer(clusters_app, name="clusters")
app.command("report")(report_command)
app.command("info")(info_command)
app.command("export")(export_command)
app.command("failures")(failures_command)
app.command("import")(import_command)
app.command("check")(check_command)
app.command("demo")(demo_command)
app.command("serve")(serve_command)


def main() -> None:
    app()
