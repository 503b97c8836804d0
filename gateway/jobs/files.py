"""Files on the cluster: a member's work directory (upload, download), a job's working
directory (list, download)."""

from __future__ import annotations

import posixpath
from urllib.parse import quote as quote_url

from sqlalchemy.orm import Session

from consortium.audit import RequestContext, record
from consortium.authz import Principal, Scope, require
from consortium.errors import NotFound
from consortium.service import get_member
from gateway.jobs.actions import JobActions
from gateway.jobs.admission import cluster_account
from gateway.jobs.clusters import Cluster, identity_for
from gateway.jobs.errors import FileTooLarge, JobInputInvalid
from gateway.jobs.schemas import FileEntryOut, FileListing
from schedulers.errors import (
    IsADirectory,
    NotADirectory,
    PathRefused,
    SchedulerError,
    SchedulerRejected,
)
from schedulers.models import Identity


class Files(JobActions):
    """Files of a member's or a job's directory on the cluster."""

    async def put_member_file(self, principal: Principal, member_slug: str, *,
                              cluster_name: str | None, path: str, data: bytes,
                              context: RequestContext) -> str:
        """Write the file; the name of the cluster it was written on."""
        def prepare(session: Session) -> tuple[Cluster, Identity]:
            member = get_member(session, principal, member_slug)
            require(principal, Scope.jobs_write, member.id)
            cluster = self.clusters.get(cluster_name, loc=("query", "cluster"))
            identity = identity_for(cluster.config,
                                    cluster_account(session, member.id, cluster.name))
            record(session, actor=principal, action="file.upload", target_type="file",
                   target_id=path[-64:], member_id=member.id, context=context,
                   details={"cluster": cluster.name, "path": path, "bytes": len(data)})
            return cluster, identity
        if len(data) > self.settings.file_max_bytes:
            raise FileTooLarge(self.settings.file_max_bytes)
        cluster, identity = await self._db(prepare)
        try:
            await cluster.scheduler.put_file(identity, path, data)
        except PathRefused as exc:
            raise JobInputInvalid.at(("path",), exc.message) from exc
        except SchedulerError as exc:
            raise self._cluster_error(cluster, exc) from exc
        return cluster.name

    async def get_member_file(self, principal: Principal, member_slug: str, *,
                              cluster_name: str | None, path: str) -> bytes:
        def prepare(session: Session) -> tuple[Cluster, Identity]:
            member = get_member(session, principal, member_slug)
            require(principal, Scope.jobs_read, member.id)
            cluster = self.clusters.get(cluster_name, loc=("query", "cluster"))
            return cluster, identity_for(cluster.config,
                                         cluster_account(session, member.id, cluster.name))
        cluster, identity = await self._db(prepare, write=False)
        return await self._get_file(cluster, identity, path)

    async def get_job_file(self, principal: Principal, public_id: str, path: str) -> bytes:
        """A file of the job's working directory (a checkpoint, a result)."""
        job, cluster, identity = await self._db(
            lambda s: self._target(s, principal, public_id, Scope.jobs_read), write=False)
        return await self._get_file(
            cluster, identity, posixpath.join(job.workdir, path),
            listed_by=f"GET /api/v1/jobs/{public_id}/files?path={quote_url(path)}")

    async def list_job_files(self, principal: Principal, public_id: str,
                             path: str) -> FileListing:
        """The files and directories of `path` in the job's working directory."""
        job, cluster, identity = await self._db(
            lambda s: self._target(s, principal, public_id, Scope.jobs_read), write=False)
        try:
            entries = await cluster.scheduler.list_files(identity,
                                                         posixpath.join(job.workdir, path))
        except NotADirectory as exc:
            raise _query_path_error(f"{path} is a file; download it with GET /api/v1/jobs/"
                                    f"{public_id}/files/{path}") from exc
        except PathRefused as exc:
            raise _query_path_error(exc.message) from exc
        except SchedulerRejected as exc:
            raise NotFound(f"cannot list {path or 'the working directory'}: {exc.message}"
                           ) from exc
        except SchedulerError as exc:
            raise self._cluster_error(cluster, exc) from exc
        return FileListing(path=path, entries=[FileEntryOut(**e.model_dump()) for e in entries])

    async def _get_file(self, cluster: Cluster, identity: Identity, path: str,
                        listed_by: str | None = None) -> bytes:
        """The file; a directory is refused with where to list it (`listed_by`: the route
        that lists it, with `path` relative to it)."""
        try:
            return await cluster.scheduler.get_file(identity, path, self.settings.file_max_bytes)
        except IsADirectory as exc:
            hint = f"; list it with {listed_by}" if listed_by else ""
            raise JobInputInvalid.at(("path",), f"is a directory{hint}") from exc
        except PathRefused as exc:
            raise JobInputInvalid.at(("path",), exc.message) from exc
        except SchedulerRejected as exc:
            raise NotFound(f"cannot read {path}: {exc.message}") from exc
        except SchedulerError as exc:
            raise self._cluster_error(cluster, exc) from exc


def _query_path_error(msg: str) -> JobInputInvalid:
    return JobInputInvalid([{"loc": ["query", "path"], "msg": msg, "type": "value_error"}])
