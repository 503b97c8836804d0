"""The name a process writes on the rows it claims (the tracker's cluster leases, the webhook
worker's delivery claims): unique per process, readable by an operator."""

from __future__ import annotations

import os
import secrets
import socket


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
