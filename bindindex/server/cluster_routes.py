"""``/clusters``: stored K-Means runs with their clusters, and ``POST /cluster`` to run one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from bindindex.server.deps import ServiceDep
from bindindex.server.service import Service
from bindindex.server.views import run_detail, run_summary
from bindindex.store.catalog import ItemRow

router = APIRouter(tags=["clusters"])


class ClusterIn(BaseModel):
    """Parameters of a K-Means run over every stored vector."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(8, ge=1, le=10_000, description="Number of clusters.")
    auto_k: tuple[int, int] | None = Field(
        None,
        description="[MIN, MAX]: try every k in the range and keep the best by silhouette; "
        "replaces k.",
    )
    labels: Literal["top-folder"] | None = Field(
        None,
        description="Ground-truth concepts for purity, ARI and NMI: 'top-folder' takes the "
        "first folder below the indexed root. A CSV file of labels is a CLI option only, "
        "because the service takes no file path from a request.",
    )
    center: bool = Field(False, description="Centre each modality on its mean first.")
    names: bool = Field(
        False, description="Name each cluster with the model's text encoder (loads the model)."
    )
    seed: int = Field(0, description="Random seed of K-Means.")
    niter: int = Field(20, ge=1, le=1000, description="K-Means iterations.")


@router.get("/clusters")
async def list_clusters(service: ServiceDep) -> dict[str, Any]:
    """List the stored K-Means runs, oldest first, with k, silhouette and drift."""
    runs = await service.call(service.index.cluster_runs)
    return {"runs": [run_summary(run) for run in runs]}


@router.get("/clusters/{run_id}")
async def get_cluster_run(
    run_id: int,
    service: ServiceDep,
    members: Annotated[
        int | None,
        Query(ge=0, description="List at most this many members per cluster, nearest first."),
    ] = None,
) -> dict[str, Any]:
    """Return one run: measures, drift, and each cluster's stable id, label, sizes and members."""
    return await service.call(_load_run, service, run_id, members)


@router.post("/cluster", status_code=201)
async def run_cluster(request: ClusterIn, service: ServiceDep) -> dict[str, Any]:
    """Run K-Means over every stored vector, store the run and return it with its clusters."""
    run = await service.call(
        service.index.cluster,
        request.k,
        auto_k=request.auto_k,
        labels=request.labels,
        seed=request.seed,
        niter=request.niter,
        center=request.center,
        names=request.names,
    )
    return await service.call(_load_run, service, run.id)


def _load_run(service: Service, run_id: int, max_members: int | None = None) -> dict[str, Any]:
    index = service.index
    run = index.cluster_run(run_id, members=True)
    ids = [m["item_id"] for cluster in run["clusters"] for m in cluster["members"]]
    items: dict[int, ItemRow] = index.catalog.items_by_ids(ids)
    return run_detail(run, items, max_members)
