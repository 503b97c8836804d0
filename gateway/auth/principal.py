from __future__ import annotations

from fastapi import Request
from sqlalchemy.orm import Session

from consortium.authz import Principal
from consortium.errors import Unauthenticated
from gateway.settings import Settings


def authenticate(request: Request, session: Session, settings: Settings) -> Principal:
    raise Unauthenticated("not implemented yet")
