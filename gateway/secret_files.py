"""Secrets read from files named in the environment: HPCGW_SECRET_KEY_FILE=/run/secrets/key
sets `secret_key` from that file, so that a secret never sits in the environment of the
process or in the configuration file (compose secrets, systemd credentials, Kubernetes
secrets are files). Only the settings listed here: other names ending in _FILE are paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, InitSettingsSource

# the variable -> the setting's path in Settings
SECRET_FILES: dict[str, tuple[str, ...]] = {
    "HPCGW_SECRET_KEY_FILE": ("secret_key",),
    "HPCGW_DATABASE_URL_FILE": ("database_url",),
    # one underscore: HPCGW_SMTP__* variables are all read as fields of `smtp`
    "HPCGW_SMTP_PASSWORD_FILE": ("smtp", "password"),
    "HPCGW_OIDC_CLIENT_SECRET_FILE": ("oidc", "client_secret"),
}


def secret_files_source(settings_cls: type[BaseSettings]) -> InitSettingsSource:
    """The secrets of the files named in the environment, its trailing newline dropped; an
    unreadable file raises OSError (`hpcgw` says which)."""
    values: dict[str, Any] = {}
    for variable, path in SECRET_FILES.items():
        file = os.environ.get(variable)
        if not file:
            continue
        *parents, name = path
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[name] = Path(file).read_text(encoding="utf-8").rstrip("\r\n")
    return InitSettingsSource(settings_cls, init_kwargs=values)
