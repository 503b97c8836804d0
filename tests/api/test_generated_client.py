"""A client generated from the OpenAPI document by openapi-python-client, with no warning, logs
in, reads who it is, quotes, submits, follows and reads a job on a live gateway (`hpcgw demo`,
whose local cluster runs the job on this machine)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from server_process import ServerProcess

RESEARCHER = "karim.haddad@lirmm-ai.example.org"
PROJECT = "lirmm-ai/llm-occitan"
PACKAGE = "hpcgw_client"
SCRIPT = ("#!/bin/bash\n#SBATCH --partition=cpu\n#SBATCH --mem=512M\n#SBATCH --time=5\n"
          "mkdir -p results && echo 42 > results/answer.txt\n"
          "echo hello from the generated client\n")
JOB_WITHIN = 30.0


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[ServerProcess]:
    """`hpcgw demo` on a data directory of its own, every HPCGW_* of the tests left out."""
    hpcgw = shutil.which("hpcgw", path=str(Path(sys.executable).parent))
    assert hpcgw, "hpcgw is not installed in this environment: pip install -e ."
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCGW_")}
    server = ServerProcess(hpcgw, ["demo", "--data-dir", str(tmp_path / "data")], env,
                           tmp_path / "server.log")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _generate(document: dict[str, Any], where: Path) -> ModuleType:
    """The client package generated from `document` and imported; no warning allowed."""
    spec = where / "openapi.json"
    spec.write_text(json.dumps(document))
    bin_dir = str(Path(sys.executable).parent)  # the generator formats with this ruff
    done = subprocess.run(
        [str(Path(bin_dir) / "openapi-python-client"), "generate", "--path", str(spec),
         "--output-path", str(where / PACKAGE), "--meta", "none", "--fail-on-warning"],
        capture_output=True, text=True, timeout=120, cwd=where, check=False,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(where))
    return importlib.import_module(PACKAGE)


@pytest.fixture
def generated(tmp_path: Path, gateway: ServerProcess) -> Iterator[ModuleType]:
    document = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    try:
        yield _generate(document, tmp_path)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_generated_client_logs_in_submits_follows_and_reads_a_job(
        gateway: ServerProcess, generated: ModuleType, tmp_path: Path) -> None:
    models = _api("models")
    password = json.loads((tmp_path / "data" / "demo-credentials.json").read_text())[RESEARCHER]
    anonymous = generated.Client(base_url=gateway.url, raise_on_unexpected_status=True)
    login = _api("api.auth.auth_token").sync(client=anonymous, body=models.BodyAuthToken(
        grant_type=models.BodyAuthTokenGrantType.PASSWORD, username=RESEARCHER,
        password=password))
    assert isinstance(login, models.TokenResponse), login
    client = generated.AuthenticatedClient(base_url=gateway.url, token=login.access_token,
                                           raise_on_unexpected_status=True)

    me = _api("api.auth.me_get").sync(client=client)
    assert isinstance(me, models.MeOut), me
    assert me.email == RESEARCHER
    assert [(m.member_slug, m.role) for m in me.memberships] == [
        ("lirmm-ai", models.Role.RESEARCHER)]

    body = models.JobCreate(project=PROJECT, name="generated", script=SCRIPT)
    quote = _api("api.jobs.jobs_quote").sync(client=client, body=body)
    assert isinstance(quote, models.JobQuote), quote
    assert (quote.partition, quote.resources["mem_mb"], quote.fits) == ("cpu", 512, True)

    job = _api("api.jobs.jobs_submit").sync(client=client, body=body)
    assert isinstance(job, models.JobDetail), job
    assert (job.name, job.quote_msu) == ("generated", quote.quote_msu)

    get_job = _api("api.jobs.jobs_get")
    deadline = time.monotonic() + JOB_WITHIN
    while job.state not in (models.JobState.COMPLETED, models.JobState.FAILED):
        assert time.monotonic() < deadline, f"job still {job.state}"
        time.sleep(0.3)
        job = get_job.sync(job.id, client=client)
        assert isinstance(job, models.JobDetail), job
    assert job.state == models.JobState.COMPLETED, job.detail

    output = _api("api.jobs.jobs_output").sync(job.id, client=client)
    assert isinstance(output, models.OutputOut), output
    assert (output.data, output.complete) == ("hello from the generated client\n", True)
    listing = _api("api.jobs.jobs_files_list").sync(job.id, client=client, path="results")
    assert isinstance(listing, models.FileListing), listing
    assert [(e.name, e.type_, e.size) for e in listing.entries] == [
        ("answer.txt", models.FileEntryOutType.FILE, 3)]
