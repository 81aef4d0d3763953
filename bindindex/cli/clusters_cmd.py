"""``bindindex clusters``: the history of cluster runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bindindex.cli.cluster_cmd import format_value
from bindindex.cli.common import IndexOpt, JsonOpt, emit_json, handle_errors, resolve_index, warn

clusters_app = typer.Typer(
    help="List, show, compare and export stored cluster runs.\n\n"
    "Example: bindindex clusters diff 3 latest",
    no_args_is_help=True,
)

RunArg = Annotated[str, typer.Argument(help="Run number, or 'latest'.", show_default=False)]


@clusters_app.command("list")
@handle_errors
def list_command(index: IndexOpt = None, json_output: JsonOpt = False) -> None:
    """List every stored cluster run, oldest first, with k, silhouette and drift.

    Example: bindindex clusters list --json
    """
    from bindindex.index import Index

    with Index.open(resolve_index(index), create=False) as idx:
        runs = idx.cluster_runs()
    if json_output:
        emit_json(runs)
        return
    if not runs:
        warn("no cluster run stored yet; run 'bindindex cluster' first")
        return
    typer.echo("run  created (UTC)              k   items  centred  silhouette  moved  new  gone")
    for run in runs:
        typer.echo(
            f"{run['run']:<4} {run['created_at']:<26} {run['k']:<3} {run['n_items']:<6} "
            f"{'yes' if run['center'] else 'no':<8} {format_value(run['silhouette']):<11} "
            f"{format_value(run['items_moved']):<6} {run['appeared']:<4} {run['disappeared']}"
        )


@clusters_app.command("show")
@handle_errors
def show_command(
    run: RunArg,
    members: Annotated[
        bool, typer.Option("--members", help="List each cluster's items, nearest first.")
    ] = False,
    index: IndexOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show one run: its parameters, measures, and each cluster's size, name and items.

    Items indexed after the latest run appear as provisional members of the
    cluster whose centroid is nearest.

    Example: bindindex clusters show latest --members
    """
    from bindindex.index import Index

    with Index.open(resolve_index(index), create=False) as idx:
        shown = idx.cluster_run(run, members=members)
    if json_output:
        emit_json(shown)
        return
    typer.echo(
        f"cluster run {shown['run']} ({shown['created_at']}): k={shown['k']} over "
        f"{shown['n_items']} items, silhouette {format_value(shown['silhouette'])}, "
        f"centring {'on' if shown['center'] else 'off'}"
    )
    for cluster in shown["clusters"]:
        name = f" {cluster['name']!r} ({cluster['name_score']:.3f})" if cluster["name"] else ""
        parts = ", ".join(f"{k} {v}" for k, v in cluster["modalities"].items())
        typer.echo(
            f"cluster {cluster['cluster']}{name}: {cluster['size']} items, "
            f"{cluster['provisional']} provisional ({parts})"
        )
        for member in cluster.get("members", []):
            flag = " provisional" if member["provisional"] else ""
            typer.echo(f"  {member['item_id']:>6} {member['distance']:.4f}{flag} {member['path']}")


@clusters_app.command("diff")
@handle_errors
def diff_command(
    run_a: RunArg, run_b: RunArg, index: IndexOpt = None, json_output: JsonOpt = False
) -> None:
    """Compare two runs by cluster id: clusters that appeared, disappeared, split or merged.

    Example: bindindex clusters diff 1 latest
    """
    from bindindex.index import Index

    with Index.open(resolve_index(index), create=False) as idx:
        diff = idx.cluster_diff(run_a, run_b)
    if json_output:
        emit_json(diff)
        return
    typer.echo(f"run {diff['run_a']} -> run {diff['run_b']}")
    typer.echo(f"appeared     {diff['appeared']}")
    typer.echo(f"disappeared  {diff['disappeared']}")
    typer.echo(f"split        {diff['split']}")
    typer.echo(f"merged       {diff['merged']}")
    typer.echo(
        f"items moved  {diff['items_moved']} of {diff['items_common']} in both runs "
        f"({diff['items_added']} only in run {diff['run_b']}, {diff['items_removed']} only in "
        f"run {diff['run_a']})"
    )
    typer.echo("cluster  size before  size after")
    for row in diff["sizes"]:
        typer.echo(f"{row['cluster']:<8} {row['size_a']:<12} {row['size_b']}")


@clusters_app.command("export")
@handle_errors
def export_command(
    run: RunArg,
    fmt: Annotated[
        str, typer.Option("--format", help="Output format: csv, json or parquet.")
    ] = "csv",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write. Default: stdout (csv and json only)."),
    ] = None,
    index: IndexOpt = None,
) -> None:
    """Write one row per item of a run: item id, path, modality, cluster, name, distance.

    Example: bindindex clusters export latest --format parquet -o run.parquet
    """
    from bindindex.index import Index

    with Index.open(resolve_index(index), create=False) as idx:
        text = idx.export_cluster_run(run, fmt, output)
    if text is not None:
        typer.echo(text, nl=False)
    else:
        warn(f"wrote {output}")
