"""``bindindex demo``: the main job from start to end on a small sample folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated

import typer

from bindindex.cli.cluster_cmd import _print_report
from bindindex.cli.common import (
    CheckpointOpt,
    ModelOpt,
    PrecisionOpt,
    data_home,
    emit_line,
    handle_errors,
)

DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "data" / "samples.csv"


@handle_errors
def demo_command(
    media: Annotated[
        Path | None,
        typer.Option(
            "--media",
            help="Local folder to index instead of downloading the samples; one sub-folder per "
            "concept (dog/, cat/, ...).",
            show_default=False,
        ),
    ] = None,
    manifest: Annotated[
        Path, typer.Option("--manifest", help="CSV of sample URLs and SHA-256 to download.")
    ] = DEFAULT_MANIFEST,
    index: Annotated[
        Path | None,
        typer.Option(
            "--index",
            help="Index folder for the demo. Default: a folder per media folder and model "
            "under <data home>/demo.",
        ),
    ] = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    precision: PrecisionOpt = "fp32",
) -> None:
    """Index a sample folder, find images that match a sound, and cluster everything.

    Without --media, downloads the public samples listed in data/samples.csv
    (about 6 MB) into <data home>/samples first.

    Example: bindindex demo --media ./my-media --model imagebind-test
    """
    from bindindex.cluster import top_folder_label
    from bindindex.index import Index
    from bindindex.samples import fetch_samples
    from bindindex.search import QueryTerm

    if media is None:
        media = data_home() / "samples"
        typer.echo(f"== downloading samples into {media}", err=True)
        downloaded, present = fetch_samples(manifest, media)
        typer.echo(f"   {downloaded} downloaded, {present} already present", err=True)
    elif not media.is_dir():
        raise typer.BadParameter(f"{media} is not a folder", param_hint="--media")

    model_name = model or "imagebind-huge"
    # One demo index per media folder and model, so that two demo runs on
    # different folders never mix their items.
    media_key = hashlib.sha256(os.fsencode(media.resolve())).hexdigest()[:10]
    index_path = index or data_home() / "demo" / f"{model_name}-{media_key}"
    with Index.open(
        index_path, model=model_name, checkpoint=checkpoint, precision=precision
    ) as idx:
        typer.echo(f"== index {media} into {index_path}")
        report = idx.add_paths([media], progress=True)
        typer.echo(
            f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
            f"removed {report.removed}, failed {report.failed}"
        )
        if idx.info()["meaningless"]:
            typer.echo("NOTE: imagebind-test has random weights, so the results below mean nothing")

        audio = idx.catalog.items(status="indexed", modality="audio")
        if not audio:
            typer.echo("no audio was indexed, so there is no audio-to-image query to run")
        else:
            query = next(
                (row for row in audio if top_folder_label(row.path, row.root) == "dog"), audio[0]
            )
            typer.echo(f"== images nearest to the sound {query.path}")
            for hit in idx.search([QueryTerm("audio", str(query.fs_path))], modality="image", k=3):
                emit_line(hit.as_dict())

        rows = idx.catalog.items(status="indexed")
        concepts = {top_folder_label(row.path, row.root) for row in rows} - {None}
        k = max(2, len(concepts))
        if concepts:
            typer.echo(f"== K-Means with k={k} (one cluster per concept folder)")
        else:
            typer.echo(
                f"== K-Means with k={k}: {media} has no concept sub-folders, so there are no "
                "labels to compare the clusters with"
            )
        run = idx.cluster(k, labels="top-folder" if concepts else None)
        _print_report(run.as_dict())
