"""Webhook secrets: made, sealed for storage, and used to sign each attempt.

The signature is `sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`: the timestamp inside
what is signed lets a receiver refuse old replays (docs/webhooks.md shows the check).

The secret must be kept to sign, so it cannot be stored hashed like a token: it is sealed with
AES-GCM under a key derived from the gateway's `secret_key` (a database dump alone reveals no
secret). Changing `secret_key` makes the stored secrets unreadable: recreate the subscriptions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_SEALED_VERSION = "v1."
_NONCE_BYTES = 12
_CONTEXT = b"hpcgw webhook secret"


class SecretUnreadable(Exception):
    """A sealed secret that the current key cannot open (the secret key was changed)."""


def new_secret(nbytes: int) -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(nbytes)


def hint(secret: str) -> str:
    """What the API shows of a secret after its creation: enough to tell two apart."""
    return "..." + secret[-4:]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _key(secret_key: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_CONTEXT).derive(secret_key.encode())


def seal(secret: str, secret_key: str) -> str:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(_key(secret_key)).encrypt(nonce, secret.encode(), _CONTEXT)
    return _SEALED_VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(sealed: str, secret_key: str) -> str:
    if not sealed.startswith(_SEALED_VERSION):
        raise SecretUnreadable("unknown sealing format")
    raw = base64.urlsafe_b64decode(sealed.removeprefix(_SEALED_VERSION))
    try:
        opened = AESGCM(_key(secret_key)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                                  _CONTEXT)
    except InvalidTag:
        raise SecretUnreadable("the secret cannot be opened with the current secret_key "
                               "(was it changed?); recreate the webhook") from None
    return opened.decode()
