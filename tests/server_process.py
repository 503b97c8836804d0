"""A gateway command (`hpcgw serve|demo`, or a test's own server script) as a real process on a
free port, its output in a log file; bounded waits only."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pid_gone(pid: int) -> bool:
    """The process has ended: no such pid, or a zombie (its state follows the command's
    parenthesis in /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


class ServerProcess:
    """`COMMAND ARGS --port P` (the hpcgw console script, or python and a script) with its
    output in a log file."""

    def __init__(self, command: str, args: list[str], env: dict[str, str], log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen([command, *args, "--port", str(port)], env=env,
                                            stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exited early:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not healthy within {START_TIMEOUT} s:\n{self.output()}")

    def stop(self) -> None:
        """SIGTERM, then a graceful shutdown: uvicorn finishes, then re-raises the signal."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            raise
        assert status in (0, -signal.SIGTERM), self.output()
        assert "Application shutdown complete" in self.output(), self.output()
