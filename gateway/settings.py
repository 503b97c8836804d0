"""Settings from HPCGW_* environment variables and an optional TOML file (HPCGW_CONFIG)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.jobs.config import JobsSettings
from gateway.secret_files import secret_files_source
from gateway.webhooks.config import WebhookSettings
from schedulers.config import ClusterConfig

# Placeholders people copy from examples; refused outside demo mode.
DEFAULT_SECRETS = frozenset({"", "changeme", "changethis", "secret", "demo"})
MIN_SECRET_LENGTH = 32


class SmtpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str
    port: int = 587
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = True
    sender: str = "hpcgw@localhost"
    timeout: float = 10.0


class OidcSettings(BaseModel):
    """An external identity provider whose bearer tokens the gateway accepts."""

    model_config = ConfigDict(extra="forbid")

    issuer: str
    audience: str
    jwks_url: str
    algorithms: list[str] = ["RS256", "ES256", "PS256", "EdDSA"]
    jwks_min_refetch_seconds: float = 60.0
    leeway_seconds: int = 30
    # match on a verified email first, then on the subject stored on the user
    email_claim: str = "email"
    # the web sign-in (authorization code with PKCE), offered when authorization_url is set;
    # the ID token it returns is checked as a bearer token, so its audience is client_id
    authorization_url: str | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None


class LoginThrottleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_seconds: int = 900
    max_failures_per_account: int = 5
    max_failures_per_address: int = 20
    base_block_seconds: int = 30
    max_block_seconds: int = 900  # a block never lasts longer: nobody is locked out for good


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HPCGW_", env_nested_delimiter="__", extra="forbid"
    )

    demo: bool = False
    data_dir: Path = Path("hpcgw-data")
    database_url: str = ""  # empty: SQLite in data_dir
    secret_key: SecretStr = SecretStr("")
    base_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    access_token_ttl: timedelta = timedelta(minutes=15)
    refresh_token_ttl: timedelta = timedelta(days=14)
    invitation_ttl: timedelta = timedelta(days=7)
    log_level: str = "INFO"
    log_json: bool = True
    trusted_proxies: list[str] = []  # X-Forwarded-For is believed only from these addresses
    # Cap of a request body, counted as it is read (uploads have jobs.file_max_bytes instead).
    # The largest legitimate body is a template: 1 MiB of source and 1 MiB of files, which JSON
    # escaping makes larger.
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1)
    smtp: SmtpSettings | None = None
    oidc: OidcSettings | None = None
    login_throttle: LoginThrottleSettings = LoginThrottleSettings()
    clusters: list[ClusterConfig] = Field(default_factory=list)
    jobs: JobsSettings = JobsSettings()
    webhooks: WebhookSettings = WebhookSettings()
    # the transparency report (/api/v1/reports/transparency, its page) without signing in
    public_transparency_report: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = os.environ.get("HPCGW_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings,
                                                     secret_files_source(settings_cls)]
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.demo:
            secret = self.secret_key.get_secret_value()
            if secret.lower() in DEFAULT_SECRETS or len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"HPCGW_SECRET_KEY must be set to a random value of at least "
                    f"{MIN_SECRET_LENGTH} characters outside demo mode "
                    "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
                )
        names = [c.name for c in self.clusters]
        if len(set(names)) != len(names):
            raise ValueError("cluster names must be unique")
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'hpcgw.db').resolve()}"

    def cluster(self, name: str) -> ClusterConfig | None:
        return next((c for c in self.clusters if c.name == name), None)

    def masked(self) -> dict[str, Any]:
        """The effective configuration with every secret masked (for `hpcgw config show`)."""
        data = self.model_dump(mode="json")
        data["database_url"] = _mask_url(self.effective_database_url)
        return data


def _mask_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
