"""Shapes of the job API: what a submission may hold, what a job and a template look like."""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from consortium.bounds import Id
from consortium.texts import Sentence
from gateway.jobs.arrays import parse_array
from gateway.jobs.models import JobState

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
PARTITION_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# Slurm's own variables stay Slurm's; the rest of the environment is the submitter's business
RESERVED_ENV_PREFIXES = ("SLURM_", "HPCGW_")
MAX_SCRIPT_BYTES = 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab allowed, newlines not
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._@+=,:/-]*$")


def relative_path(value: str) -> str:
    """A path inside the member's work directory: relative, no `..`, plain characters."""
    if not _PATH_CHARS.match(value):
        raise ValueError(Sentence("use letters, digits and . _ @ + = , : - / only"))
    path = PurePosixPath(value)
    if path.is_absolute():
        raise ValueError(Sentence("must be relative to the member's work directory"))
    if ".." in path.parts:
        raise ValueError(Sentence("must not contain '..'"))
    normalized = str(path)
    return "" if normalized == "." else normalized


def env_name(value: str) -> str:
    if value.startswith(RESERVED_ENV_PREFIXES):
        raise ValueError(Sentence("names starting with any of %(prefixes)s are reserved",
                                  prefixes=", ".join(RESERVED_ENV_PREFIXES)))
    return value


def file_path(value: str) -> str:
    normalized = relative_path(value)
    if not normalized:
        raise ValueError(Sentence("a file path is needed"))
    return normalized


RelativePath = Annotated[str, StringConstraints(max_length=500), AfterValidator(relative_path)]
FilePath = Annotated[str, StringConstraints(max_length=500), AfterValidator(file_path)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN), AfterValidator(env_name)]
EnvValue = Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\x00]*$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# each bound of a resource, written once for the request and the resolved resources
Partition = Annotated[str, Field(pattern=PARTITION_PATTERN)]
Nodes = Annotated[int, Field(ge=1, le=10_000)]
Ntasks = Annotated[int, Field(ge=1, le=1_000_000)]
CpusPerTask = Annotated[int, Field(ge=1, le=10_000)]
Gpus = Annotated[int, Field(ge=0, le=10_000, description="GPUs of the whole job")]
MemMb = Annotated[int, Field(ge=1, le=1024 ** 3, description=(
    "memory of the whole job, in MiB (rounded up to a multiple of `nodes`: Slurm gives memory "
    "per node)"))]
TimeLimit = Annotated[int, Field(ge=1, le=366 * 24 * 60)]


class ResourcesIn(_In):
    """What the job asks for, resolved (the request's fields over the script's `#SBATCH`
    lines); each bound is checked against its partition as well."""

    partition: Partition
    nodes: Nodes = 1
    ntasks: Ntasks = 1
    cpus_per_task: CpusPerTask = 1
    gpus: Gpus = 0
    mem_mb: MemMb
    time_limit_minutes: TimeLimit
    array: str | None = Field(
        None, max_length=4000, description="a job array: task ids, ranges and steps, and `%N` "
        "tasks at once at most (`0-15:2%4`); each task gets these resources",
        examples=["0-9%2"])

    @property
    def cpus(self) -> int:
        return self.ntasks * self.cpus_per_task

    @property
    def tasks(self) -> int:
        """How many jobs Slurm runs for this request: the array's tasks, else one."""
        return parse_array(self.array).tasks if self.array is not None else 1

    @field_validator("array")
    @classmethod
    def _array(cls, value: str | None) -> str | None:
        return None if value is None else str(parse_array(value))


class ResourcesRequest(_In):
    """Resources as a submission gives them: any field left out is taken from the script's
    `#SBATCH` lines, else its default."""

    partition: Partition | None = None
    nodes: Nodes | None = None
    ntasks: Ntasks | None = None
    cpus_per_task: CpusPerTask | None = None
    gpus: Gpus | None = None
    mem_mb: MemMb | None = None
    time_limit_minutes: TimeLimit | None = None
    array: str | None = Field(None, max_length=4000, description="as in the resolved resources")


JobName = Annotated[str, StringConstraints(min_length=1, max_length=100,
                                           pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")]
_PROJECT_PATH = r"^[a-z0-9][a-z0-9-]{0,63}/[a-z0-9][a-z0-9-]{0,63}$"
ProjectRef = Annotated[
    Id | Annotated[str, StringConstraints(pattern=_PROJECT_PATH)],
    Field(description="the project's id, or `member-slug/project-slug`"),
]


class JobCreate(_In):
    """A submission: a script, or a template with its parameters."""

    project: ProjectRef
    cluster: str | None = Field(None, description="default: the first configured cluster")
    name: JobName | None = Field(None, description="default: the script's `#SBATCH --job-name`, "
                                 "else the template's slug, else `job`")
    script: str | None = Field(None, min_length=1, max_length=MAX_SCRIPT_BYTES)
    template: str | None = Field(None, pattern=SLUG_PATTERN)
    template_version: Id | None = Field(None, description="default: the latest")
    parameters: dict[str, int | float | bool | str] | None = None
    resources: ResourcesRequest | None = Field(None, description=(
        "each field given wins over the script's `#SBATCH` line for it; `partition`, `mem_mb` "
        "and `time_limit_minutes` are needed from one or the other"))
    environment: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=200)
    workdir: RelativePath = Field("", description="inside the member's work directory")
    when_unavailable: Literal["fail", "queue"] | None = Field(None, description=(
        "when the cluster cannot be reached: `fail` (503, nothing held) or `queue` (202, the "
        "job `waiting` with its hold until the cluster answers); default: the cluster's "
        "setting, `queue` during a declared maintenance window"))
    max_wait_minutes: int | None = Field(None, ge=1, le=366 * 24 * 60, description=(
        "how long a `waiting` job may wait before it fails; default and most: the gateway's "
        "`jobs.max_wait_minutes`"))

    @model_validator(mode="after")
    def _script_or_template(self) -> Self:
        if (self.script is None) == (self.template is None):
            raise ValueError(Sentence("give either `script` or `template` (with `parameters`)"))
        if self.template is None and (self.parameters or self.template_version):
            raise ValueError(Sentence("`parameters` and `template_version` go with a `template`"))
        if self.when_unavailable == "fail" and self.max_wait_minutes is not None:
            raise ValueError(Sentence("`max_wait_minutes` goes with `when_unavailable: queue`"))
        if self.script is not None and "\0" in self.script:
            raise ValueError(Sentence("the script contains a NUL byte"))
        return self


class JobEventOut(BaseModel):
    id: int
    at: datetime
    from_state: JobState | None
    to_state: JobState
    detail: str | None


class Allocated(BaseModel):
    nodes: int | None
    cpus: int | None
    gpus: int | None
    mem_mb: int | None
    node_list: str | None


class Energy(BaseModel):
    """Set when the job (task) is settled: docs/sustainability.md."""

    kwh: float | None
    source: Literal["measured", "estimated", "not_estimated"] | None = Field(
        description="measured by Slurm (nodes the job had to itself), estimated with Green "
                    "Algorithms, or not estimated (no hardware figures); None until settled")
    carbon_g: float | None = Field(description="gCO2e")
    figures: dict[str, Any] | None = Field(
        None, description="what the figures were computed from: cores, GPUs, memory, hours, "
                          "PUE, watts, carbon intensity with its scope and year")


class TemplateRef(BaseModel):
    slug: str
    version: int


class TaskOut(BaseModel):
    """One task of a job array."""

    task_id: int = Field(description="SLURM_ARRAY_TASK_ID; `GET .../output?task=` reads its "
                                     "output")
    scheduler_id: str = Field(examples=["123_4"])
    state: JobState
    exit_code: int | None
    signal: int | None
    elapsed_seconds: int | None
    charge_msu: int | None
    refund_msu: int | None
    started_at: datetime | None
    ended_at: datetime | None
    allocated: Allocated
    stdout_path: str
    stderr_path: str
    energy: Energy | None = None


class JobOut(BaseModel):
    """A job as the database knows it (reads never wait on the cluster)."""

    id: str
    name: str
    state: JobState
    cluster: str
    member_id: int
    project_id: int
    user_id: int
    scheduler_id: str | None
    marker: str
    resources: dict[str, Any]
    template: TemplateRef | None
    parameters: dict[str, Any] | None
    environment: dict[str, str]
    workdir: str
    stdout_path: str
    stderr_path: str
    quote_msu: int
    charge_msu: int | None
    refund_msu: int | None
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    elapsed_seconds: int | None
    exit_code: int | None
    signal: int | None
    pending_reason: str | None = Field(description="Slurm's reason code")
    pending_reason_text: str | None = Field(description="the reason code as a sentence")
    detail: str | None = Field(description="why it failed, or (`waiting`) what it waits for")
    wait_until: datetime | None = Field(
        description="a `waiting` job still waiting then fails (submit_failed, hold released)")
    cancel_requested: bool
    allocated: Allocated
    energy: Energy
    array: str | None = Field(description="a job array's spec (resources.array), else null")
    tasks: dict[str, int] | None = Field(
        description="an array's tasks counted by state, else null; the job is running while "
                    "any task runs, pending while any waits, and ends when all have ended",
        examples=[{"pending": 3, "running": 1, "completed": 2}])


class JobDetail(JobOut):
    script: str
    events: list[JobEventOut]
    array_tasks: list[TaskOut] = Field(
        description="an array's tasks as the tracker follows them (empty until it has seen "
                    "them on the cluster, and for a single job)")


class OutputStream(StrEnum):
    stdout = "stdout"
    stderr = "stderr"


class OutputOut(BaseModel):
    stream: OutputStream
    offset: int
    next_offset: int = Field(description="pass as `offset` to read on")
    size: int = Field(description="the file's size when read")
    data: str = Field(description="UTF-8 text (invalid bytes replaced)")
    complete: bool = Field(description="the job (an array's task) has ended and everything "
                                       "was read")
    task: int | None = Field(None, description="the array task whose output this is")


class JobQuote(BaseModel):
    """What a submission of this request would be quoted and held, and whether the hold would
    be taken now (nothing is written: a later submission is decided again)."""

    cluster: str
    partition: str
    resources: dict[str, Any] = Field(description="resolved, as the job would show them")
    tasks: int = Field(description="a job array's tasks, else 1")
    rate_msu_per_hour: int = Field(description="milli-SU per hour of one task")
    quote_msu: int = Field(description="the hold: the rate times the time limit, times tasks")
    available_msu: int = Field(description="what the member's current allocations have "
                                           "available now (as its usage shows)")
    fits: bool = Field(description="a submission now would be accepted")
    message: str | None = Field(description="why it would be refused (quota, job cap)")


class FileEntryOut(BaseModel):
    name: str
    type: Literal["file", "dir"]
    size: int = Field(description="bytes")
    modified: datetime | None


class FileListing(BaseModel):
    """The regular files and directories of a directory of the job's working directory
    (symbolic links and special files are not listed)."""

    path: str = Field(description="relative to the job's working directory; empty: itself")
    entries: list[FileEntryOut]


# --- templates ------------------------------------------------------------------------------

class ParamType(StrEnum):
    int = "int"
    float = "float"
    str = "str"
    enum = "enum"
    bool = "bool"


# names a template sees besides its parameters
RESERVED_NAMES = frozenset({"resources", "job", "template_dir"})
Scalar = int | float | bool | str


class ParameterSpec(_In):
    """A typed parameter; `default` absent means required."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$")
    type: ParamType
    description: str = Field("", max_length=1000)
    default: Scalar | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: list[Annotated[str, StringConstraints(max_length=200)]] | None = None
    max_length: int = Field(1000, ge=1, le=100_000)
    pattern: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.name in RESERVED_NAMES:
            raise ValueError(f"`{self.name}` is reserved")
        if self.type is ParamType.enum and not self.choices:
            raise ValueError("an enum parameter needs `choices`")
        if self.type is not ParamType.enum and self.choices:
            raise ValueError("`choices` go with an enum parameter")
        numeric = self.type in (ParamType.int, ParamType.float)
        if not numeric and (self.minimum is not None or self.maximum is not None):
            raise ValueError("`minimum`/`maximum` go with int and float parameters")
        if (self.minimum is not None and self.maximum is not None
                and self.minimum > self.maximum):
            raise ValueError("`minimum` is above `maximum`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"`pattern` is not a regular expression: {exc}") from exc
        if self.default is not None:
            problem = self.check(self.default)
            if problem:
                raise ValueError(f"the default value: {problem}")
        return self

    @property
    def required(self) -> bool:
        return self.default is None

    def check(self, value: object) -> str | None:
        """Why `value` does not fit this parameter, or None when it does."""
        if self.type is ParamType.bool:
            return None if isinstance(value, bool) else Sentence("must be true or false")
        if self.type in (ParamType.int, ParamType.float):
            return self._check_number(value)
        if not isinstance(value, str):
            return Sentence("must be a string")
        if self.type is ParamType.enum:
            choices = self.choices or []
            return None if value in choices else Sentence("must be one of %(choices)s",
                                                             choices=", ".join(choices))
        return self._check_text(value)

    def _check_number(self, value: object) -> str | None:
        if self.type is ParamType.int:
            if isinstance(value, bool) or not isinstance(value, int):
                return Sentence("must be an integer")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return Sentence("must be a number")
        elif not math.isfinite(value):
            return Sentence("must be a finite number")
        return self._bounds(value)

    def _check_text(self, value: str) -> str | None:
        if len(value) > self.max_length:
            return Sentence("must have at most %(max_length)s character(s)",
                            max_length=self.max_length)
        if _CONTROL.search(value):
            return Sentence("must not contain control characters (newlines included)")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return Sentence("does not have the expected form (%(pattern)s)", pattern=self.pattern)
        return None

    def _bounds(self, value: float) -> str | None:
        if self.minimum is not None and value < self.minimum:
            return Sentence("must be at least %(ge)s", ge=format(self.minimum, "g"))
        if self.maximum is not None and value > self.maximum:
            return Sentence("must be at most %(le)s", le=format(self.maximum, "g"))
        return None


TemplateFileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]


class TemplateDefinition(_In):
    """The content of one version of a template (each change makes a new version)."""

    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    body: str = Field(min_length=1, max_length=MAX_SCRIPT_BYTES,
                      description="Jinja source; every {{ value }} is shell-quoted")
    parameters: list[ParameterSpec] = Field(default_factory=list, max_length=100)
    files: dict[TemplateFileName, str] = Field(
        default_factory=dict, max_length=20,
        description="files written beside the script, in {{ template_dir }}")

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        if sum(len(c) for c in self.files.values()) > MAX_SCRIPT_BYTES:
            raise ValueError(f"the files hold more than {MAX_SCRIPT_BYTES} bytes")
        return self


class TemplateCreate(TemplateDefinition):
    slug: str = Field(pattern=SLUG_PATTERN)


class TemplateUpdate(TemplateDefinition):
    enabled: bool = True


class TemplateOut(BaseModel):
    slug: str
    version: int
    latest_version: int
    enabled: bool
    title: str
    description: str
    body: str
    parameters: list[ParameterSpec]
    files: dict[str, str]
    created_at: datetime
