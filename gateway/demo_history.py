"""The demo's past: a few weeks of finished jobs per member, so that a first visit to the
dashboard shows real curves, breakdowns and alerts rather than empty ones.

Each past job goes the way a real one goes, back-dated: its hold and settlement through the
quotas' service (at the times the job was submitted and ended), its states through the job
transitions, each dated like the job. Seeded once, on a member without jobs; drawn from a fixed
seed, so every demo tells the same story.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

import quotas.service as quotas
from consortium.models import Member, Project, User
from gateway.footprint import settle as footprint
from gateway.jobs.models import Job, JobState
from gateway.jobs.submission import marker_for, new_public_id
from gateway.jobs.transitions import first_event, transition
from quotas.rates import Amounts
from schedulers.config import ClusterConfig, PartitionConfig

HISTORY = timedelta(days=28)
# GPU-hours a day each member's researchers burn on average (the demo's three profiles: a
# member well ahead of its straight-line pace, one a little ahead, one within it)
DAILY_GPU_HOURS = {"3m": 6.0, "lirmm-ai": 6.0, "occitanie-robotics": 2.0}
# (no node failure: its automatic refund would be dated today, not the job's day)
ENDINGS = ((JobState.completed, 0.8), (JobState.failed, 0.12), (JobState.timeout, 0.08))
SCRIPT = "#!/bin/bash\nsrun python train.py\n"


def _ending(rng: random.Random) -> JobState:
    return rng.choices([s for s, _ in ENDINGS], [w for _, w in ENDINGS])[0]


def seed_history(session: Session, member: Member, people: list[User], cluster: ClusterConfig,
                 now: datetime) -> int:
    """Past jobs of the member over HISTORY, unless it has jobs already; how many were made."""
    if session.scalar(select(exists().where(Job.member_id == member.id))):
        return 0
    projects = list(session.scalars(select(Project).where(Project.member_id == member.id)
                                    .order_by(Project.id)))
    gpu = next(p for p in cluster.partitions if p.max_gpus_per_job)
    rng = random.Random(member.slug)  # noqa: S311 (a story told the same way, not a secret)
    daily = DAILY_GPU_HOURS.get(member.slug, 2.0)
    made = 0
    for day in range(HISTORY.days - 1, 0, -1):  # within the grant, which began HISTORY ago
        gpu_hours = rng.uniform(0.3, 1.7) * daily  # one job a day: the day's use
        gpus = rng.choice((1, 2, 4))
        created = now - timedelta(days=day, hours=rng.uniform(0, 20))
        _past_job(session, member, project=rng.choice(projects), user=rng.choice(people),
                  cluster=cluster, partition=gpu, gpus=gpus,
                  seconds=int(min(gpu_hours / gpus, 3.5) * 3600), created=created, rng=rng)
        made += 1
    return made


def _past_job(session: Session, member: Member, *, project: Project, user: User,
              cluster: ClusterConfig, partition: PartitionConfig, gpus: int, seconds: int,
              created: datetime, rng: random.Random) -> None:
    limit_minutes = max(60, (seconds // 3600 + 1) * 60)
    amounts = Amounts(gpus=gpus, cpus=2 * gpus, mem_mb=16 * 1024 * gpus)
    public_id = new_public_id()
    state = _ending(rng)
    elapsed = limit_minutes * 60 if state == JobState.timeout else seconds
    started = created + timedelta(minutes=rng.uniform(0.5, 30))
    ended = started + timedelta(seconds=elapsed)
    job = Job(public_id=public_id, member_id=member.id, project_id=project.id, user_id=user.id,
              cluster=cluster.name, name=f"{project.slug}-{public_id[:4]}",
              state=JobState.accepted, marker=marker_for(cluster.name, public_id),
              created_at=created, partition=partition.name,
              resources={"partition": partition.name, "nodes": 1, "ntasks": 1,
                         "cpus_per_task": amounts.cpus, "gpus": gpus, "mem_mb": amounts.mem_mb,
                         "time_limit_minutes": limit_minutes, "array": None},
              script=SCRIPT, stdout_path="", stderr_path="",
              billing=partition.billing.model_dump(),
              quote_msu=quotas.quote(partition.billing, amounts, limit_minutes * 60))
    session.add(job)
    first_event(session, job, at=created)
    ref = quotas.JobRef(job_id=public_id, member_id=member.id, project_id=project.id,
                        user_id=user.id, cluster=cluster.name, partition=partition.name)
    quotas.hold(session, ref, partition.billing, amounts, limit_minutes * 60, now=created,
                new_job=True)
    transition(session, job, JobState.submitting, at=created)
    transition(session, job, JobState.pending, at=created)
    transition(session, job, JobState.running, at=started)
    transition(session, job, state, at=ended)
    settled = quotas.settle(session, public_id, partition.billing, amounts, elapsed,
                            state=state.value, now=ended)
    job.scheduler_id = str(rng.randrange(10_000, 99_999))
    job.submitted_at, job.started_at, job.ended_at = created, started, ended
    job.elapsed_seconds, job.alloc_nodes, job.alloc_cpus = elapsed, 1, amounts.cpus
    job.exit_code = 0 if state == JobState.completed else 1
    job.charge_msu, job.refund_msu = settled.charge_msu, settled.refund_msu
    footprint.settle_job(job, cluster, amounts, elapsed)
