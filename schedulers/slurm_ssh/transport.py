"""SSH to the cluster: the only module that imports paramiko.

One pool of connections per identity (Unix user + key), at most `pool_size` connections each and
CHANNELS_PER_CONNECTION commands at once on one connection (sshd's MaxSessions defaults to 10).
Sockets get TCP_NODELAY (without it every command waits ~40 ms on Nagle + delayed ACK), host keys
are pinned (known_hosts, never added), every command has a deadline and an output cap, and every
blocking call runs in this transport's own bounded thread pool, never on the event loop.
paramiko's errors (and the socket's and SFTP's) become the scheduler errors in one place,
`_ssh_errors`, with the original as `__cause__`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import posixpath
import select
import shlex
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

import paramiko

from schedulers.config import ClusterConfig
from schedulers.errors import (
    IsADirectory,
    NotADirectory,
    PathRefused,
    SchedulerAuthError,
    SchedulerError,
    SchedulerRejected,
    SchedulerTimeout,
    SchedulerUnavailable,
)
from schedulers.metrics import SSH_CHANNELS_IN_USE, SSH_CONNECT_FAILURES, SSH_CONNECTIONS_OPEN
from schedulers.models import FileEntry, Identity

CHANNELS_PER_CONNECTION = 8  # below OpenSSH's default MaxSessions (10)
OUTPUT_LIMIT = 16 * 1024 * 1024  # bytes of stdout (and of stderr) one command may return
_READ_CHUNK = 65536
# paramiko's network errors: the connection is gone or never came up
_NETWORK_ERRORS = (paramiko.SSHException, EOFError, OSError)

T = TypeVar("T")


@dataclass(frozen=True)
class Result:
    stdout: bytes
    stderr: bytes
    status: int

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", errors="replace").strip()


class NoSuchFile(SchedulerRejected):
    """The remote file does not exist (yet)."""


def _quoted(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def command_line(argv: Sequence[str], *, dirs: Sequence[str] = ()) -> str:
    """The line the login shell (sh or bash) runs: every argument quoted. `dirs` are created
    first unless they all exist: `[ -d a ] && [ -d b ] || mkdir -p -- a b && argv`, where the
    test is a shell builtin, so existing directories cost no extra process."""
    if not argv:
        raise ValueError("empty command")
    if not dirs:
        return _quoted(argv)
    exist = " && ".join(f"[ -d {shlex.quote(d)} ]" for d in dirs)
    return f"{exist} || {_quoted(['mkdir', '-p', '--', *dirs])} && {_quoted(argv)}"


class _UnknownHostKey(paramiko.SSHException):
    pass


class _RefuseUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy with an exception of its own, so an unknown key is told apart from the
    other SSHExceptions of connect()."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> NoReturn:
        raise _UnknownHostKey(f"host key of {hostname} ({key.get_name()}) is not in known_hosts")


@dataclass(eq=False)
class _Connection:
    client: paramiko.SSHClient
    transport: paramiko.Transport
    in_use: int = 0
    broken: bool = False
    last_used: float = field(default_factory=time.monotonic)

    def usable(self) -> bool:
        return not self.broken and self.transport.is_active()


@dataclass(eq=False)
class _Started:
    pool: _Pool
    conn: _Connection
    chan: paramiko.Channel

    def close(self) -> None:
        """Close the channel unread: the command's stdin ends with nothing sent."""
        self.chan.close()
        self.pool.release(self.conn)


class _Pool:
    """The connections of one identity. Thread-safe: used from the transport's worker threads."""

    def __init__(self, transport: SshTransport, identity: Identity) -> None:
        self._owner = transport
        self.identity = identity
        self._cond = threading.Condition()
        self._conns: list[_Connection] = []
        self._opening = 0
        self._pkey: paramiko.PKey | None = None

    def acquire(self, deadline: float) -> _Connection:
        """A connection with a free channel slot: an idle one, else a new one while under
        pool_size, else the least busy one; waits (until the deadline) when all are full."""
        config = self._owner.config
        stale: list[_Connection] = []
        chosen: _Connection | None = None
        with self._cond:
            while True:
                now = time.monotonic()
                for c in list(self._conns):  # idle too long, or dead: closed below
                    if c.in_use == 0 and (now - c.last_used > config.idle_timeout
                                          or not c.usable()):
                        self._conns.remove(c)
                        stale.append(c)
                free = [c for c in self._conns
                        if c.usable() and c.in_use < CHANNELS_PER_CONNECTION]
                idle = [c for c in free if c.in_use == 0]
                can_open = len(self._conns) + self._opening < config.pool_size
                if idle or (free and not can_open):
                    chosen = idle[0] if idle else min(free, key=lambda c: c.in_use)
                    chosen.in_use += 1
                    SSH_CHANNELS_IN_USE.labels(config.name).inc()
                    break
                if can_open:
                    self._opening += 1
                    break
                if now >= deadline:
                    exc = SchedulerTimeout(f"no free SSH channel for {self.identity.unix_user} "
                                           "within the timeout", cluster=config.name)
                    exc.maybe_executed = False
                    raise exc
                self._cond.wait(deadline - now)
        SSH_CONNECTIONS_OPEN.labels(config.name).dec(len(stale))
        for c in stale:
            c.client.close()
        if chosen is not None:
            return chosen
        try:
            conn = self._connect(deadline)
        except BaseException:
            SSH_CONNECT_FAILURES.labels(config.name).inc()
            with self._cond:
                self._opening -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._opening -= 1
            conn.in_use = 1
            self._conns.append(conn)
            SSH_CONNECTIONS_OPEN.labels(config.name).inc()
            SSH_CHANNELS_IN_USE.labels(config.name).inc()
            return conn

    def release(self, conn: _Connection, *, broken: bool = False) -> None:
        close = False
        SSH_CHANNELS_IN_USE.labels(self._owner.config.name).dec()
        with self._cond:
            conn.in_use -= 1
            conn.last_used = time.monotonic()
            conn.broken = conn.broken or broken
            if conn.broken and conn.in_use == 0 and conn in self._conns:
                self._conns.remove(conn)
                close = True
            self._cond.notify_all()
        if close:
            SSH_CONNECTIONS_OPEN.labels(self._owner.config.name).dec()
            conn.client.close()

    def break_all(self) -> None:
        """Cut every connection's socket, as a network failure would (tests)."""
        with self._cond:
            for c in self._conns:
                c.transport.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._cond:
            conns, self._conns = self._conns, []
        SSH_CONNECTIONS_OPEN.labels(self._owner.config.name).dec(len(conns))
        for c in conns:
            c.client.close()

    def _key(self) -> paramiko.PKey:
        if self._pkey is None:
            with _ssh_errors(f"cannot load the key of {self.identity.unix_user}",
                             self._owner.config.name, local=True):
                self._pkey = paramiko.PKey.from_path(self.identity.key_file)
        return self._pkey

    def _connect(self, deadline: float) -> _Connection:
        config = self._owner.config
        user = self.identity.unix_user
        where = f"{user}@{config.host}:{config.port}"
        timeout = max(0.1, min(config.connect_timeout, deadline - time.monotonic()))
        pkey = self._key()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_RefuseUnknownHost())
        with _ssh_errors(f"cannot read known_hosts {config.known_hosts}", config.name,
                         local=True):
            client.get_host_keys().load(str(config.known_hosts))
        with _ssh_errors(f"cannot connect to {where}", config.name):
            sock = socket.create_connection((config.host, config.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with _ssh_errors(f"SSH to {where} failed", config.name):
                client.connect(config.host, port=config.port, username=user, pkey=pkey,
                               sock=sock, timeout=timeout, banner_timeout=timeout,
                               auth_timeout=timeout, channel_timeout=timeout, allow_agent=False,
                               look_for_keys=False)
        except BaseException:
            client.close()
            sock.close()
            raise
        transport = client.get_transport()
        if transport is None:  # connect() returned: paramiko always has one by now
            raise SchedulerUnavailable(f"SSH to {where}: no transport", cluster=config.name)
        if config.keepalive:
            transport.set_keepalive(config.keepalive)
        return _Connection(client=client, transport=transport)


@contextlib.contextmanager
def _ssh_errors(doing: str, cluster: str, *, maybe_executed: bool = False,
                local: bool = False) -> Iterator[None]:
    """paramiko's, the socket's and SFTP's errors as the scheduler layer's, raised from the
    original. `doing` starts the message; `maybe_executed`: a command may have run (a timeout
    is then the command's, not the connection's); `local`: reading this machine's own files
    (a key, known_hosts), whose every failure is a refusal to authenticate."""
    try:
        yield
    except SchedulerError:
        raise
    except Exception as exc:
        translated = _translated(exc, doing, cluster, maybe_executed=maybe_executed, local=local)
        if translated is None:
            raise
        raise translated from exc


def _translated(exc: Exception, doing: str, cluster: str, *, maybe_executed: bool,
                local: bool) -> SchedulerError | None:
    kind: type[SchedulerError]
    message = f"{doing}: {exc or type(exc).__name__}"
    if local and isinstance(exc, OSError | paramiko.SSHException | ValueError):
        kind = SchedulerAuthError
    elif isinstance(exc, paramiko.BadHostKeyException):
        kind, message = (SchedulerAuthError,
                         f"{doing}: host key of the server changed: refused ({exc})")
    elif isinstance(exc, _UnknownHostKey):
        kind, message = SchedulerAuthError, f"{doing}: {exc}: refused"
    elif isinstance(exc, paramiko.AuthenticationException):
        kind, message = SchedulerAuthError, f"{doing}: authentication failed: {exc}"
    elif isinstance(exc, FileNotFoundError):
        kind, message = NoSuchFile, f"no such file: {exc.filename or exc}"
    elif isinstance(exc, PermissionError):
        kind, message = SchedulerRejected, f"permission denied: {exc}"
    elif isinstance(exc, TimeoutError) and maybe_executed:
        kind, message = SchedulerTimeout, f"{doing}: timed out"
    elif isinstance(exc, _NETWORK_ERRORS):
        return SchedulerUnavailable(message, cluster=cluster, maybe_executed=maybe_executed)
    else:
        return None
    return kind(message, cluster=cluster)


class SshTransport:
    """Runs commands and file transfers on one cluster, as any of its identities."""

    def __init__(self, config: ClusterConfig, *, output_limit: int = OUTPUT_LIMIT) -> None:
        self.config = config
        self.output_limit = output_limit
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._pools_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=config.pool_size * CHANNELS_PER_CONNECTION,
            thread_name_prefix=f"ssh-{config.name}")
        self._count_lock = threading.Lock()
        self._commands = 0
        self._closed = False

    @property
    def commands_run(self) -> int:
        """Remote commands started so far (exec channels): tests and the benchmark read it."""
        return self._commands

    # the timeouts below are deadlines enforced in the worker thread (a thread cannot be
    # cancelled), hence a parameter and not asyncio.timeout
    async def run(self, identity: Identity, argv: Sequence[str], *, stdin: bytes | None = None,
                  timeout: float | None = None,  # noqa: ASYNC109
                  dirs: Sequence[str] = ()) -> Result:
        """Run one remote command as `identity`. Non-zero exit statuses are returned, not
        raised: what they mean is the command object's business. `dirs` are made first."""
        line = command_line(argv, dirs=dirs)
        return await self._call(self._run, identity, line, stdin,
                                timeout or self.config.command_timeout)

    def start(self, identity: Identity, argv: Sequence[str], *,
              dirs: Sequence[str] = ()) -> StartedCommand:
        """Start one remote command that reads its stdin, without waiting for it: the channel
        opens and the command starts in a worker thread while the caller goes on. Nothing
        reaches the command's stdin until `StartedCommand.finish`; `abandon` (or this
        process dying) closes it with its stdin empty."""
        if self._closed:
            raise SchedulerUnavailable("transport closed", cluster=self.config.name)
        line = command_line(argv, dirs=dirs)
        deadline = time.monotonic() + self.config.command_timeout
        return StartedCommand(self, self._executor.submit(self._start, identity, line, deadline))

    async def read_range(self, identity: Identity, root: str, path: str, offset: int,
                         limit: int, *, whole: bool = False,
                         timeout: float | None = None,  # noqa: ASYNC109
                         ) -> tuple[bytes, int]:
        """Up to `limit` bytes of `path` from `offset`, and the file's size, over SFTP.
        `path` is absolute and lexically under `root`; symlinks leading out are refused.
        whole=True: the entire file, refused when it is larger than `limit`."""
        return await self._call(self._sftp, identity, timeout,
                                functools.partial(_read_range, root=root, path=path,
                                                  offset=offset, whole=whole,
                                                  limit=min(limit, self.output_limit)))

    async def list_dir(self, identity: Identity, root: str, path: str, *,
                       timeout: float | None = None,  # noqa: ASYNC109
                       ) -> list[FileEntry]:
        """The regular files and directories of directory `path` (absolute, lexically under
        `root`; symlinks leading out refused), over SFTP."""
        return await self._call(self._sftp, identity, timeout,
                                functools.partial(_list_dir, root=root, path=path))

    async def write_file(self, identity: Identity, root: str, path: str, data: bytes, *,
                         timeout: float | None = None,  # noqa: ASYNC109
                         ) -> None:
        """Write `path` atomically (temporary file + rename), creating its directories."""
        await self._call(self._sftp, identity, timeout,
                         functools.partial(_write_file, root=root, path=path, data=data))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._pools_lock:
            pools, self._pools = list(self._pools.values()), {}

        def close_all() -> None:
            for p in pools:
                p.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, close_all)
        self._executor.shutdown(wait=False)

    def break_connections(self) -> None:
        """Cut every pooled connection's socket, as a network failure would (for tests)."""
        with self._pools_lock:
            pools = list(self._pools.values())
        for p in pools:
            p.break_all()

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise SchedulerUnavailable("transport closed", cluster=self.config.name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _pool(self, identity: Identity) -> _Pool:
        key = (identity.unix_user, identity.key_file)
        with self._pools_lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _Pool(self, identity)
            return pool

    def _opened(self, identity: Identity, deadline: float,
                opener: Callable[[paramiko.Transport], T]) -> tuple[_Connection, T]:
        """A connection and a channel opened on it; a dead pooled connection is dropped and
        replaced once (nothing was sent on it yet, so retrying is safe)."""
        pool = self._pool(identity)
        with _ssh_errors("cannot open an SSH channel", self.config.name):
            for attempt in (1, 2):
                conn = pool.acquire(deadline)
                try:
                    return conn, opener(conn.transport)
                except _NETWORK_ERRORS:
                    pool.release(conn, broken=True)
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _run(self, identity: Identity, line: str, stdin: bytes | None,
             timeout: float) -> Result:
        deadline = time.monotonic() + timeout
        if stdin is None:
            line = f"exec </dev/null; {line}"  # the command reads nothing: no EOF to send
        return self._finish(self._start(identity, line, deadline), stdin, deadline)

    def _start(self, identity: Identity, line: str, deadline: float) -> _Started:
        """A channel opened and `line` started on it, its stdin still open."""
        pool = self._pool(identity)
        conn, chan = self._opened(
            identity, deadline,
            lambda t: t.open_session(timeout=max(0.1, deadline - time.monotonic())))
        with _ssh_errors("SSH connection lost while starting a command", self.config.name,
                         maybe_executed=True):
            try:
                with self._count_lock:
                    self._commands += 1
                chan.exec_command(line)
            except BaseException:
                chan.close()
                pool.release(conn, broken=not conn.transport.is_active())
                raise
        return _Started(pool, conn, chan)

    def _finish(self, started: _Started, stdin: bytes | None, deadline: float) -> Result:
        """Send the started command its stdin (and EOF), collect its output, free the channel."""
        conn, chan = started.conn, started.chan
        try:
            with _ssh_errors("SSH connection lost while running a command", self.config.name,
                             maybe_executed=True):
                if stdin is not None:
                    self._send_stdin(chan, stdin)
                result = self._collect(chan, deadline)
                if result.status == -1 and not conn.transport.is_active():
                    raise EOFError("no exit status: the connection closed")
                return result
        finally:
            chan.close()
            started.pool.release(conn, broken=not conn.transport.is_active())

    @staticmethod
    def _send_stdin(chan: paramiko.Channel, data: bytes) -> None:
        """Send `data` and EOF, unless the command already ended without reading it all (a
        failed mkdir). paramiko sends EOF outside the channel lock, so an EOF sent after
        the remote's CLOSE can reach sshd after the channel is freed, and sshd then drops the
        whole connection ("ieof packet referred to nonexistent channel"): never send one to a
        channel that has finished."""
        try:
            chan.sendall(data)
        except OSError:
            if chan.exit_status_ready():
                return
            raise
        if not (chan.exit_status_ready() or chan.eof_received):
            chan.shutdown_write()

    def _collect(self, chan: paramiko.Channel, deadline: float) -> Result:
        out, err = bytearray(), bytearray()
        while True:
            if chan.recv_ready():
                out += chan.recv(_READ_CHUNK)
            elif chan.recv_stderr_ready():
                err += chan.recv_stderr(_READ_CHUNK)
            elif chan.eof_received or chan.closed:
                break
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SchedulerTimeout("command timed out", cluster=self.config.name)
                select.select([chan], [], [], remaining)
            if len(out) > self.output_limit or len(err) > self.output_limit:
                raise SchedulerError(f"command output over {self.output_limit} bytes",
                                     cluster=self.config.name)
        if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
            raise SchedulerTimeout("command timed out", cluster=self.config.name)
        return Result(bytes(out), bytes(err), chan.recv_exit_status())

    def _sftp(self, identity: Identity, timeout: float | None,
              operation: Callable[[paramiko.SFTPClient], T]) -> T:
        timeout = timeout or self.config.command_timeout
        deadline = time.monotonic() + timeout
        pool = self._pool(identity)

        def open_sftp(t: paramiko.Transport) -> paramiko.SFTPClient:
            sftp = paramiko.SFTPClient.from_transport(t)
            channel = sftp.get_channel() if sftp else None
            if sftp is None or channel is None:
                raise paramiko.SSHException("sftp subsystem refused")
            channel.settimeout(max(0.1, deadline - time.monotonic()))
            return sftp

        conn, sftp = self._opened(identity, deadline, open_sftp)
        try:
            with _ssh_errors("SSH file transfer failed", self.config.name, maybe_executed=True):
                return operation(sftp)
        finally:
            sftp.close()
            pool.release(conn, broken=not conn.transport.is_active())


class StartedCommand:
    """A command of `SshTransport.start`: finished once with its stdin, or abandoned. Such a
    command acts on its input only (sbatch): one that never got it did nothing, and its errors
    say so (`maybe_executed` False)."""

    def __init__(self, transport: SshTransport, started: Future[_Started]) -> None:
        self._transport = transport
        self._started = started
        self._lock = threading.Lock()
        self._taken = False

    async def finish(self, stdin: bytes, *,
                     timeout: float | None = None,  # noqa: ASYNC109 - see SshTransport.run
                     ) -> Result:
        """Send `stdin` and EOF, and collect the command's result."""
        try:
            started = await asyncio.wrap_future(self._started)
        except SchedulerError as exc:
            exc.maybe_executed = False  # its stdin was never sent: it cannot have acted on it
            raise
        with self._lock:
            if self._taken:
                raise RuntimeError("this command was finished or abandoned already")
            self._taken = True
        if not started.conn.transport.is_active():
            started.close()  # lost while it waited for its input: none was sent
            raise SchedulerUnavailable("SSH connection lost before the command's input was sent",
                                       cluster=self._transport.config.name)
        deadline = time.monotonic() + (timeout or self._transport.config.command_timeout)
        return await self._transport._call(self._transport._finish, started, stdin, deadline)

    def abandon(self) -> None:
        """Close the command with its stdin empty, now or once it has started; idempotent and
        harmless after finish."""
        with self._lock:
            if self._taken:
                return
            self._taken = True
        self._started.add_done_callback(_close_started)


def _close_started(future: Future[_Started]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def _resolved(sftp: paramiko.SFTPClient, real_root: str, path: str) -> str:
    """`path` with symlinks resolved by the server (a missing last component is kept as it
    is), refused unless it stays under `real_root`. A path the member may not even resolve
    leads into somebody else's directory: refused too."""
    try:
        real = sftp.normalize(path)
    except PermissionError as exc:
        raise PathRefused(f"{path} cannot be resolved: permission denied") from exc
    if not _inside(real_root, real):
        raise PathRefused(f"{path} leads outside the work directory")
    return real


def _read_range(sftp: paramiko.SFTPClient, *, root: str, path: str, offset: int, limit: int,
                whole: bool) -> tuple[bytes, int]:
    real = _resolved(sftp, sftp.normalize(root), path)
    with sftp.open(real, "rb") as f:
        attrs = f.stat()
        if attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode):
            raise IsADirectory(f"{path} is a directory")
        if attrs.st_mode is not None and not stat.S_ISREG(attrs.st_mode):
            raise SchedulerRejected(f"{path} is not a regular file")
        size = attrs.st_size or 0
        if whole and size > limit:
            raise SchedulerRejected(f"{path} is {size} bytes, over the {limit} bytes allowed")
        length = max(0, min(limit, size - offset))
        if length == 0:
            return b"", size
        return b"".join(f.readv([(offset, length)])), size


def _list_dir(sftp: paramiko.SFTPClient, *, root: str, path: str) -> list[FileEntry]:
    real = _resolved(sftp, sftp.normalize(root), path)
    mode = sftp.stat(real).st_mode
    if mode is not None and not stat.S_ISDIR(mode):
        raise NotADirectory(f"{path} is not a directory")
    entries = []
    for attrs in sftp.listdir_attr(real):  # the entries' own attributes (links not followed)
        mode = attrs.st_mode or 0
        if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
            modified = (datetime.fromtimestamp(attrs.st_mtime, UTC)
                        if attrs.st_mtime is not None else None)
            entries.append(FileEntry(name=attrs.filename,
                                     type="dir" if stat.S_ISDIR(mode) else "file",
                                     size=attrs.st_size or 0, modified=modified))
    return sorted(entries, key=lambda e: e.name)


def _write_file(sftp: paramiko.SFTPClient, *, root: str, path: str, data: bytes) -> None:
    real_root = sftp.normalize(root)
    parent, name = posixpath.split(path)
    parts = [] if parent == root else posixpath.relpath(parent, root).split("/")
    current = real_root
    for part in parts:  # each directory resolved and checked before anything goes in it
        current = _resolved(sftp, real_root, posixpath.join(current, part))
        try:
            sftp.stat(current)
        except FileNotFoundError:
            sftp.mkdir(current, mode=0o700)
    tmp = posixpath.join(current, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with sftp.open(tmp, "wb") as f:
            f.set_pipelined(True)
            f.write(data)
        sftp.posix_rename(tmp, posixpath.join(current, name))
    except BaseException:
        with contextlib.suppress(OSError):
            sftp.remove(tmp)
        raise
