"""Exceptions raised by the bindindex library.

The library never prints or exits: it raises one of these, and the CLI maps
them to messages and exit codes (1 for runtime errors, 2 for usage errors).
"""

from __future__ import annotations

from pathlib import Path


class BindIndexError(Exception):
    """Base class of every error that bindindex raises on purpose."""


class UsageError(BindIndexError):
    """A request that cannot be served as given: a bad option value, an unknown id."""


class MediaError(BindIndexError):
    """A file that cannot be turned into model input.

    ``reason`` is a stable machine-readable code that the catalog stores, such
    as ``empty``, ``truncated``, ``undecodable``, ``unsupported_format``,
    ``too_many_pixels``, ``non_finite``, ``unreadable`` or ``vanished``.
    ``detail`` is the decoder's own message.
    """

    def __init__(self, path: str | Path, reason: str, detail: str) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail}")


class ModelError(BindIndexError):
    """The model cannot be built or run: unknown name, bad precision, bad device."""


class WeightsError(ModelError):
    """A checkpoint is missing, cannot be downloaded, or does not fit the architecture."""


class IndexStateError(BindIndexError):
    """The index on disk cannot be used as requested."""


class ModelMismatchError(IndexStateError):
    """Vectors from one model were about to be mixed with vectors from another."""


class NotFoundError(UsageError):
    """An item id, cluster run or file that the request names does not exist."""


class IndexBusyError(IndexStateError):
    """Another process holds the index's write lock."""
