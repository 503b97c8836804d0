"""Passwords: argon2id hashing, with a dummy verification so unknown accounts cost the same
time, and the strength policy (zxcvbn's estimate of the guesses needed)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from consortium.errors import InvalidInput
from consortium.texts import Sentence, one_after_another, translatable

# argon2-cffi's defaults are RFC 9106's low-memory profile (argon2id, t=3, m=64 MiB, p=4).
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    # made on first use, not at import: hashing costs most of a second (every CLI start paid it)
    return _hasher.hash("hpcgw-no-such-account")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if the password matches. A missing hash still spends one full verification."""
    try:
        matched = _hasher.verify(password_hash or _dummy_hash(), password)
        return matched and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


# zxcvbn scores 0-4; 3 means about 10^8 guesses or more ("safely unguessable" against an
# online attack, and slow against an offline one on argon2id).
MIN_STRENGTH = 3
# zxcvbn refuses longer input (its matching grows fast with length): a longer password is
# judged by its first characters, so a weak start is refused however it goes on.
_ESTIMATED_LENGTH = 72


def zxcvbn(password: str, user_inputs: list[str]) -> dict[str, Any]:
    """zxcvbn's estimate; its module imported on first use: its dictionaries would otherwise
    take ~12 MiB of every process (each worker), for the rare request that sets a password."""
    from zxcvbn import zxcvbn as estimate  # type: ignore[import-untyped]  # no type information

    result: dict[str, Any] = estimate(password, user_inputs=user_inputs)
    return result


_NO_ADVICE = translatable("add a few unrelated words.")
# zxcvbn's advice (its feedback.py), marked for the catalogues: the pages translate it
_ADVICE = frozenset({
    translatable("Capitalization doesn't help very much."),
    translatable("Dates are often easy to guess."),
    translatable("No need for symbols, digits, or uppercase letters."),
    translatable("Recent years are easy to guess."),
    translatable("Reversed words aren't much harder to guess."),
    translatable("Use a few words, avoid common phrases."),
    translatable("A word by itself is easy to guess."),
    translatable("Add another word or two. Uncommon words are better."),
    translatable("Avoid dates and years that are associated with you."),
    translatable("Avoid recent years."),
    translatable("Avoid repeated words and characters."),
    translatable("Avoid sequences."),
    translatable("Avoid years that are associated with you."),
    translatable("Common names and surnames are easy to guess."),
    translatable("Names and surnames by themselves are easy to guess."),
    translatable('Repeats like "aaa" are easy to guess.'),
    translatable('Sequences like "abc" or "6543" are easy to guess.'),
    translatable("Short keyboard patterns are easy to guess."),
    translatable("Straight rows of keys are easy to guess."),
    translatable("This is a top-10 common password."),
    translatable("This is a top-100 common password."),
    translatable("This is a very common password."),
    translatable("This is similar to a commonly used password."),
    translatable("Use a longer keyboard pattern with more turns."),
})


def weakness(password: str, user_inputs: Sequence[str] = ()) -> str | None:
    """Why the password is too easy to guess (the estimator's own advice), or None.

    `user_inputs` are the account's own words (email, name): a password made of them is weak.
    """
    words = [w for text in user_inputs for w in (text, *re.split(r"[\W_]+", text)) if w]
    estimate = zxcvbn(password[:_ESTIMATED_LENGTH], user_inputs=words)
    if estimate["score"] >= MIN_STRENGTH:
        return None
    feedback = estimate["feedback"]
    advice = [Sentence(part) if part in _ADVICE else part
              for part in (feedback["warning"], *feedback["suggestions"]) if part]
    return Sentence("this password is too easy to guess: %(advice)s",
                    advice=one_after_another(advice or [Sentence(_NO_ADVICE)]))


class WeakPassword(InvalidInput):
    """A password too easy to guess, answered as a validation error of the request's
    `password` field (422, like the schema's own checks)."""

    code = "validation"
    title = translatable("Validation failed")

    def __init__(self, problem: str) -> None:
        super().__init__(problem, errors=[{"loc": ["body", "password"], "msg": problem,
                                           "type": "weak_password"}])


def require_strong(password: str, user_inputs: Sequence[str]) -> None:
    """Raise WeakPassword unless the password is hard to guess, the account's own words
    (`user_inputs`: its email and name) counted among the guesses."""
    problem = weakness(password, user_inputs)
    if problem is not None:
        raise WeakPassword(problem)
