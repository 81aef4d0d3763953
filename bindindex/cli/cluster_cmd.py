"""``bindindex cluster``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bindindex.cli.common import IndexOpt, JsonOpt, emit_json, handle_errors, resolve_index, warn


@handle_errors
def cluster_command(
    k: Annotated[int, typer.Option("-k", help="Number of clusters.")] = 8,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="Ground-truth concepts for the semantic measures: 'top-folder' (the first folder "
            "below the indexed root) or a CSV file of path,label rows.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of K-Means.")] = 0,
    niter: Annotated[int, typer.Option("--niter", min=1, help="K-Means iterations.")] = 20,
    index: IndexOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Cluster every stored vector with K-Means, store the run and print its measures.

    Prints inertia, silhouette, cluster sizes by modality and the cross-modal
    cosine analysis; with --labels also per-concept consistency, purity, ARI
    and NMI.

    Example: bindindex cluster -k 7 --labels top-folder --json
    """
    from bindindex.index import Index

    with Index.open(resolve_index(index), create=False) as idx:
        run = idx.cluster(k, labels=labels, seed=seed, niter=niter)
    for message in run.warnings:
        warn(f"warning: {message}")
    if json_output:
        emit_json(run.as_dict())
        return
    _print_report(run.as_dict())


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _print_report(report: dict[str, Any]) -> None:
    echo = typer.echo
    echo(f"cluster run {report['run']}: k={report['k']} over {report['n_items']} items")
    echo(f"inertia     {_fmt(report['inertia'])}")
    echo(f"silhouette  {_fmt(report['silhouette'])}")

    echo("sizes by modality:")
    for row in report["sizes"]:
        parts = ", ".join(
            f"{key} {value}" for key, value in row.items() if key not in ("cluster", "size")
        )
        echo(f"  cluster {row['cluster']}: {row['size']} ({parts})")

    cross = report["cross_modal"]
    echo("cross-modal cosine (mean):")
    echo(
        f"  image-image {_fmt(cross['image_image'])}, audio-audio {_fmt(cross['audio_audio'])}, "
        f"image-audio {_fmt(cross['image_audio'])}"
    )
    if "matched" in cross:
        echo(
            f"  matched concept pairs {_fmt(cross['matched'])}, unmatched {_fmt(cross['unmatched'])}, "
            f"gap {_fmt(cross['gap'])}"
        )

    consistency = report.get("consistency")
    if consistency:
        echo(
            f"purity {_fmt(consistency['purity'])}, ARI {_fmt(consistency['ari'])}, "
            f"NMI {_fmt(consistency['nmi'])}, image/audio in the same cluster for "
            f"{_fmt(consistency['cross_modal_agreement'])} of concepts"
        )
        echo(
            "per concept: the cluster holding most of its items (majority) and their share; the "
            "majority clusters of its images and of its audio, and whether they are the same"
        )
        echo("concept         items  majority  share  image  audio  same")
        for row in consistency["concepts"]:
            echo(
                f"{row['concept'][:15]:<15} {row['items']:>5}  {row['majority_cluster']:>8}  "
                f"{row['majority_share']:.2f}  {_fmt(row['image_cluster']):>5}  "
                f"{_fmt(row['audio_cluster']):>5}  {_fmt(row['image_audio_same_cluster'])}"
            )
