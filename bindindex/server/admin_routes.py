"""Health probe, index information, and background indexing jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from bindindex.errors import NotFoundError, UsageError
from bindindex.server.deps import ServiceDep
from bindindex.server.service import Service

router = APIRouter(tags=["service"])


@router.get("/health")
async def health(service: ServiceDep) -> dict[str, Any]:
    """Return 200 while the process serves requests; needs no token."""
    return {"status": "ok"}


@router.get("/info")
async def info(service: ServiceDep) -> dict[str, Any]:
    """Return the index's model, item counts by status and modality, and vector count."""
    details = await service.call(_read_info, service)
    return {**details, "roots": [str(root) for root in service.settings.roots]}


def _read_info(service: Service) -> dict[str, Any]:
    service.index.refresh()
    return service.index.info()


@router.post("/index", status_code=202)
async def start_indexing(response: Response, service: ServiceDep) -> dict[str, Any]:
    """Start indexing the configured folders again in the background; follow it at the job URL.

    The folders are the service's --root options, or else every folder that
    the index's items were found under. Returns 409 while another job of this
    service runs.
    """
    roots = list(service.settings.roots) or await service.call(service.index.roots)
    if not roots:
        raise UsageError(
            "no folders to index: the index is empty and the service was started without "
            "--root; restart it with --root FOLDER"
        )
    job = service.jobs.start(roots)
    response.headers["location"] = f"/jobs/{job.id}"
    return job.as_dict()


@router.get("/jobs")
async def list_jobs(service: ServiceDep) -> dict[str, Any]:
    """List the indexing jobs of this process, oldest first."""
    return {"jobs": [job.as_dict() for job in service.jobs.all()]}


@router.get("/jobs/{job_id}")
async def get_job(job_id: int, service: ServiceDep) -> dict[str, Any]:
    """Return a job's status (queued, running, succeeded, failed), elapsed time and report."""
    job = service.jobs.get(job_id)
    if job is None:
        raise NotFoundError(
            f"job {job_id} not found; this process has started {len(service.jobs.all())} jobs"
        )
    return job.as_dict()
