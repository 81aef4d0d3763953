"""bindindex: a semantic index of images and audio in ImageBind's joint embedding space.

The public names are imported on first use, so that ``import bindindex`` and
``bindindex --help`` do not pay for importing torch and FAISS.
"""

from __future__ import annotations

import importlib
from typing import Any

from bindindex.errors import (
    BindIndexError,
    IndexBusyError,
    IndexStateError,
    MediaError,
    ModelError,
    ModelMismatchError,
    NotFoundError,
    UsageError,
    WeightsError,
)

__version__ = "0.1.0"

_LAZY = {
    "Index": "bindindex.index",
    "ClusterRun": "bindindex.cluster.runs",
    "IndexReport": "bindindex.ingest",
    "Hit": "bindindex.search",
    "QueryTerm": "bindindex.search",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bindindex' has no attribute {name!r}")


__all__ = [
    "BindIndexError",
    "ClusterRun",
    "Hit",
    "Index",
    "IndexBusyError",
    "IndexReport",
    "IndexStateError",
    "MediaError",
    "ModelError",
    "ModelMismatchError",
    "NotFoundError",
    "QueryTerm",
    "UsageError",
    "WeightsError",
    "__version__",
]
