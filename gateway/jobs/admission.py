"""What a submission must pass before it is accepted, and what it resolves to: the project and
its member, the cluster, partition and account, the resources and script. A submission and a
quote go through the same checks (JobService._accept, gateway.jobs.quoting), so a quote that
fits is a submission that is accepted, quota and job cap aside."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from consortium.authz import Principal, Scope, require
from consortium.errors import Conflict, NotFound, PermissionDenied
from consortium.models import ClusterIdentity, Member, Project, ProjectStatus
from consortium.texts import Sentence
from gateway.jobs import templates
from gateway.jobs.clusters import Cluster, Clusters
from gateway.jobs.config import JobsSettings
from gateway.jobs.errors import JobInputInvalid, TooManyActiveJobs
from gateway.jobs.models import ACTIVE_STATES, Job
from gateway.jobs.resolve import Resolved, resolve, resolve_rendered
from gateway.jobs.schemas import JobCreate, ResourcesIn
from quotas.rates import Amounts
from schedulers.config import PartitionConfig


def partition_errors(partition: PartitionConfig, res: ResourcesIn) -> list[dict[str, Any]]:
    """Each way the resources exceed the partition, as field-path errors."""
    name = partition.name
    checks: list[tuple[str, bool, str]] = [
        ("nodes", res.nodes > partition.max_nodes,
         Sentence("at most %(most)s node(s) on partition %(partition)s",
                  most=partition.max_nodes, partition=name)),
        ("ntasks", res.ntasks < res.nodes, Sentence("at least one task per node")),
        ("cpus_per_task", res.cpus > partition.max_cpus_per_job,
         Sentence("ntasks x cpus_per_task = %(cpus)s; partition %(partition)s allows at most "
                  "%(most)s CPUs per job", cpus=res.cpus, partition=name,
                  most=partition.max_cpus_per_job)),
        ("gpus", res.gpus > partition.max_gpus_per_job,
         Sentence("at most %(most)s GPU(s) per job on partition %(partition)s",
                  most=partition.max_gpus_per_job, partition=name)),
        ("mem_mb", res.mem_mb > partition.max_mem_mb_per_job,
         Sentence("at most %(most)s MiB per job on partition %(partition)s",
                  most=partition.max_mem_mb_per_job, partition=name)),
        ("time_limit_minutes", res.time_limit_minutes > partition.max_time_minutes,
         Sentence("at most %(most)s minutes on partition %(partition)s",
                  most=partition.max_time_minutes, partition=name)),
    ]
    return [{"loc": ["body", "resources", field], "msg": msg, "type": "less_than_equal"}
            for field, failed, msg in checks if failed]


def amounts_of(res: ResourcesIn, partition: PartitionConfig) -> Amounts:
    """What one task is priced on: its CPUs as the partition allocates them (whole cores)."""
    return Amounts(gpus=res.gpus, cpus=partition.allocated_cpus(res.cpus), mem_mb=res.mem_mb)


# Built once, with bind parameters: every submission runs them, and building a statement costs
# more than running it.
_PROJECT = select(Project, Member).join(Member, Member.id == Project.member_id)
_PROJECT_BY_ID = _PROJECT.where(Project.id == bindparam("project_id"))
_PROJECT_BY_SLUGS = _PROJECT.where(Member.slug == bindparam("member_slug"),
                                   Project.slug == bindparam("project_slug"))
# the member row locked by the same statement (see JobService._accept)
_LOCKED = {query: query.with_for_update(of=Member, key_share=True)
           for query in (_PROJECT_BY_ID, _PROJECT_BY_SLUGS)}
_ACCOUNT = (select(ClusterIdentity).where(ClusterIdentity.member_id == bindparam("member_id"),
                                          ClusterIdentity.cluster == bindparam("cluster")))
# an array counts as its tasks: each is a job to Slurm
_ACCOUNT_AND_ACTIVE_JOBS = _ACCOUNT.add_columns(
    select(func.coalesce(func.sum(Job.task_count), 0))
    .where(Job.member_id == bindparam("member_id"), Job.state.in_(list(ACTIVE_STATES)))
    .scalar_subquery())


def resolve_project(session: Session, principal: Principal, ref: int | str, *,
                    lock_member: bool = False) -> tuple[Project, Member]:
    """The project named by id or `member/project` and its member, if the principal may see
    the member; with `lock_member`, the member row locked by the same statement."""
    params: dict[str, int | str]
    if isinstance(ref, int):
        query, params = _PROJECT_BY_ID, {"project_id": ref}
    else:
        member_slug, _, project_slug = ref.partition("/")
        query, params = _PROJECT_BY_SLUGS, {"member_slug": member_slug,
                                            "project_slug": project_slug}
    found = session.execute(_LOCKED[query] if lock_member else query, params).first()
    if found is None:
        raise NotFound(f"no project {ref}")
    project, member = found
    try:
        require(principal, Scope.jobs_write, project.member_id)
    except NotFound:
        raise NotFound(f"no project {ref}") from None
    return project, member


def _missing_account(cluster: str) -> Conflict:
    return Conflict(f"this member has no account on cluster {cluster}; "
                    "ask a consortium administrator to add one")


def cluster_account(session: Session, member_id: int, cluster: str) -> ClusterIdentity:
    account = session.scalars(_ACCOUNT, {"member_id": member_id, "cluster": cluster}).first()
    if account is None:
        raise _missing_account(cluster)
    return account


def account_and_active_jobs(session: Session, member_id: int,
                            cluster: str) -> tuple[ClusterIdentity, int]:
    """The member's account on the cluster and its jobs not yet ended (array tasks counted),
    in one statement (read under the member's lock, so the count is that of the committed
    submissions)."""
    found = session.execute(_ACCOUNT_AND_ACTIVE_JOBS,
                            {"member_id": member_id, "cluster": cluster}).first()
    if found is None or found[0].removed_at is not None:  # a removed one keeps its old jobs
        raise _missing_account(cluster)
    account, count = found
    return account, int(count)


def resolved_request(session: Session, request: JobCreate, public_id: str
                     ) -> tuple[Resolved, str, int | None, int | None]:
    """The job's resources, name and output files, and its script: the request's own, or
    its template rendered (with the template's id and version)."""
    if request.template is None:
        script = request.script or ""
        return resolve(request, script), script, None, None
    template, version = templates.get_version(session, request.template,
                                              request.template_version)
    if not template.enabled:
        raise Conflict(f"template {template.slug} is disabled")
    values = templates.check_parameters(templates.parameter_specs(version),
                                        request.parameters or {})
    name = request.name or template.slug
    resolved, script = resolve_rendered(
        request, lambda resources: templates.render(
            version.body, version.files, values,
            templates.RenderTarget(public_id=public_id, name=name, resources=resources)),
        default_name=name)
    return resolved, script, template.id, version.version


@dataclass(frozen=True)
class Admitted:
    """A request that passed every check but the job cap and the quota."""

    project: Project
    member: Member
    cluster: Cluster
    resolved: Resolved
    script: str
    template_id: int | None
    template_version: int | None
    partition: PartitionConfig
    account: ClusterIdentity
    active_jobs: int  # the member's jobs not yet ended, array tasks counted


def admit(session: Session, clusters: Clusters, principal: Principal, request: JobCreate,
          public_id: str, *, lock_member: bool) -> Admitted:
    """The request checked and resolved; `lock_member` takes the member row's lock, which
    serialises a member's submissions (job cap)."""
    project, member = resolve_project(session, principal, request.project,
                                      lock_member=lock_member)
    if project.status != ProjectStatus.active:
        raise Conflict(f"project {project.slug} is {project.status}; it takes no new jobs")
    cluster = clusters.get(request.cluster)
    resolved, script, template_id, template_version = resolved_request(session, request,
                                                                       public_id)
    res = resolved.resources
    partition = cluster.config.partition(res.partition)
    if partition is None:
        names = ", ".join(p.name for p in cluster.config.partitions)
        raise JobInputInvalid.at(("resources", "partition"), Sentence(
            "no such partition on %(cluster)s; it has: %(names)s", cluster=cluster.name,
            names=names))
    errors = partition_errors(partition, res)
    if errors:
        raise JobInputInvalid(errors)
    account, active = account_and_active_jobs(session, member.id, cluster.name)
    if account.allowed_partitions is not None and partition.name not in (
            account.allowed_partitions):
        raise PermissionDenied(Sentence(
            "this member may not use partition %(partition)s on %(cluster)s; allowed: "
            "%(allowed)s", partition=partition.name, cluster=cluster.name,
            allowed=", ".join(account.allowed_partitions) or Sentence("none")))
    if member.templates_only and request.template is None:
        raise PermissionDenied(Sentence("this member may submit jobs from templates only "
                                        "(GET /api/v1/templates lists them)"))
    if res.array is not None and not cluster.scheduler.supports_arrays:
        raise JobInputInvalid.at(("resources", "array"), Sentence(
            "cluster %(cluster)s does not run job arrays", cluster=cluster.name))
    return Admitted(project, member, cluster, resolved, script, template_id, template_version,
                    partition, account, active)


def over_job_cap(admitted: Admitted, settings: JobsSettings) -> TooManyActiveJobs | None:
    """The refusal of a member whose jobs not yet ended would pass its cap with this one."""
    tasks = admitted.resolved.resources.tasks
    cap = admitted.member.max_active_jobs or settings.max_active_jobs_per_member
    if admitted.active_jobs + tasks <= cap:
        return None
    if admitted.resolved.resources.array is None:
        detail = Sentence("this member has %(active)s jobs not yet ended (array tasks counted), "
                          "its cap is %(cap)s; wait for some to end or cancel some",
                          active=admitted.active_jobs, cap=cap)
    else:
        detail = Sentence("this member has %(active)s jobs not yet ended (array tasks counted); "
                          "this array adds %(tasks)s, its cap is %(cap)s; wait for some to end "
                          "or cancel some", active=admitted.active_jobs, tasks=tasks, cap=cap)
    return TooManyActiveJobs(detail, cap=cap)
