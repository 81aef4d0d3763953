"""Options, output helpers and error handling shared by every command."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import platformdirs
import typer

from bindindex.errors import BindIndexError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


def data_home() -> Path:
    """Return the folder for bindindex's own data, which ``BINDINDEX_HOME`` moves."""
    override = os.environ.get("BINDINDEX_HOME")
    return Path(override) if override else Path(platformdirs.user_data_dir("bindindex"))


def default_index() -> Path:
    return data_home() / "index"


IndexOpt = Annotated[
    Path | None,
    typer.Option(
        "--index",
        envvar="BINDINDEX_INDEX",
        help="Index folder (created on first use). Default: <data home>/index, where the data "
        "home is BINDINDEX_HOME or the platform's user data folder.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        envvar="BINDINDEX_MODEL",
        help="Model name: imagebind-huge (official weights, downloaded once) or imagebind-test "
        "(tiny random weights for tests and offline demos; its results mean nothing). Default: "
        "the model the index was built with, else imagebind-huge.",
        show_default=False,
    ),
]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        envvar="BINDINDEX_CHECKPOINT",
        help="Local imagebind_huge.pth to use instead of the downloaded one.",
        show_default=False,
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        envvar="BINDINDEX_PRECISION",
        help="Numeric precision of the model: fp32, bf16, or auto (bf16 only where the "
        "CPU or GPU computes it natively, else fp32).",
    ),
]


def resolve_index(index: Path | None) -> Path:
    return index if index is not None else default_index()


def emit_json(value: Any) -> None:
    """Write ``value`` as JSON on stdout."""
    typer.echo(json.dumps(value, indent=2, default=str))


def emit_line(value: Any) -> None:
    typer.echo(json.dumps(value, default=str))


def warn(message: str) -> None:
    typer.echo(message, err=True)


def handle_errors(command: F) -> F:
    """Turn library errors into a message on stderr and exit code 2 (usage) or 1 (runtime)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UsageError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        except BindIndexError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        except KeyboardInterrupt as exc:
            typer.echo("interrupted; everything committed before this point is kept", err=True)
            raise typer.Exit(130) from exc

    return wrapper  # type: ignore[return-value]


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
