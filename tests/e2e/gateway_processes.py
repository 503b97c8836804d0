"""The gateway as a real process (gateway_process.py under uvicorn) on the test's database:
for the fault, outage and replica tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from e2e_helpers import wait_for
from server_process import free_port

from gateway.db import Database
from gateway.settings import Settings

HERE = Path(__file__).resolve().parent


class GatewayProcess:
    """gateway_process.py under uvicorn on a port of its own, on the test's database."""

    def __init__(self, settings: Settings, database: Database, log: Path, *,
                 die_after_sbatch: bool = False, **jobs: Any) -> None:
        data = settings.model_copy(update={
            "database_url": database.url,
            "jobs": settings.jobs.model_copy(update=jobs)}).model_dump(mode="json")
        data["secret_key"] = settings.secret_key.get_secret_value()
        self.env = {**os.environ, "HPCGW_E2E_SETTINGS": json.dumps(data),
                    "HPCGW_E2E_DIE_AFTER_SBATCH": "1" if die_after_sbatch else "0"}
        self.port = free_port()
        self.log = log
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    @contextmanager
    def running(self) -> Iterator[GatewayProcess]:
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / "gateway_process.py"), str(self.port)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_for("the gateway answers /healthz", self._ready, within=60)
                yield self
            finally:
                if self.process.poll() is None:
                    self.process.terminate()
                    try:
                        self.process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        self.process.kill()
                        self.process.wait(timeout=10)
                self.client.close()

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the gateway exited:\n{self.log.read_text()}")
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()
                if line.startswith("{\"sbatch_returned\"")]
