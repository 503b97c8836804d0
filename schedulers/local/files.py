"""A member's files on the local cluster, confined to the member's work root.

Paths are relative to the work root. Absolute paths and `..` are refused outright; what is left
is resolved (symlinks followed) and must still lie under the resolved root. The check and the
use are not atomic: a job that swaps a symlink in between could escape, which changes nothing
here since every member's job already runs as the gateway's own OS user.
"""

from __future__ import annotations

import os
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from schedulers.errors import IsADirectory, NotADirectory, PathRefused, SchedulerRejected
from schedulers.models import FileEntry, Identity, OutputChunk


def work_root(identity: Identity) -> Path:
    """The member's work root, created if missing."""
    root = Path(identity.work_root)
    if not root.is_absolute():
        raise PathRefused(f"the work root of {identity.name} is not absolute: {root}")
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def confine(identity: Identity, path: str) -> Path:
    """The absolute path `path` names under the member's work root, or PathRefused."""
    relative = PurePosixPath(path)
    if "\0" in path or relative.is_absolute() or ".." in relative.parts:
        raise PathRefused(f"path refused (absolute, '..' or NUL): {path!r}")
    root = work_root(identity)
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise PathRefused(f"path refused (leads out of the work root): {path!r}")
    return target


def _read_error(path: str, exc: OSError) -> SchedulerRejected:
    if isinstance(exc, IsADirectoryError):
        return IsADirectory(f"{path} is a directory")
    return SchedulerRejected(f"cannot read {path}: {exc.strerror}")


def read_chunk(identity: Identity, path: str, offset: int, limit: int) -> OutputChunk:
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit must not be negative")
    target = confine(identity, path)
    try:
        with target.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(limit)
    except OSError as exc:
        raise _read_error(path, exc) from exc
    return OutputChunk(data=data, offset=offset, next_offset=offset + len(data), size=size)


def read_whole(identity: Identity, path: str, limit: int) -> bytes:
    target = confine(identity, path)
    try:
        with target.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise SchedulerRejected(f"{path} holds {size} bytes, more than the {limit} allowed")
            data = f.read(limit + 1)
    except OSError as exc:
        raise _read_error(path, exc) from exc
    if len(data) > limit:  # it grew since fstat
        raise SchedulerRejected(f"{path} holds more than the {limit} bytes allowed")
    return data


def list_dir(identity: Identity, path: str) -> list[FileEntry]:
    """The regular files and directories in `path`, by name (links and special files left
    out: a link is the member's own to follow, not the listing's)."""
    target = confine(identity, path)
    entries = []
    try:
        with os.scandir(target) as found:
            for entry in found:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
                    entries.append(FileEntry(
                        name=entry.name, type="dir" if stat.S_ISDIR(info.st_mode) else "file",
                        size=info.st_size, modified=datetime.fromtimestamp(info.st_mtime, UTC)))
    except NotADirectoryError as exc:
        raise NotADirectory(f"{path} is not a directory") from exc
    except OSError as exc:
        raise SchedulerRejected(f"cannot list {path or '.'}: {exc.strerror}") from exc
    return sorted(entries, key=lambda e: e.name)


def write_whole(identity: Identity, path: str, data: bytes) -> None:
    """Write the file whole: readers see the old content or the new one, never a part."""
    if not PurePosixPath(path).parts:
        raise PathRefused("a file path is needed, not the work root")
    target = confine(identity, path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.upload")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SchedulerRejected(f"cannot write {path}: {exc.strerror}") from exc
