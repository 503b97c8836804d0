"""API shapes of the credentials: token responses, personal access tokens, the caller."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from consortium.authz import Scope
from consortium.bounds import Id, WithinCalendar
from consortium.models import MemberStatus, Role
from consortium.schemas import Name


class TokenResponse(BaseModel):
    """RFC 6749 section 5.1, what OAuth2 clients (and /docs "Authorize") expect."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a token type, not a secret
    expires_in: int = Field(description="seconds the access token is valid")
    refresh_token: str = Field(description="single use: each refresh returns a new one")


class PersonalTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[Name, Field(max_length=100)]
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    member_id: Id | None = Field(
        default=None, description="confine the token to one of your members"
    )
    expires_in_days: int | None = Field(default=None, ge=1, le=365)
    expires_at: Annotated[datetime, WithinCalendar] | None = Field(
        default=None, description="at most a year ahead")

    @model_validator(mode="after")
    def _one_expiry(self) -> Self:
        if self.expires_in_days is not None and self.expires_at is not None:
            raise ValueError("give expires_in_days or expires_at, not both")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone offset")
        return self


class PersonalTokenOut(BaseModel):
    """A token as listed: never its secret, only the prefix to recognise it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    display_prefix: str
    scopes: list[Scope]
    member_id: int | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class PersonalTokenCreated(PersonalTokenOut):
    token: str = Field(description="the token itself, shown this once only")


class MeMembership(BaseModel):
    member_id: int
    member_slug: str
    member_name: str
    member_status: MemberStatus
    role: Role


class MeOut(BaseModel):
    id: int
    email: str
    name: str
    is_admin: bool
    memberships: list[MeMembership]
    scopes: list[Scope] = Field(description="the scopes the credential of this request holds: "
                                "its own, within what your roles (or admin flag) allow")
    via: str = Field(description="session, pat or oidc")
    token_member_id: int | None = None
