"""``bindindex search``."""

from __future__ import annotations

from typing import Annotated

import typer

from bindindex.cli.common import (
    CheckpointOpt,
    IndexOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    emit_json,
    emit_line,
    handle_errors,
    resolve_index,
    warn,
)


@handle_errors
def search_command(
    audio: Annotated[
        list[str] | None, typer.Option("--audio", help="Audio file as a query.")
    ] = None,
    image: Annotated[
        list[str] | None, typer.Option("--image", help="Image file as a query.")
    ] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="Text as a query.")] = None,
    item: Annotated[
        list[str] | None, typer.Option("--item", help="Stored item id as a query.")
    ] = None,
    weight: Annotated[
        list[float] | None,
        typer.Option(
            "--weight",
            help="Weight of each query term, one per term, in the order --audio, --image, "
            "--text, --item. Default 1 each. Negative weights subtract a concept.",
        ),
    ] = None,
    modality: Annotated[
        str,
        typer.Option(
            "--modality", help="Return only items of this modality: image, audio, text or any."
        ),
    ] = "any",
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
    center: Annotated[
        bool,
        typer.Option(
            "--center",
            help="Subtract each modality's mean vector from the stored items and the query terms "
            "before scoring (exact search over every item), as 'cluster --center' does.",
        ),
    ] = False,
    index: IndexOpt = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    precision: PrecisionOpt = "fp32",
    json_output: JsonOpt = False,
) -> None:
    """Find the stored items nearest to a query, across modalities.

    Several query terms combine as the normalised weighted sum of their unit
    vectors. Prints one JSON object per hit (id, path, modality, score), where
    score is the cosine similarity; with --json, one JSON array.

    Example: bindindex search --audio bark.wav --modality image -k 3
    """
    from bindindex.index import Index
    from bindindex.search import build_terms

    if modality == "text":
        warn("note: 'bindindex index' stores only images and audio, so no item has modality text")
    terms = build_terms(audio or (), image or (), text or (), item or (), weight or ())
    with Index.open(
        resolve_index(index), model=model, checkpoint=checkpoint, precision=precision, create=False
    ) as idx:
        hits = idx.search(terms, modality=modality, k=k, center=center)
    if json_output:
        emit_json([hit.as_dict() for hit in hits])
        return
    for hit in hits:
        emit_line(hit.as_dict())
