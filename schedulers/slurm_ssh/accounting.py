"""Members' Slurm accounts and association limits, kept with sacctmgr as the admin identity.

Idempotent: `sacctmgr add` of an existing object exits 1 ("Nothing new added"), so existence is
read first. Blocking a member sets GrpJobs=0 and GrpSubmitJobs=0: nothing new is accepted or
started, and nothing is deleted (deleting an association kills its running jobs)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from schedulers.base import AccountingSync
from schedulers.config import ClusterConfig
from schedulers.errors import SchedulerRejected
from schedulers.models import AssociationLimits
from schedulers.slurm_ssh.commands import slurm_error
from schedulers.slurm_ssh.scheduler import SlurmSshScheduler
from schedulers.slurm_ssh.transport import Result

# Slurm stores account names in lower case; keep to what every sacctmgr version accepts
ACCOUNT_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,63}$")
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LIMIT_FIELDS = ("grp_billing_minutes", "max_jobs", "max_submit_jobs", "blocked")


def _checked(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise SchedulerRejected(f"invalid Slurm {what}: {value!r}")
    return value


def _ok(result: Result, command: str) -> None:
    if result.status != 0:
        raise slurm_error(result, command=command)


@dataclass(frozen=True)
class ShowAccount:
    account: str

    def argv(self) -> list[str]:
        return ["sacctmgr", "-n", "-P", "show", "account", "where", f"name={self.account}",
                "format=Account"]

    def parse(self, result: Result) -> bool:
        _ok(result, "sacctmgr")
        return self.account in result.out.split()


@dataclass(frozen=True)
class AddAccount:
    account: str
    description: str

    def argv(self) -> list[str]:
        description = _CONTROL.sub(" ", self.description).strip() or self.account
        return ["sacctmgr", "-i", "add", "account", self.account,
                f"Description={description}"]

    def parse(self, result: Result) -> None:
        _ok(result, "sacctmgr")


@dataclass(frozen=True)
class ShowAssociations:
    """The account's associations: the account's own (User empty) and its users'."""

    account: str

    def argv(self) -> list[str]:
        return ["sacctmgr", "-n", "-P", "show", "assoc", "where", f"account={self.account}",
                "format=Account,User,GrpTRESMins,GrpJobs,GrpSubmitJobs"]

    def parse(self, result: Result) -> list[dict[str, str]]:
        _ok(result, "sacctmgr")
        keys = ("account", "user", "grp_tres_mins", "grp_jobs", "grp_submit_jobs")
        return [dict(zip(keys, line.split("|"), strict=True))
                for line in result.out.splitlines() if line.count("|") == len(keys) - 1]


@dataclass(frozen=True)
class AddUser:
    unix_user: str
    account: str

    def argv(self) -> list[str]:
        return ["sacctmgr", "-i", "add", "user", self.unix_user, f"Account={self.account}"]

    def parse(self, result: Result) -> None:
        _ok(result, "sacctmgr")


@dataclass(frozen=True)
class ModifyAccount:
    """Set the account association's limits; -1 clears one."""

    limits: AssociationLimits

    def argv(self) -> list[str]:
        lim = self.limits

        def value(v: int | None) -> int:
            return -1 if v is None else v

        jobs, submit = (0, 0) if lim.blocked else (value(lim.max_jobs),
                                                   value(lim.max_submit_jobs))
        return ["sacctmgr", "-i", "modify", "account", "where", f"name={lim.account}", "set",
                f"GrpTRESMins=billing={value(lim.grp_billing_minutes)}",
                f"GrpJobs={jobs}", f"GrpSubmitJobs={submit}"]

    def parse(self, result: Result) -> None:
        _ok(result, "sacctmgr")


@dataclass(frozen=True)
class ShareUsage:
    """`sshare` of an account: the billing-minutes Slurm has counted for it (GrpTRESRaw; our
    clusters never decay or reset usage, so this is all usage since the account exists)."""

    account: str

    def argv(self) -> list[str]:
        return ["sshare", "-n", "-P", "-A", self.account, "-o", "Account,User,GrpTRESRaw"]

    def parse(self, result: Result) -> int | None:
        _ok(result, "sshare")
        for line in result.out.splitlines():
            account, _, rest = line.partition("|")
            user, _, tres = rest.partition("|")
            if account.strip() == self.account and not user.strip():
                counts = dict(item.partition("=")[::2] for item in tres.split(",") if item)
                billing = counts.get("billing")
                return None if billing is None else int(float(billing))
        return None


def _number(value: str) -> int | None:
    return int(value) if value.strip().isdigit() else None


def limits_from_row(row: dict[str, str]) -> AssociationLimits:
    tres = dict(item.partition("=")[::2] for item in row["grp_tres_mins"].split(",") if item)
    jobs, submit = _number(row["grp_jobs"]), _number(row["grp_submit_jobs"])
    blocked = jobs == 0 and submit == 0
    return AssociationLimits(
        account=row["account"], grp_billing_minutes=_number(tres.get("billing", "")),
        max_jobs=None if blocked else jobs, max_submit_jobs=None if blocked else submit,
        blocked=blocked)


def _effective(limits: AssociationLimits) -> AssociationLimits:
    # a blocked account holds 0/0 in Slurm whatever job limits it had
    if limits.blocked:
        return limits.model_copy(update={"max_jobs": None, "max_submit_jobs": None})
    return limits


def diff(wanted: AssociationLimits,
         actual: AssociationLimits | None) -> dict[str, tuple[object, object]]:
    """What Slurm holds that differs from what is wanted: field -> (actual, wanted).
    Empty when nothing needs changing."""
    w = _effective(wanted)
    a = _effective(actual) if actual is not None else None
    return {f: (getattr(a, f) if a else None, getattr(w, f)) for f in _LIMIT_FIELDS
            if a is None or getattr(a, f) != getattr(w, f)}


class SlurmAccountingSync(AccountingSync):
    """sacctmgr through the cluster's admin identity (AdminLevel=Operator adds accounts;
    Administrator is needed to reset usage)."""

    def __init__(self, config: ClusterConfig, *,
                 scheduler: SlurmSshScheduler | None = None) -> None:
        self._owns_scheduler = scheduler is None
        self.scheduler = scheduler or SlurmSshScheduler(config)

    async def ensure_account(self, account: str, unix_user: str, description: str) -> bool:
        account = _checked(ACCOUNT_NAME, account, "account name")
        unix_user = _checked(_USER_NAME, unix_user, "user name")
        run, admin = self.scheduler.execute, self.scheduler.admin
        changed = False
        if not await run(admin, ShowAccount(account)):
            await run(admin, AddAccount(account, description))
            changed = True
        rows = await run(admin, ShowAssociations(account))
        if not any(r["user"] == unix_user for r in rows):
            await run(admin, AddUser(unix_user, account))
            changed = True
        return changed

    async def read_limits(self, account: str) -> AssociationLimits | None:
        account = _checked(ACCOUNT_NAME, account, "account name")
        rows = await self.scheduler.execute(self.scheduler.admin, ShowAssociations(account))
        own = next((r for r in rows if r["user"] == "" and r["account"] == account), None)
        return limits_from_row(own) if own else None

    async def set_limits(self, limits: AssociationLimits) -> AssociationLimits:
        _checked(ACCOUNT_NAME, limits.account, "account name")
        await self.scheduler.execute(self.scheduler.admin, ModifyAccount(limits))
        held = await self.read_limits(limits.account)
        if held is None:
            raise SchedulerRejected(f"account {limits.account} vanished while being modified")
        return held

    async def read_usage(self, account: str) -> int | None:
        account = _checked(ACCOUNT_NAME, account, "account name")
        return await self.scheduler.execute(self.scheduler.admin, ShareUsage(account))

    async def block(self, account: str) -> AssociationLimits:
        """Stop new jobs of the account (GrpJobs=0, GrpSubmitJobs=0); billing limit kept."""
        held = await self.read_limits(account)
        if held is None:
            raise SchedulerRejected(f"no Slurm account {account}")
        return await self.set_limits(held.model_copy(update={"blocked": True}))

    async def close(self) -> None:
        if self._owns_scheduler:
            await self.scheduler.close()
