"""Dependencies of the routes, as Annotated aliases: the one place a route gets what it needs."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from consortium.audit import RequestContext
from consortium.authz import Principal
from gateway.auth.principal import authenticate
from gateway.db import Database
from gateway.settings import Settings

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]


def get_session(request: Request, database: DatabaseDep) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error.
    Writing requests take SQLite's write lock up front (see gateway.db)."""
    with database.session(write=request.method not in _READ_METHODS) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]


def client_address(request: Request, settings: Settings) -> str | None:
    """The client's address; X-Forwarded-For is believed only from a configured proxy."""
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    if peer and forwarded and settings.trusted_proxies:
        try:
            trusted = any(ip_address(peer) in ip_network(n) for n in settings.trusted_proxies)
        except ValueError:
            trusted = False
        if trusted:
            return forwarded.split(",")[-1].strip() or peer
    return peer


def get_context(request: Request, settings: SettingsDep) -> RequestContext:
    return RequestContext(
        request_id=getattr(request.state, "request_id", None),
        client_addr=client_address(request, settings),
    )


ContextDep = Annotated[RequestContext, Depends(get_context)]


def get_principal(
    request: Request, session: SessionDep, settings: SettingsDep
) -> Principal:
    return authenticate(request, session, settings)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
