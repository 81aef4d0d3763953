"""Bring the catalog in line with the files on disk: embed new and changed files.

Decoding runs in a thread pool a few batches ahead of the model, so the
model rarely waits for Pillow or libsndfile. Every batch is committed in its
own transaction, so an interrupted run keeps everything committed before it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from bindindex.errors import MediaError
from bindindex.media import MEDIA_EXTENSIONS, extension_modality, sniff
from bindindex.media.detect import EMPTY_FILE_DETAIL
from bindindex.media.image import DEFAULT_MAX_PIXELS, load_image
from bindindex.scan import ScannedFile, ScanProblem, ScanResult
from bindindex.store.catalog import Catalog, ItemRow
from bindindex.store.vectors import VectorIndex, normalise

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """A file that was not indexed, with a stable reason code and the decoder's message."""

    path: str
    reason: str
    detail: str


@dataclass
class IndexReport:
    """Counts of what one ``index`` run did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    moved: int = 0
    ignored: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    # Set when the run embedded anything, so the caller can say which model
    # and precision produced the new vectors.
    model_id: str | None = None
    precision_note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": self.failed,
            "moved": self.moved,
            "ignored": self.ignored,
            "seconds": round(self.seconds, 3),
            "model_id": self.model_id,
            "precision": self.precision_note,
            "failures": [f.__dict__ for f in self.failures],
        }


@dataclass
class _Prepared:
    """A file after the worker has read it: either model input, a reused vector or an error."""

    file: ScannedFile
    existing: ItemRow | None
    modality: str | None = None
    format: str | None = None
    content_hash: str | None = None
    tensor: torch.Tensor | None = None
    flags: tuple[str, ...] = ()
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    reuse: ItemRow | None = None
    error: MediaError | None = None
    ignore: bool = False


def path_bytes(path: Path) -> bytes:
    return os.fsencode(path)


def display_path(path: Path) -> str:
    """Path text for output; bytes that are not UTF-8 appear as backslash escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def hash_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


class Ingest:
    """One indexing run over a scan result."""

    def __init__(
        self,
        catalog: Catalog,
        vectors: Callable[[], VectorIndex],
        encoder_factory: Callable[[], Any],
        check_model: Callable[[Any], None],
        record_model: Callable[[sqlite3.Connection, Any], None],
        *,
        batch_size: int = 8,
        workers: int | None = None,
        retry_failed: bool = False,
        progress: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        on_progress: Callable[[int, int], None] | None = None,
    ):
        self.catalog = catalog
        self.vectors = vectors
        self.encoder_factory = encoder_factory
        self.check_model = check_model
        self.record_model = record_model
        self.batch_size = max(1, batch_size)
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.retry_failed = retry_failed
        self.max_pixels = max_pixels
        self.progress = progress
        self.on_progress = on_progress
        self.report = IndexReport()
        self._encoder: Any = None

    # -- planning ---------------------------------------------------------------

    def run(self, scan: ScanResult) -> IndexReport:
        started = time.monotonic()
        seen = {path_bytes(f.path) for f in scan.files}
        todo: list[tuple[ScannedFile, ItemRow | None]] = []
        # One query for every row, so a re-run over many unchanged files does not
        # make one SQLite round trip per file.
        known = {item.path_bytes: item for item in self.catalog.items()}
        for scanned in scan.files:
            existing = known.get(path_bytes(scanned.path))
            if existing is not None and self._is_unchanged(existing, scanned):
                self.report.unchanged += 1
                continue
            todo.append((scanned, existing))

        # An indexed item whose file is gone may have moved to a new path in this
        # scan. A worker that finds the same content there reuses its vector.
        candidates: dict[str, ItemRow] = {}
        for item in known.values():
            if item.status != "indexed":
                continue
            if item.path_bytes not in seen and item.content_hash and not item.fs_path.exists():
                candidates.setdefault(item.content_hash, item)
        self._move_candidates = candidates
        self._moved_from: set[bytes] = set()

        self._record_problems(scan.problems)
        self._process(todo)
        self._remove_missing(scan, seen)
        self.report.seconds = time.monotonic() - started
        return self.report

    def _is_unchanged(self, item: ItemRow, scanned: ScannedFile) -> bool:
        if item.size != scanned.size or item.mtime_ns != scanned.mtime_ns:
            return False
        if item.status == "pending":
            return False
        if item.status == "indexed":
            return True
        return not self.retry_failed

    # -- decoding (worker threads) ---------------------------------------------

    def _prepare(self, scanned: ScannedFile, existing: ItemRow | None) -> _Prepared:
        prepared = _Prepared(file=scanned, existing=existing)
        path = scanned.path
        try:
            if scanned.size == 0:
                raise MediaError(path, "undecodable", EMPTY_FILE_DETAIL)
            detected = sniff(path)
            prepared.modality = detected.modality
            prepared.format = detected.format
            if detected.modality is None:
                if path.suffix.lower() not in MEDIA_EXTENSIONS and existing is None:
                    prepared.ignore = True
                    return prepared
                claimed = {"image": "an image", "audio": "an audio"}.get(
                    extension_modality(path) or "", "a media"
                )
                raise MediaError(
                    path, "undecodable", f"not {claimed} file: content is {detected.describe()}"
                )
            prepared.content_hash = hash_file(path)
            unchanged_content = (
                existing is not None
                and existing.status == "indexed"
                and existing.content_hash == prepared.content_hash
            )
            if unchanged_content:
                prepared.reuse = existing
                return prepared
            candidate = self._move_candidates.get(prepared.content_hash)
            if candidate is not None and candidate.modality == detected.modality:
                prepared.reuse = candidate
                return prepared
            if detected.modality == "image":
                image = load_image(path, max_pixels=self.max_pixels)
                prepared.tensor = image.pixels
                prepared.flags = tuple(image.flags)
                prepared.width, prepared.height = image.width, image.height
            else:
                from bindindex.media.audio import load_audio  # loads torch, on first use only

                audio = load_audio(path)
                prepared.tensor = audio.clips
                prepared.flags = tuple(audio.flags)
                prepared.duration_s = audio.duration_s
        except MediaError as exc:
            prepared.error = exc
        except FileNotFoundError as exc:
            prepared.error = MediaError(
                path, "vanished", f"file disappeared before decoding: {exc}"
            )
        except IsADirectoryError:
            prepared.error = MediaError(
                path, "vanished", "the file was replaced by a folder before decoding"
            )
        except OSError as exc:
            prepared.error = MediaError(path, "unreadable", str(exc))
        return prepared

    def _prepared_stream(
        self, todo: list[tuple[ScannedFile, ItemRow | None]]
    ) -> Iterator[_Prepared]:
        """Yield prepared files in scan order, decoding a bounded window ahead."""
        window = max(2 * self.batch_size, 2 * self.workers)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[_Prepared]] = deque()
            for scanned, existing in todo:
                pending.append(pool.submit(self._prepare, scanned, existing))
                if len(pending) >= window:
                    yield pending.popleft().result()
            for future in pending:
                yield future.result()

    # -- committing -------------------------------------------------------------

    def _process(self, todo: list[tuple[ScannedFile, ItemRow | None]]) -> None:
        batches: dict[str, list[_Prepared]] = {"image": [], "audio": []}
        bar = tqdm(
            total=len(todo),
            unit="file",
            desc="indexing",
            file=sys.stderr,
            disable=not self.progress,
        )
        try:
            for done, prepared in enumerate(self._prepared_stream(todo), start=1):
                bar.update(1)
                if self.on_progress is not None:
                    self.on_progress(done, len(todo))
                if prepared.ignore:
                    self.report.ignored += 1
                elif prepared.error is not None:
                    self._commit_failures([prepared])
                elif prepared.reuse is not None:
                    self._commit_reuse(prepared)
                else:
                    assert prepared.modality is not None
                    batch = batches[prepared.modality]
                    batch.append(prepared)
                    if len(batch) >= self.batch_size:
                        self._embed_and_commit(batch)
                        batch.clear()
            for batch in batches.values():
                if batch:
                    self._embed_and_commit(batch)
        finally:
            bar.close()

    def _encoder_ready(self) -> Any:
        if self._encoder is None:
            encoder = self.encoder_factory()
            self.check_model(encoder)
            self._encoder = encoder
            self.report.model_id = encoder.model_id
            self.report.precision_note = encoder.precision_note
        return self._encoder

    def _embed_and_commit(self, batch: list[_Prepared]) -> None:
        import torch

        encoder = self._encoder_ready()
        modality = batch[0].modality
        stacked = torch.stack([p.tensor for p in batch])  # type: ignore[misc]
        embed = encoder.embed_images if modality == "image" else encoder.embed_audio
        raw = np.asarray(embed(stacked), dtype=np.float32)  # (B, dim)

        good: list[tuple[_Prepared, np.ndarray]] = []
        bad: list[_Prepared] = []
        for prepared, vector in zip(batch, raw, strict=True):
            if np.isfinite(vector).all() and float(np.linalg.norm(vector)) > 0.0:
                good.append((prepared, vector))
            else:
                prepared.error = MediaError(
                    prepared.file.path,
                    "non_finite",
                    "the model returned a non-finite or zero vector; if most files fail "
                    "this way, the model's weights are likely damaged: check the "
                    "checkpoint's SHA-256 or download it again",
                )
                bad.append(prepared)

        now = time.time()
        ids: list[int] = []
        with self.catalog.transaction() as conn:
            if good:
                self.record_model(conn, encoder)
            for prepared, vector in good:
                values = self._row_values(prepared, now)
                values.update(
                    status="indexed",
                    reason=None,
                    detail=None,
                    model_id=encoder.model_id,
                    precision=encoder.precision,
                )
                item_id = self.catalog.upsert_item(conn, values)
                self.catalog.put_vector(conn, item_id, vector)
                ids.append(item_id)
                if prepared.existing is None:
                    self.report.added += 1
                else:
                    self.report.updated += 1
            self.catalog.bump_generation(conn)
        if ids:
            self.vectors().add(
                np.array(ids, dtype=np.int64), normalise(np.stack([v for _, v in good]))
            )
        if bad:
            self._commit_failures(bad)

    def _row_values(self, prepared: _Prepared, now: float) -> dict[str, Any]:
        scanned = prepared.file
        return {
            "path": display_path(scanned.path),
            "path_bytes": path_bytes(scanned.path),
            "root": display_path(scanned.root),
            "modality": prepared.modality,
            "format": prepared.format,
            "size": scanned.size,
            "mtime_ns": scanned.mtime_ns,
            "content_hash": prepared.content_hash,
            "flags": prepared.flags,
            "duration_s": prepared.duration_s,
            "width": prepared.width,
            "height": prepared.height,
            "indexed_at": now,
        }

    def _commit_failures(self, failed: list[_Prepared]) -> None:
        now = time.time()
        removed_vectors: list[int] = []
        with self.catalog.transaction() as conn:
            for prepared in failed:
                error = prepared.error
                assert error is not None
                values = self._row_values(prepared, now)
                values.update(
                    status="failed",
                    reason=error.reason,
                    detail=error.detail,
                    model_id=None,
                    precision=None,
                    flags=(),
                )
                item_id = self.catalog.upsert_item(conn, values)
                if prepared.existing is not None and prepared.existing.status == "indexed":
                    # The file changed into something that cannot be decoded: its
                    # old vector describes content that no longer exists.
                    self.catalog.delete_vector(conn, item_id)
                    removed_vectors.append(item_id)
                self.report.failed += 1
                self.report.failures.append(Failure(values["path"], error.reason, error.detail))
                log.info("failed %s: %s: %s", values["path"], error.reason, error.detail)
            if removed_vectors:
                self.catalog.bump_generation(conn)
        if removed_vectors:
            self.vectors().remove(np.array(removed_vectors, dtype=np.int64))

    def _commit_reuse(self, prepared: _Prepared) -> None:
        reuse = prepared.reuse
        assert reuse is not None
        scanned = prepared.file
        with self.catalog.transaction() as conn:
            if reuse.path_bytes == path_bytes(scanned.path):
                # Same content under the same path: only the timestamp changed.
                self.catalog.touch_item(conn, reuse.id, scanned.size, scanned.mtime_ns)
                self.report.unchanged += 1
                return
            if prepared.existing is not None:
                # The new path had a row of its own, for example a failed file that
                # a moved one replaced. The moved item takes its place.
                self.catalog.delete_items(conn, [prepared.existing.id])
            self.catalog.move_item(conn, reuse.id, self._row_values(prepared, time.time()))
            self.catalog.bump_generation(conn)
        self._move_candidates.pop(reuse.content_hash or "", None)
        self._moved_from.add(reuse.path_bytes)
        self.report.moved += 1
        log.info("moved item %d: %s -> %s", reuse.id, reuse.path, display_path(scanned.path))

    def _record_problems(self, problems: list[ScanProblem]) -> None:
        if not problems:
            return
        now = time.time()
        dropped: list[int] = []
        with self.catalog.transaction() as conn:
            for problem in problems:
                if problem.reason == "vanished":
                    continue
                existing = self.catalog.item_by_path(path_bytes(problem.path))
                if problem.reason != "broken_link" and existing is not None:
                    # An indexed file that cannot be read this time (permissions,
                    # a dropped network drive) keeps its item and vector.
                    self.report.failed += 1
                    self.report.failures.append(
                        Failure(existing.path, problem.reason, problem.detail)
                    )
                    continue
                values = {
                    "path": display_path(problem.path),
                    "path_bytes": path_bytes(problem.path),
                    "root": display_path(problem.root),
                    "modality": None,
                    "format": None,
                    "size": 0,
                    "mtime_ns": 0,
                    "content_hash": None,
                    "status": "failed",
                    "reason": problem.reason,
                    "detail": problem.detail,
                    "flags": (),
                    "indexed_at": now,
                }
                item_id = self.catalog.upsert_item(conn, values)
                if existing is not None and existing.status == "indexed":
                    # The file was replaced by a link that leads nowhere: its
                    # vector describes content that can no longer be opened.
                    self.catalog.delete_vector(conn, item_id)
                    dropped.append(item_id)
                self.report.failed += 1
                self.report.failures.append(Failure(values["path"], problem.reason, problem.detail))
                log.info("failed %s: %s: %s", values["path"], problem.reason, problem.detail)
            if dropped:
                self.catalog.bump_generation(conn)
        if dropped:
            self.vectors().remove(np.array(dropped, dtype=np.int64))

    def _remove_missing(self, scan: ScanResult, seen: set[bytes]) -> None:
        """Delete rows of files that were under a scanned folder and are gone now."""
        problem_paths = {path_bytes(p.path) for p in scan.problems if p.reason != "vanished"}
        prefixes = [path_bytes(root).rstrip(b"/") + b"/" for root in scan.complete_roots]
        vanished_roots = {path_bytes(p.path) for p in scan.problems if p.reason == "vanished"}
        # A folder that could not be listed this time (permissions, a network
        # drive that dropped) keeps its items until it can be read again.
        unreadable = tuple(p.rstrip(b"/") + b"/" for p in problem_paths)
        missing: list[ItemRow] = []
        for item in self.catalog.items():
            if item.path_bytes in seen or item.path_bytes in problem_paths:
                continue
            if unreadable and item.path_bytes.startswith(unreadable):
                continue
            if item.path_bytes in self._moved_from:
                continue
            under_root = any(item.path_bytes.startswith(prefix) for prefix in prefixes)
            if under_root or item.path_bytes in vanished_roots:
                missing.append(item)
        if not missing:
            return
        ids = [item.id for item in missing]
        with self.catalog.transaction() as conn:
            self.catalog.delete_items(conn, ids)
            self.catalog.bump_generation(conn)
        self.vectors().remove(np.array(ids, dtype=np.int64))
        self.report.removed += len(missing)
        for item in missing:
            log.info("removed item %d: %s no longer exists", item.id, item.path)
