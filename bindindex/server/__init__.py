"""The HTTP service and web page of ``bindindex serve``.

The routes only parse requests, call :class:`bindindex.index.Index` and format
JSON. Everything that touches the model or the index's SQLite connection runs
on one worker thread, so requests never use the weights in parallel.
"""

from __future__ import annotations

from bindindex.server.app import create_app
from bindindex.server.service import ServerSettings, Service

__all__ = ["ServerSettings", "Service", "create_app"]
