"""`hpcgw login` and `hpcgw logout`: a password (asked, never echoed), the OIDC device flow
(RFC 8628) when the gateway trusts a provider, or a personal access token; one profile per
gateway, kept by gateway.cli.profiles and renewed silently by gateway.cli.client."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated, Any

import httpx
import typer

from gateway.cli import profiles
from gateway.cli.client import API, DEFAULT_URL, CliError, Exit, Gateway, reports_errors
from gateway.cli.output import JsonOption, ProfileOption, emit_json, note
from gateway.cli.profiles import Kind, Profile

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_SCOPES = "openid email offline_access"


@reports_errors
def login(
    url: Annotated[str | None, typer.Argument(
        help="The gateway (default: the profile's, else HPCGW_URL, else the local demo).")]
    = None,
    *,
    profile: ProfileOption = None,
    email: Annotated[str | None, typer.Option("--email", "-u", help="Asked if not given.")]
    = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from stdin (scripts).")] = False,
    token: Annotated[bool, typer.Option(
        "--token", help="Paste a personal access token (asked, never echoed) instead.")]
    = False,
    device: Annotated[bool, typer.Option(
        "--device", help="Log in at the gateway's OIDC provider (device flow).")] = False,
    json_: JsonOption = False,
) -> None:
    """Log in to a gateway and keep the tokens in the profile (0600); the refresh token renews
    the session silently until it expires or `hpcgw logout`."""
    name = profiles.selected(profile)
    known = profiles.load().profiles.get(name)
    base = (url or (known.url if known else None) or _env_url()).rstrip("/")
    pending = Gateway(Profile(url=base, kind=Kind.session, access_token=""), None)
    try:
        if token:
            secret = _secret("Personal access token", password_stdin)
            pending.profile = Profile(url=base, kind=Kind.pat, access_token=secret)
        elif device:
            _device_flow(pending)
        else:
            who = email or (known.email if known and not url else None) or typer.prompt("Email")
            secret = _secret("Password", password_stdin)
            answer = pending.send("POST", f"{API}/auth/token", data={
                "grant_type": "password", "username": who, "password": secret})
            pending.check(answer)
            pending.accept_tokens(answer.json())
        me = pending.call("GET", f"{API}/me")
    finally:
        pending.close()
    pending.profile.email = me["email"]
    path = profiles.store(name, pending.profile, make_default=True)
    if json_:
        emit_json({"profile": name, "url": base, "email": me["email"], "kind": pending.profile.kind,
                   "file": str(path)})
        return
    note(f"Logged in to {base} as {me['email']} (profile {name}, {path}).")


def _env_url() -> str:
    return os.environ.get("HPCGW_URL", DEFAULT_URL)


def _secret(prompt: str, from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    value: str = typer.prompt(prompt, hide_input=True)
    return value


def _device_flow(pending: Gateway) -> None:
    """RFC 8628 against the provider the gateway trusts: show the code, poll for the tokens."""
    methods = pending.send("GET", f"{API}/auth/config")
    pending.check(methods)
    issuer, client_id = methods.json().get("oidc_issuer"), methods.json().get("oidc_client_id")
    if not issuer or not client_id:
        raise CliError(f"{pending.profile.url} has no OIDC provider: log in with a password "
                       "or --token", Exit.usage)
    discovery = _provider(pending, "GET", f"{issuer.rstrip('/')}/.well-known/openid-configuration")
    if "device_authorization_endpoint" not in discovery:
        raise CliError(f"the provider {issuer} offers no device flow", Exit.usage)
    started = _provider(pending, "POST", discovery["device_authorization_endpoint"],
                        data={"client_id": client_id, "scope": DEVICE_SCOPES})
    where = started.get("verification_uri_complete") or started["verification_uri"]
    note(f"Open {where} and enter the code {started['user_code']}.")
    interval = float(started.get("interval", 5))
    deadline = time.monotonic() + float(started.get("expires_in", 600))
    while time.monotonic() < deadline:
        time.sleep(interval)
        answer = pending.send("POST", discovery["token_endpoint"], data={
            "grant_type": DEVICE_GRANT, "device_code": started["device_code"],
            "client_id": client_id})
        if answer.status_code == 200:
            pending.profile = Profile(url=pending.profile.url, kind=Kind.oidc, access_token="",
                                      token_endpoint=discovery["token_endpoint"],
                                      client_id=client_id)
            pending.accept_tokens(answer.json())
            return
        error = _json(answer).get("error")
        if error == "slow_down":
            interval += 5  # RFC 8628 section 3.5
        elif error != "authorization_pending":
            raise CliError(f"the provider refused the login: {error or answer.status_code}",
                           Exit.auth)
    raise CliError("the code expired before the login was confirmed", Exit.auth)


def _provider(pending: Gateway, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    answer = pending.send(method, url, **kwargs)
    if answer.status_code >= 400:
        raise CliError(f"the OIDC provider answered {answer.status_code} at {url}", Exit.auth)
    return _json(answer)


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@reports_errors
def logout(profile: ProfileOption = None, json_: JsonOption = False) -> None:
    """End the profile's login at the gateway (its refresh token stops working) and forget
    its tokens."""
    name = profiles.selected(profile)
    gone = profiles.remove(name)
    if gone is None:
        raise CliError(f"no profile {name!r} to log out of", Exit.not_found)
    if gone.kind is Kind.session and gone.refresh_token:
        client = Gateway(gone, None)
        try:
            client.send("POST", f"{API}/auth/logout",
                         data={"refresh_token": gone.refresh_token})
        except CliError as exc:
            note(f"the gateway was not told ({exc}); the tokens are forgotten here")
        finally:
            client.close()
    if json_:
        emit_json({"profile": name, "url": gone.url, "logged_out": True})
        return
    note(f"Logged out of {gone.url} (profile {name}).")
