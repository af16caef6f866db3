"""Passwords for browser sign-in, hashed with a maintained library (pwdlib, Argon2)."""

from __future__ import annotations

from pwdlib import PasswordHash
from pwdlib.exceptions import PwdlibError

_HASHER = PasswordHash.recommended()

MIN_PASSWORD_LENGTH = 12


def hash_password(password: str) -> str:
    """An Argon2id hash of `password`, with its salt and parameters."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Whether `password` matches; a user without a password never signs in."""
    if not password_hash:
        # Spend the same time as a real check, so a missing account is not detectable by timing.
        _HASHER.verify(password, _DUMMY_HASH)
        return False
    try:
        return _HASHER.verify(password, password_hash)
    except (PwdlibError, ValueError):
        return False  # a hash this library cannot read (hand-edited, or another scheme) never matches


_DUMMY_HASH = _HASHER.hash("a password that nobody has, used for timing only")
