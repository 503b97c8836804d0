"""Secrets from files: HPCGW_<NAME>_FILE names the file of a secret setting (compose secrets,
systemd credentials), for the secrets only; the environment's own value wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Settings

KEY = "k" * 48


def test_secrets_are_read_from_their_files(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    (tmp_path / "url").write_text("postgresql+psycopg://hpcgw:pw@db/hpcgw\n")
    (tmp_path / "smtp").write_text("mail password\n")
    monkeypatch.setenv("HPCGW_SECRET_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("HPCGW_DATABASE_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("HPCGW_SMTP__HOST", "mail.example.org")
    monkeypatch.setenv("HPCGW_SMTP_PASSWORD_FILE", str(tmp_path / "smtp"))
    settings = Settings()
    assert settings.secret_key.get_secret_value() == KEY
    assert settings.database_url == "postgresql+psycopg://hpcgw:pw@db/hpcgw"
    assert settings.smtp is not None and settings.smtp.host == "mail.example.org"
    assert settings.smtp.password is not None
    assert settings.smtp.password.get_secret_value() == "mail password"

    monkeypatch.setenv("HPCGW_SECRET_KEY", "e" * 40)  # the environment's value comes first
    assert Settings().secret_key.get_secret_value() == "e" * 40


def test_an_unreadable_secret_file_is_named(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCGW_SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        Settings()
