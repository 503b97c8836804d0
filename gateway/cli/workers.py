"""`hpcgw serve --workers N`: N worker processes, each accepting on a listening socket of its
own, all bound to the same address with SO_REUSEPORT, so that the kernel spreads the new
connections evenly across the workers.

uvicorn's own supervisor gives its workers one shared socket: when a burst of clients connects
at once, the first worker to wake accepts them all and keeps them (keep-alive) while the other
idles. Measured with bench/edge.py (50 clients listing jobs, 2 workers), one worker took 99% of
the load and served 468 pages/s on PostgreSQL, where an even split served 851. Its workers also
re-ran the `hpcgw` script on start (multiprocessing's spawn), importing the command line.

Each worker here is `python -m gateway.api.worker FD SUPERVISOR`. This process keeps every
socket open: a worker that dies is started again on its socket, and the connections queued on
it meanwhile wait for the new worker instead of being reset. A worker ends with this process,
however this process ends (gateway.api.worker.end_with).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

from uvicorn.config import STARTUP_FAILURE

from gateway.api.worker import GRACEFUL_SHUTDOWN_SECONDS
from gateway.logging import log

CHECK_SECONDS = 0.5  # how often dead workers are looked for
BACKLOG = 2048  # uvicorn's default


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening on host:port (port 0: one free port for all of them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # without it every answer waited ~40 ms for the client's delayed ACK; Linux gives
            # accepted connections the listener's option
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def supervise(host: str, port: int, workers: int) -> None:
    """Serve with `workers` processes until SIGINT or SIGTERM, then stop them gracefully (each
    finishes its requests in flight, up to GRACEFUL_SHUTDOWN_SECONDS)."""
    try:
        sockets = listening_sockets(host, port, workers)
    except OSError as exc:
        log.error("cannot listen", host=host, port=port, error=str(exc))
        sys.exit(1)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def start(sock: socket.socket) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "gateway.api.worker", str(sock.fileno()),
                                 str(os.getpid())], pass_fds=(sock.fileno(),))

    processes = [start(sock) for sock in sockets]
    log.info("serving", address=f"{host}:{sockets[0].getsockname()[1]}", workers=workers,
             pids=[p.pid for p in processes])
    failed = False
    while not stop.wait(CHECK_SECONDS):
        for index, process in enumerate(processes):
            code = process.poll()
            if code is None:
                continue
            if code == STARTUP_FAILURE:  # the app cannot start here: no other worker would
                log.error("a worker failed to start; stopping", pid=process.pid)
                failed = True
                stop.set()
                break
            log.warning("a worker ended; starting another", pid=process.pid, exitcode=code)
            processes[index] = start(sockets[index])
    for process in processes:
        if process.poll() is None:
            process.terminate()  # SIGTERM: uvicorn's graceful shutdown
    for process in processes:
        try:
            process.wait(timeout=GRACEFUL_SHUTDOWN_SECONDS + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for sock in sockets:
        sock.close()
    if failed:
        sys.exit(STARTUP_FAILURE)
