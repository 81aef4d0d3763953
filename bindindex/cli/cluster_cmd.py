"""``bindindex cluster``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
from bindindex.errors import UsageError

DEFAULT_K = 8
DEFAULT_CHANGE_THRESHOLD = 0.1


@handle_errors
def cluster_command(
    k: Annotated[
        int | None,
        typer.Option("-k", help=f"Number of clusters. Default {DEFAULT_K}.", show_default=False),
    ] = None,
    auto_k: Annotated[
        str | None,
        typer.Option(
            "--auto-k",
            help="Try every k in MIN..MAX (for example 2..12) and keep the one with the highest "
            "silhouette; where several are within 0.01 of it, the smallest. Replaces -k.",
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="Ground-truth concepts for the semantic measures: 'top-folder' (the first folder "
            "below the indexed root) or a CSV file of path,label rows.",
        ),
    ] = None,
    center: Annotated[
        bool,
        typer.Option(
            "--center",
            help="Subtract each modality's mean vector before clustering, so that clusters follow "
            "concepts more than modalities. The cross-modal cosines are shown before and after.",
        ),
    ] = False,
    names: Annotated[
        bool,
        typer.Option(
            "--names",
            help="Name each cluster after the nearest prompt of the vocabulary, using the "
            "model's text encoder (loads the model).",
        ),
    ] = False,
    vocabulary: Annotated[
        Path | None,
        typer.Option(
            "--vocabulary",
            help="Text file of naming prompts, one per line, instead of the shipped list. "
            "Implies --names.",
        ),
    ] = None,
    min_similarity: Annotated[
        float,
        typer.Option(
            "--min-similarity",
            help="Minimum cosine between a new and a previous centroid for the new cluster to "
            "keep the previous id.",
        ),
    ] = 0.5,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Write a PNG: a 2-D projection coloured by cluster, one marker per modality, "
            "and a concept-by-cluster heatmap with --labels.",
        ),
    ] = None,
    projection: Annotated[
        str, typer.Option("--projection", help="Projection of --plot: pca, or umap if installed.")
    ] = "pca",
    if_changed: Annotated[
        bool,
        typer.Option(
            "--if-changed",
            help="Cluster only when the share of items added, removed or re-indexed since the "
            "latest run exceeds --change-threshold; otherwise print why and exit 0.",
        ),
    ] = False,
    change_threshold: Annotated[
        float,
        typer.Option(
            "--change-threshold",
            min=0.0,
            help="Share of changed items (0 to 1) above which --if-changed clusters.",
        ),
    ] = DEFAULT_CHANGE_THRESHOLD,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of K-Means.")] = 0,
    niter: Annotated[int, typer.Option("--niter", min=1, help="K-Means iterations.")] = 20,
    index: IndexOpt = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    precision: PrecisionOpt = "fp32",
    json_output: JsonOpt = False,
) -> None:
    """Cluster every stored vector with K-Means, store the run and print its measures.

    Prints inertia, silhouette, cluster sizes by modality and the cross-modal
    cosine analysis; with --labels also per-concept consistency, purity, ARI
    and NMI. Cluster ids are matched to the previous run's, and the drift
    since that run is shown. For a periodic run, schedule it with
    --if-changed, for example from cron:
    0 3 * * * bindindex cluster --auto-k 4..16 --center --if-changed

    Example: bindindex cluster -k 7 --labels top-folder --center --plot clusters.png
    """
    from bindindex.cluster.kmeans import parse_k_range
    from bindindex.index import Index

    if k is not None and auto_k is not None:
        raise UsageError("give either -k or --auto-k, not both")
    k_range = parse_k_range(auto_k) if auto_k is not None else None
    with Index.open(
        resolve_index(index), model=model, checkpoint=checkpoint, precision=precision, create=False
    ) as idx:
        if if_changed:
            change = idx.cluster_change()
            if change["fraction"] is not None and change["fraction"] <= change_threshold:
                warn(
                    f"skipped: {change['fraction']:.1%} of the items changed since run "
                    f"{change['run']} ({change['added']} added, {change['removed']} removed, "
                    f"{change['changed']} re-indexed); the threshold is {change_threshold:.1%}"
                )
                if json_output:
                    emit_json({"skipped": True, "change": change, "threshold": change_threshold})
                return
        run = idx.cluster(
            k if k is not None else DEFAULT_K,
            auto_k=k_range,
            labels=labels,
            seed=seed,
            niter=niter,
            center=center,
            names=names or vocabulary is not None,
            vocabulary=vocabulary,
            min_similarity=min_similarity,
        )
        meaningless = idx.catalog.get_meta("meaningless") == "1"
        if plot is not None:
            idx.plot_cluster_run(run.id, plot, projection=projection)
            warn(f"wrote {plot}")
    for message in run.warnings:
        warn(f"warning: {message}")
    if meaningless and (names or vocabulary is not None):
        warn("note: the index was built with the random-weight test model; the names mean nothing")
    if json_output:
        emit_json(run.as_dict())
        return
    _print_report(run.as_dict())


def format_value(value: Any) -> str:
    """Format a measure for the text output: n/a for None, four decimals for floats."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _print_report(report: dict[str, Any]) -> None:
    echo = typer.echo
    echo(f"cluster run {report['run']}: k={report['k']} over {report['n_items']} items")
    auto_k = report.get("auto_k")
    if auto_k:
        echo(
            f"k chosen from {auto_k['evaluated'][0]}..{auto_k['evaluated'][1]} by {auto_k['rule']}"
        )
        echo(f"  (scores on a sample of {auto_k['sample_size']} items)")
        echo("  k   inertia     silhouette  calinski-harabasz  davies-bouldin")
        for row in auto_k["table"]:
            mark = "  <- chosen" if row["k"] == auto_k["chosen"] else ""
            echo(
                f"  {row['k']:<3} {format_value(row['inertia']):<11} {format_value(row['silhouette']):<11} "
                f"{format_value(row['calinski_harabasz']):<18} {format_value(row['davies_bouldin'])}{mark}"
            )
    echo(f"inertia     {format_value(report['inertia'])}")
    echo(f"silhouette  {format_value(report['silhouette'])}")

    names = report.get("names") or {}
    echo("sizes by modality:")
    for row in report["sizes"]:
        parts = ", ".join(
            f"{key} {value}" for key, value in row.items() if key not in ("cluster", "size")
        )
        named = names.get(str(row["cluster"]))
        label = f"  {named['name']!r} ({named['score']:.3f})" if named else ""
        echo(f"  cluster {row['cluster']}: {row['size']} ({parts}){label}")

    _print_cross(report["cross_modal"], "cross-modal cosine (mean)")
    if "cross_modal_centered" in report:
        _print_cross(report["cross_modal_centered"], "after centring each modality")

    identity = report.get("identity") or {}
    changes = report.get("drift")
    if changes:
        echo(
            f"drift since run {identity['previous_run']}: appeared {changes['appeared']}, "
            f"disappeared {changes['disappeared']}, split {changes['split']}, "
            f"merged {changes['merged']}, {changes['items_moved']} of {changes['items_common']} "
            f"items moved, {changes['items_added']} added, {changes['items_removed']} removed"
        )

    consistency = report.get("consistency")
    if consistency:
        echo(
            f"purity {format_value(consistency['purity'])}, ARI {format_value(consistency['ari'])}, "
            f"NMI {format_value(consistency['nmi'])}, image/audio in the same cluster for "
            f"{format_value(consistency['cross_modal_agreement'])} of concepts"
        )
        echo(
            "per concept: the cluster holding most of its items (majority) and their share; the "
            "majority clusters of its images and of its audio, and whether they are the same"
        )
        echo("concept         items  majority  share  image  audio  same")
        for row in consistency["concepts"]:
            echo(
                f"{row['concept'][:15]:<15} {row['items']:>5}  {row['majority_cluster']:>8}  "
                f"{row['majority_share']:.2f}  {format_value(row['image_cluster']):>5}  "
                f"{format_value(row['audio_cluster']):>5}  {format_value(row['image_audio_same_cluster'])}"
            )
        _print_table(consistency["table"])


def _print_cross(cross: dict[str, Any], title: str) -> None:
    echo = typer.echo
    echo(f"{title}:")
    echo(
        f"  image-image {format_value(cross['image_image'])}, audio-audio {format_value(cross['audio_audio'])}, "
        f"image-audio {format_value(cross['image_audio'])}"
    )
    if "matched" in cross:
        echo(
            f"  matched concept pairs {format_value(cross['matched'])}, unmatched {format_value(cross['unmatched'])}, "
            f"gap {format_value(cross['gap'])}"
        )


def _print_table(table: dict[str, dict[str, int]]) -> None:
    """Print the concept-by-cluster counts, one row per concept."""
    clusters = list(table)
    concepts = sorted({concept for counts in table.values() for concept in counts})
    typer.echo("items per concept (rows) and cluster (columns):")
    typer.echo(f"{'':<15} " + " ".join(f"{c:>5}" for c in clusters))
    for concept in concepts:
        cells = " ".join(f"{table[c].get(concept, 0):>5}" for c in clusters)
        typer.echo(f"{concept[:15]:<15} {cells}")
