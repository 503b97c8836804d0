"""Personal access tokens of the caller: minted with scopes, shown once, listed, revoked."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path

from consortium import tokens
from consortium.base import utcnow
from consortium.bounds import Id
from gateway.api.deps import Caller, ContextDep, SessionDep
from gateway.api.errors import problems
from gateway.api.schemas import Page
from gateway.auth.schemas import PersonalTokenCreate, PersonalTokenCreated, PersonalTokenOut

router = APIRouter(prefix="/me/tokens", tags=["auth"])


@router.post("", operation_id="tokens-create", status_code=201, response_model=PersonalTokenCreated,
             responses=problems(401, 403, 409, 422))
def create_token(
    body: PersonalTokenCreate, principal: Caller, session: SessionDep,
    context: ContextDep,
) -> PersonalTokenCreated:
    """Mint a token. Its scopes cannot exceed your roles (403); the `token` field of this
    answer is the only time the token is shown."""
    now = utcnow()
    if body.expires_at is not None:
        expires_at = body.expires_at
    else:
        days = body.expires_in_days
        expires_at = now + (timedelta(days=days) if days else tokens.DEFAULT_PAT_LIFETIME)
    token, plain = tokens.create_personal_token(
        session, principal, name=body.name, scopes=body.scopes, member_id=body.member_id,
        expires_at=expires_at, now=now, context=context,
    )
    return PersonalTokenCreated(
        **PersonalTokenOut.model_validate(token).model_dump(), token=plain
    )


@router.get("", operation_id="tokens-list", response_model=Page[PersonalTokenOut],
            responses=problems(401))
def list_tokens(principal: Caller, session: SessionDep) -> Page[PersonalTokenOut]:
    """Your tokens not revoked (at most 100), oldest first; never their secret."""
    return Page[PersonalTokenOut](items=[
        PersonalTokenOut.model_validate(t)
        for t in tokens.list_personal_tokens(session, principal.user_id)
    ])


@router.delete("", operation_id="tokens-revoke-all", status_code=204, responses=problems(401))
def revoke_all_tokens(
    principal: Caller, session: SessionDep, context: ContextDep
) -> None:
    """Revoke every one of your tokens, from the next request on."""
    tokens.revoke_personal_tokens(session, principal, token_id=None, now=utcnow(),
                                  context=context)


@router.delete("/{token_id}", operation_id="tokens-revoke", status_code=204,
               responses=problems(401, 404))
def revoke_token(
    token_id: Annotated[Id, Path()],
    principal: Caller,
    session: SessionDep,
    context: ContextDep,
) -> None:
    """Revoke one of your tokens, from the next request on."""
    tokens.revoke_personal_tokens(session, principal, token_id=token_id, now=utcnow(),
                                  context=context)
