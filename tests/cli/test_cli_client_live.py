"""The researcher's commands against a live `hpcgw demo` (its local cluster runs the jobs as
processes): login, refresh and logout with the profile's file mode; #SBATCH lines honoured and
the command line winning; `--wait`'s exit status; `logs --follow` as lines are written;
`--json` parsing; every exit status."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import ServerProcess
from typer.testing import CliRunner, Result

from gateway.cli import app, profiles

LOGIN = re.compile(r"^\s+(admin|manager|researcher)\s+\S+\s+(\S+@\S+)\s+(\S+)$", re.MULTILINE)
KARIM = "karim.haddad@lirmm-ai.example.org"  # lirmm-ai's researcher
THOMAS = "thomas.vidal@occitanie-robotics.example.org"
ADMIN = "admin@consortium.example.org"
PROJECT = "lirmm-ai/llm-occitan"


class Demo:
    def __init__(self, server: ServerProcess, logins: dict[str, str]) -> None:
        self.url = server.url
        self.logins = logins

    def token(self, email: str) -> str:
        answer = httpx.post(f"{self.url}/api/v1/auth/token", timeout=10, data={
            "grant_type": "password", "username": email, "password": self.logins[email]})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])


@pytest.fixture(scope="module")
def demo(hpcgw: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    home = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCGW_")}
    server = ServerProcess(hpcgw, ["demo", "--data-dir", str(home / "data")], env,
                           home / "server.log")
    try:
        server.wait_healthy()
        logins = {email: password for _, email, password in LOGIN.findall(server.output())}
        yield Demo(server, logins)
    finally:
        server.stop()


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("HPCGW_RETRIES", "1")
    return home


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


def login(demo: Demo, email: str = KARIM, *extra: str) -> Result:
    done = run("login", demo.url, "-u", email, "--password-stdin", *extra,
                 input=demo.logins[email] + "\n")
    assert done.exit_code == 0, done.output
    return done


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def script(tmp_path: Path, text: str, name: str = "train.sh") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_login_keeps_a_0600_profile_renews_silently_and_logout_ends_the_login(
        demo: Demo, config_home: Path) -> None:
    typed = run("login", demo.url, input=f"{KARIM}\n{demo.logins[KARIM]}\n")
    assert typed.exit_code == 0, typed.output
    assert demo.logins[KARIM] not in typed.output  # asked, never echoed
    path = config_home / "hpcgw" / profiles.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    first = profiles.load().profiles["default"]
    assert (first.kind, first.email, first.url) == (profiles.Kind.session, KARIM, demo.url)

    first.expires_at = time.time() - 1  # the access token has expired: renewed on the next call
    profiles.store("default", first, make_default=True)
    listed = run("jobs", "--json")
    assert listed.exit_code == 0, listed.output
    assert isinstance(as_json(listed), list)
    renewed = profiles.load().profiles["default"]
    assert renewed.refresh_token != first.refresh_token
    assert renewed.access_token != first.access_token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    out = run("logout")
    assert out.exit_code == 0, out.output
    assert "default" not in profiles.load().profiles
    reused = httpx.post(f"{demo.url}/api/v1/auth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": renewed.refresh_token})
    assert reused.status_code == 401
    after = run("jobs")
    assert after.exit_code == 6 and "hpcgw login" in after.stderr


def test_profiles_reach_several_gateways_and_a_token_login_works(
        demo: Demo, config_home: Path) -> None:
    login(demo, KARIM, "--profile", "lab")
    created = run("tokens", "create", "ci", "-s", "jobs:read", "-s", "jobs:write",
                    "--days", "1", "--json", "--profile", "lab")
    assert created.exit_code == 0, created.output
    token = as_json(created)["token"]
    with_token = run("login", demo.url, "--token", "--profile", "ci", input=token + "\n")
    assert with_token.exit_code == 0, with_token.output
    assert token not in with_token.output
    assert profiles.load().profiles["ci"].kind is profiles.Kind.pat
    assert profiles.load().default == "ci"
    me = run("tokens", "list", "--json", "--profile", "lab")
    assert [t["name"] for t in as_json(me)] == ["ci"]
    revoked = run("tokens", "revoke", str(as_json(created)["id"]), "--profile", "lab")
    assert revoked.exit_code == 0, revoked.output
    refused = run("jobs", "--profile", "ci")
    assert refused.exit_code == 6, refused.output


def test_sbatch_lines_are_honoured_and_the_command_line_wins(
        demo: Demo, config_home: Path, tmp_path: Path) -> None:
    login(demo)
    path = script(tmp_path, "#!/bin/bash\n#SBATCH --time=00:07:00\n#SBATCH -c 2\n"
                            "#SBATCH --mem=512M\n#SBATCH -p cpu\n#SBATCH -J from-script\n"
                            "echo hi\n")

    before = len(as_json(run("jobs", "--json")))
    quoted = run("submit", path, "-A", PROJECT, "--dry-run", "--json")
    assert quoted.exit_code == 0, quoted.output
    quote = as_json(quoted)["quote"]
    assert quote["resources"]["time_limit_minutes"] == 7
    assert (quote["resources"]["cpus_per_task"], quote["resources"]["mem_mb"]) == (2, 512)
    assert "job" not in as_json(quoted)
    assert len(as_json(run("jobs", "--json"))) == before  # a dry run submits nothing

    submitted = run("submit", path, "-A", PROJECT, "--json")
    job = first = as_json(submitted)["job"]
    assert job["name"] == "from-script"
    assert {k: job["resources"][k] for k in ("time_limit_minutes", "cpus_per_task", "mem_mb",
                                             "partition")} == {
        "time_limit_minutes": 7, "cpus_per_task": 2, "mem_mb": 512, "partition": "cpu"}

    over = run("submit", path, "-A", PROJECT, "-c", "3", "-t", "4", "--mem", "1G",
                 "-J", "cli", "--json")
    job = as_json(over)["job"]
    assert (job["name"], job["resources"]["cpus_per_task"],
            job["resources"]["time_limit_minutes"], job["resources"]["mem_mb"]) == (
        "cli", 3, 4, 1024)

    table = run("jobs")
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "PROJECT", "USER", "STATE", "ELAPSED", "QUOTE_SU",
                              "CHARGE_SU"]
    mine = [r for r in rows if r.split()[0] in (first["id"], job["id"])]
    assert len(mine) == 2 and all(PROJECT in r and KARIM in r for r in mine)


def test_wait_exits_with_the_jobs_outcome(demo: Demo, config_home: Path,
                                          tmp_path: Path) -> None:
    login(demo)
    ok = run("submit", script(tmp_path, "#!/bin/bash\necho done\n"), "-A", PROJECT,
               "-p", "cpu", "--mem", "100M", "-t", "1", "--wait", "--json")
    assert ok.exit_code == 0, ok.output
    assert as_json(ok)["job"]["state"] == "completed"
    failing = run("submit", script(tmp_path, "#!/bin/bash\nexit 3\n", "fail.sh"), "-A",
                    PROJECT, "-p", "cpu", "--mem", "100M", "-t", "1", "--wait")
    assert failing.exit_code == 1, failing.output
    assert "failed (exit 3)" in failing.stderr
    job_id = re.search(r"Submitted job ([0-9a-f]{12})", failing.stdout)
    assert job_id is not None
    shown = run("status", job_id[1], "--json")
    assert (as_json(shown)["state"], as_json(shown)["exit_code"]) == ("failed", 3)


def test_logs_follow_prints_each_line_as_it_is_written(
        demo: Demo, config_home: Path, tmp_path: Path, hpcgw: str) -> None:
    login(demo)
    submitted = run("submit", script(tmp_path, "#!/bin/bash\necho one\nsleep 4\necho two\n"
                                               "sleep 4\necho three\n"),
                      "-A", PROJECT, "-p", "cpu", "--mem", "100M", "-t", "1", "--json")
    job_id = as_json(submitted)["job"]["id"]
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
    follower = subprocess.Popen([hpcgw, "logs", job_id, "--follow"], env=env,
                                stdout=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    seen = [(line.strip(), time.monotonic()) for line in follower.stdout]
    assert follower.wait(timeout=30) == 0
    assert [line for line, _ in seen] == ["one", "two", "three"]
    assert seen[2][1] - seen[1][1] > 2.5  # printed as written, not all at the end


def test_every_refusal_has_its_exit_status_and_one_line(
        demo: Demo, config_home: Path, tmp_path: Path) -> None:
    login(demo)
    refused = run("submit", script(tmp_path, "#!/bin/bash\n#SBATCH --exclusive\necho\n"),
                    "-A", PROJECT)
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1 and "line 2: #SBATCH --exclusive" in refused.stderr
    too_long = run("submit", script(tmp_path, "#!/bin/bash\necho\n"), "-A", PROJECT,
                     "-p", "cpu", "--mem", "1G", "-t", "2-00")
    assert too_long.exit_code == 2
    assert too_long.stderr == ("error: Validation failed: resources.time_limit_minutes: at "
                               "most 1440 minutes on partition cpu\n")
    assert run("submit", "--no-such-option").exit_code == 2
    missing = run("status", "000000000000")
    assert (missing.exit_code, missing.stderr) == (4, "error: Not found: no job 000000000000\n")
    assert run("cancel", "000000000000").exit_code == 4
    assert run("jobs", "--profile", "nowhere").exit_code == 6

    login(demo, THOMAS, "--profile", "robotics")
    admin = {"Authorization": f"Bearer {demo.token(ADMIN)}"}
    members = f"{demo.url}/api/v1/members/occitanie-robotics"
    allocation = httpx.get(f"{members}/allocations", headers=admin, timeout=10).json()[0]
    usage = as_json(run("usage", "--json", "--profile", "robotics"))
    taken = httpx.post(f"{members}/allocations/{allocation['id']}/adjustments", headers=admin,
                       timeout=10, json={"amount_msu": -usage["available"]["msu"] + 10,
                                         "reason": "test: almost nothing left"})
    assert taken.status_code == 201, taken.text
    quota = run("submit", script(tmp_path, "#!/bin/bash\necho\n"), "-A",
                  "occitanie-robotics/" + _a_project(demo, THOMAS), "-p", "cpu", "--mem", "1G",
                  "-t", "60", "--profile", "robotics")
    assert quota.exit_code == 3, quota.output
    assert "available 0.010 SU" in quota.stderr

    env = {"HPCGW_TOKEN": "whatever", "HPCGW_URL": "http://127.0.0.1:9"}
    unreachable = CliRunner().invoke(app, ["jobs"], env=env)
    assert unreachable.exit_code == 5 and "cannot reach" in unreachable.stderr
    bad_token = CliRunner().invoke(app, ["jobs"], env={**env, "HPCGW_URL": demo.url})
    assert bad_token.exit_code == 6


def _a_project(demo: Demo, email: str) -> str:
    auth = {"Authorization": f"Bearer {demo.token(email)}"}
    projects = httpx.get(f"{demo.url}/api/v1/members/occitanie-robotics/projects",
                         headers=auth, timeout=10).json()
    return str(projects[0]["slug"])


def test_files_go_up_and_a_jobs_files_are_listed_and_come_down(
        demo: Demo, config_home: Path, tmp_path: Path) -> None:
    login(demo)
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    put = run("files", "put", str(data), "inputs/data.csv", "--json")
    assert put.exit_code == 0, put.output
    assert as_json(put)["size"] == 8
    ran = run("submit", script(tmp_path, "#!/bin/bash\nmkdir -p out\n"
                                           "wc -l < ../inputs/data.csv > out/lines.txt\n"),
                "-A", PROJECT, "-p", "cpu", "--mem", "100M", "-t", "1", "--wait", "--json",
                "-D", "run1")
    assert ran.exit_code == 0, ran.output
    job_id = as_json(ran)["job"]["id"]
    listing = run("files", "ls", job_id, "--json")
    assert listing.exit_code == 0, listing.output
    assert {"name": "out", "type": "dir"}.items() <= next(
        e for e in as_json(listing)["entries"] if e["name"] == "out").items()
    got = run("files", "get", job_id, "out/lines.txt", "-o", "-")
    assert (got.exit_code, got.stdout) == (0, "2\n")
    usage = run("usage")
    assert usage.exit_code == 0 and "SU available" in usage.stdout


def test_the_device_flow_is_refused_where_the_gateway_trusts_no_provider(
        demo: Demo, config_home: Path) -> None:
    methods = httpx.get(f"{demo.url}/api/v1/auth/config", timeout=10).json()
    assert methods == {"password": True, "oidc_issuer": None, "oidc_client_id": None}
    device = run("login", demo.url, "--device")
    assert device.exit_code == 2
    assert device.stderr == (f"error: {demo.url} has no OIDC provider: log in with a password "
                             "or --token\n")
    assert not (config_home / "hpcgw" / profiles.FILE_NAME).exists()


def test_a_template_runs_with_its_parameters_given_as_name_value(
        demo: Demo, config_home: Path, tmp_path: Path) -> None:
    login(demo)
    hello = tmp_path / "hello.sh"
    hello.write_text("echo hello $1 from the template\n")
    assert run("files", "put", str(hello), "tools/hello.sh").exit_code == 0
    ran = run("submit", "--template", "generic-script", "-p", "script=tools/hello.sh",
              "-P", "interpreter=sh", "-A", PROJECT, "-p", "cpu", "--mem", "100M", "-t", "1",
              "--wait", "--json")
    assert ran.exit_code == 0, ran.output
    job = as_json(ran)["job"]
    assert (job["template"]["slug"], job["parameters"]) == (
        "generic-script", {"script": "tools/hello.sh", "interpreter": "sh"})
    assert run("logs", job["id"]).stdout.endswith("\nhello from the template\n")
