"""The scheduler layer's Prometheus metrics: remote commands and SSH pools.

Defined in this layer, which may not import the gateway; gateway.metrics serves them with the
others. Labels are the cluster's configured name and the command's class: a bounded set.
Gauges are summed over the processes in prometheus-client's multiprocess mode (`livesum`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge

from schedulers.errors import SchedulerError

REMOTE_COMMANDS = Counter(
    "hpcgw_remote_commands", "Commands run on a cluster (sbatch, squeue, sacct...).",
    ["cluster", "command"])
REMOTE_COMMAND_FAILURES = Counter(
    "hpcgw_remote_command_failures",
    "Commands run on a cluster that ended in a scheduler error, by the error's class.",
    ["cluster", "command", "error"])
SSH_CHANNELS_IN_USE = Gauge(
    "hpcgw_ssh_channels_in_use", "SSH channels (commands, file transfers) open now.",
    ["cluster"], multiprocess_mode="livesum")
SSH_CONNECTIONS_OPEN = Gauge(
    "hpcgw_ssh_connections_open", "Pooled SSH connections open now.",
    ["cluster"], multiprocess_mode="livesum")
SSH_CONNECT_FAILURES = Counter(
    "hpcgw_ssh_connect_failures", "SSH connections that could not be opened (network, "
    "host key, authentication).", ["cluster"])


@contextmanager
def remote_command(cluster: str, command: object) -> Iterator[None]:
    """Count one run of `command` (a command object: its class names it) and its failure."""
    name = type(command).__name__
    REMOTE_COMMANDS.labels(cluster, name).inc()
    try:
        yield
    except SchedulerError as exc:
        REMOTE_COMMAND_FAILURES.labels(cluster, name, type(exc).__name__).inc()
        raise
