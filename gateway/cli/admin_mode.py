"""How `hpcgw admin` reaches the consortium.

By default over the API, with the person's own login (the researcher's profiles: `hpcgw login`,
`--profile`, or HPCGW_URL with HPCGW_TOKEN): the audit trail names that person, and the
gateway's host and database need not be reachable. `--local` opens the database on the gateway
host instead, for bootstrapping the first administrator and for emergencies: its actions are
audited as the operating-system user who ran them ("os:root")."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.cli.client import CliError, Gateway, gateway
from gateway.cli.runtime import fail


@dataclass
class Mode:
    # the quota groups invoked on their own (not under `hpcgw admin`) keep the host's database
    local: bool = True
    profile: str | None = None


MODE = Mode()


def local_actor() -> str:
    """The audit's actor of a --local command: who is logged in on the host."""
    return f"os:{getpass.getuser()}"


@contextmanager
def remote() -> Iterator[Gateway]:
    """The gateway of the selected profile; an API refusal ends the command in one line."""
    try:
        with gateway(MODE.profile) as client:
            yield client
    except CliError as exc:
        fail(str(exc), int(exc.code))


def needs_local(command: str) -> None:
    """Refuse, over the API, a command only the gateway host runs: `quotas sync|drift`, the
    host's periodic work that waits on every cluster longer than an HTTP request should."""
    if not MODE.local:
        fail(f"`hpcgw admin {command}` runs on the gateway host: add --local "
             "(`hpcgw admin --local ...`)", 2)
