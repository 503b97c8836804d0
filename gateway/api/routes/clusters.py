"""The configured clusters: partitions with their limits and rates, and their health as each
cluster's tracker last recorded it (no SSH per request: gateway.jobs.cluster_status)."""

from __future__ import annotations

from fastapi import APIRouter

from consortium.authz import require_admin
from consortium.errors import NotFound
from gateway.api.deps import Caller, DatabaseDep, ReaderDep, SchedulersDep, SettingsDep
from gateway.api.errors import problems
from gateway.jobs.cluster_status import ClusterView, cluster_view, cluster_views
from gateway.provisioning import Provisioned, provision

router = APIRouter(tags=["clusters"])


@router.get("/clusters", operation_id="clusters-list", response_model=list[ClusterView],
            responses=problems(401))
async def list_clusters(*, reader: ReaderDep, settings: SettingsDep,
                        principal: Caller) -> list[ClusterView]:
    """Every cluster of this gateway, in configuration order."""
    return await reader(lambda session: cluster_views(session, settings.clusters))


@router.get("/clusters/{cluster}", operation_id="clusters-get", response_model=ClusterView,
            responses=problems(401, 404))
async def get_cluster(*, cluster: str, reader: ReaderDep, settings: SettingsDep,
                      principal: Caller) -> ClusterView:
    return await reader(lambda session: cluster_view(session, settings.clusters, cluster))


@router.post("/clusters/{cluster}/sync", operation_id="clusters-sync",
             response_model=list[Provisioned], responses=problems(401, 403, 404))
async def sync_cluster(*, cluster: str, database: DatabaseDep,
                       settings: SettingsDep, schedulers: SchedulersDep,
                       principal: Caller) -> list[Provisioned]:
    """Apply the cluster's pending identity changes now, rather than at its tracker's next
    turn (admins): what each identity's provisioning did."""
    require_admin(principal)
    if settings.cluster(cluster) is None:
        raise NotFound(f"no cluster '{cluster}'")
    return await provision(database, settings, schedulers, cluster=cluster)
