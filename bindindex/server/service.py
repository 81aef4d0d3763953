"""The state that one service process keeps: the open index, the warm model and its worker."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bindindex.index import Index
from bindindex.server.jobs import JobManager
from bindindex.server.thumbnails import ThumbnailCache

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
THUMBNAIL_FOLDER = "thumbnails"


@dataclass(frozen=True)
class ServerSettings:
    """Options of one ``bindindex serve`` process."""

    index: Path
    model: str | None = None
    checkpoint: Path | None = None
    precision: str = "fp32"
    # Folders that POST /index indexes again; empty means the roots the catalog records.
    roots: tuple[Path, ...] = ()
    # Required on every request but GET /health when set.
    token: str | None = None
    # Limit on the size of any request body, uploads included, in bytes.
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    # Maximum width and height of a thumbnail, in pixels.
    thumbnail_size: int = 256


class SharedEncoder:
    """A proxy that lets a second ``Index`` use the service's one encoder under its lock.

    The encoder is built on first use by ``factory``. Each embed call acquires
    ``lock`` for one batch, so an indexing job and search requests take turns on
    the weights instead of running on them at the same time.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        lock: threading.RLock,
        on_embedded: Callable[[int], None] | None = None,
    ) -> None:
        self._factory = factory
        self._lock = lock
        # Called with the batch size after each image or audio batch, for job progress.
        self._on_embedded = on_embedded

    def _encoder(self) -> Any:
        with self._lock:
            return self._factory()

    def embed_images(self, images: Any) -> Any:
        with self._lock:
            vectors = self._factory().embed_images(images)
        self._count(len(images))
        return vectors

    def embed_audio(self, clips: Any) -> Any:
        with self._lock:
            vectors = self._factory().embed_audio(clips)
        self._count(len(clips))
        return vectors

    def embed_tokens(self, tokens: Any) -> Any:
        with self._lock:
            return self._factory().embed_tokens(tokens)

    def _count(self, n: int) -> None:
        if self._on_embedded is not None:
            self._on_embedded(n)

    def __getattr__(self, name: str) -> Any:
        # model_id, dim, precision_note and the other attributes that Index and
        # the ingest run read; reading model_id may resolve the checkpoint.
        return getattr(self._encoder(), name)


class Service:
    """One open index, served by a single worker thread.

    The worker owns the index's SQLite connection and the model, so every call
    that reads the index or embeds a query goes through :meth:`call` and runs
    after the calls queued before it. Indexing jobs run on a thread of their
    own with a second ``Index`` and reach the model through ``SharedEncoder``.
    """

    def __init__(self, settings: ServerSettings, index: Index) -> None:
        self.settings = settings
        self.index = index
        self.model_lock = threading.RLock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bindindex-worker")
        self.jobs = JobManager(self._open_writer)
        self.thumbnails = ThumbnailCache(
            index.path / THUMBNAIL_FOLDER, size=settings.thumbnail_size
        )

    @classmethod
    def open(cls, settings: ServerSettings) -> Service:
        """Open the configured index; create it only when there are roots to fill it from."""
        index = Index.open(
            settings.index,
            model=settings.model,
            checkpoint=settings.checkpoint,
            precision=settings.precision,
            create=bool(settings.roots),
        )
        return cls(settings, index)

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function`` on the worker thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._worker, functools.partial(function, *args, **kwargs)
        )

    def with_model(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function`` on the calling thread while holding the model lock."""
        with self.model_lock:
            return function(*args, **kwargs)

    def _open_writer(self, on_embedded: Callable[[int], None]) -> Index:
        settings = self.settings
        return Index.open(
            settings.index,
            model=settings.model,
            checkpoint=settings.checkpoint,
            precision=settings.precision,
            encoder=SharedEncoder(lambda: self.index.encoder, self.model_lock, on_embedded),
        )

    def close(self) -> None:
        self.jobs.close()
        self._worker.shutdown(wait=True)
        self.index.close()
        log.info("closed index %s", self.index.path)
