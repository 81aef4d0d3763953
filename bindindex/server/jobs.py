"""Background indexing jobs that ``POST /index`` starts and ``GET /jobs/{id}`` reports."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bindindex.errors import BindIndexError, IndexBusyError
from bindindex.index import Index
from bindindex.server.errors import error_code

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "succeeded", "failed"]


@dataclass
class Job:
    """One indexing run over the configured roots."""

    id: int
    roots: list[str]
    status: JobStatus = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    # IndexReport.as_dict() of a finished run.
    report: dict[str, Any] | None = None
    # {"code": ..., "message": ...} of a failed run.
    error: dict[str, str] | None = None
    # Files embedded by the model so far. Unchanged and reused files are not
    # embedded, so this is not a share of the files found.
    embedded: int = 0
    # New or changed files decoded (or rejected) so far, of those the scan found.
    files_done: int = 0
    files_total: int | None = None

    def count_embedded(self, n: int) -> None:
        self.embedded += n

    def update_progress(self, done: int, total: int) -> None:
        self.files_done, self.files_total = done, total

    def as_dict(self) -> dict[str, Any]:
        end = self.finished_at if self.finished_at is not None else time.time()
        return {
            "id": self.id,
            "kind": "index",
            "status": self.status,
            "roots": self.roots,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_s": None if self.started_at is None else end - self.started_at,
            "embedded": self.embedded,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "report": self.report,
            "error": self.error,
            "url": f"/jobs/{self.id}",
        }


class JobManager:
    """Run one indexing job at a time, each on its own thread with its own ``Index``.

    The job's ``Index.add_paths`` takes the index's write lock, so a job that
    starts while another process writes the index fails with the
    ``IndexBusyError`` message naming that process.
    """

    def __init__(self, open_writer: Callable[[Callable[[int], None]], Index]) -> None:
        """``open_writer(on_embedded)`` opens the job's ``Index``, reporting embedded files."""
        self._open_writer = open_writer
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, roots: Sequence[Path]) -> Job:
        """Queue an indexing run of ``roots`` and return its job at once.

        Raises IndexBusyError while a job of this service is still running.
        """
        with self._lock:
            for job in self._jobs.values():
                if job.status in ("queued", "running"):
                    raise IndexBusyError(
                        f"indexing job {job.id} of this service is still {job.status}; "
                        f"follow it at /jobs/{job.id} and start a new one when it has finished"
                    )
            job = Job(id=len(self._jobs) + 1, roots=[str(root) for root in roots])
            self._jobs[job.id] = job
        thread = threading.Thread(
            target=self._run, args=(job, list(roots)), name=f"bindindex-job-{job.id}", daemon=True
        )
        self._threads.append(thread)
        thread.start()
        return job

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def _run(self, job: Job, roots: list[Path]) -> None:
        job.status = "running"
        job.started_at = time.time()
        log.info("indexing job %d started on %s", job.id, ", ".join(job.roots))
        try:
            with self._open_writer(job.count_embedded) as index:
                report = index.add_paths(
                    roots, progress=False, on_progress=job.update_progress
                )
        except BindIndexError as exc:
            self._finish(job, error={"code": error_code(exc), "message": str(exc)})
            log.warning("indexing job %d failed: %s", job.id, exc)
            return
        except Exception as exc:
            # A bug, not bad input: keep the service up, report the job as failed.
            log.exception("indexing job %d failed with an unexpected error", job.id)
            message = f"unexpected error: {type(exc).__name__}: {exc}; see the service log"
            self._finish(job, error={"code": "internal_error", "message": message})
            return
        self._finish(job, report=report.as_dict())
        log.info(
            "indexing job %d finished: added %d, updated %d, removed %d, failed %d",
            job.id,
            report.added,
            report.updated,
            report.removed,
            report.failed,
        )

    def _finish(
        self,
        job: Job,
        *,
        report: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> None:
        with self._lock:
            job.report = report
            job.error = error
            job.finished_at = time.time()
            job.status = "failed" if error is not None else "succeeded"

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` for running jobs; a job that goes on is left to the OS."""
        for thread in self._threads:
            thread.join(timeout_s)
