"""Sellers' passwords: Argon2id (argon2-cffi's defaults, RFC 9106's second recommended parameters),
rehashed at login when those parameters change; at least 12 characters (OWASP ASVS 2.1.1) and none
of the 10,000 most common (accounts/common-passwords.txt)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASHER = PasswordHasher()
MIN_LENGTH = 12
MAX_LENGTH = 256  # hashing a megabyte on every guess is a denial of service
COMMON = Path(__file__).resolve().parent / "common-passwords.txt"
# Verified against when no account has the e-mail: a wrong e-mail costs the same time as a wrong password.
_DUMMY = HASHER.hash("no account has this e-mail, and nobody logs in with it")


@cache
def _common() -> frozenset[str]:
    lines = COMMON.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("# "))


def problem(password: str, email: str | None = None) -> str | None:
    """Why a new password is refused (in the seller's Portuguese), or None."""
    if len(password) < MIN_LENGTH:
        return f"A senha precisa de pelo menos {MIN_LENGTH} caracteres."
    if len(password) > MAX_LENGTH:
        return f"A senha pode ter no máximo {MAX_LENGTH} caracteres."
    if password.lower() in _common() or (email and password.lower() == email.lower()):
        return "Essa senha é comum demais: escolha outra."
    return None


def hashed(password: str) -> str:
    return HASHER.hash(password)


def check(stored: str | None, password: str) -> tuple[bool, str | None]:
    """(does it match, the new hash to store when the parameters changed)."""
    try:
        HASHER.verify(stored or _DUMMY, password[:MAX_LENGTH])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    if stored is None:
        return False, None
    return True, (HASHER.hash(password) if HASHER.check_needs_rehash(stored) else None)
