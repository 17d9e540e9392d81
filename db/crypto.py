"""Encryption at rest for credentials (bot tokens, gateway keys, webhook secrets), keyed by SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from peewee import TextField


@lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"grimbots:credentials:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _current() -> Fernet:
    import settings

    return _fernet(settings.SECRET_KEY)


def _any_key() -> MultiFernet:
    """SECRET_KEY first, then SECRET_KEY_FALLBACKS: what was encrypted before a rotation still reads."""
    import settings

    return MultiFernet([_fernet(key) for key in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)])


def encrypt(value: str) -> str:
    return _current().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _any_key().decrypt(token.encode()).decode()
    except InvalidToken:
        # Never echo the stored value: it is a credential.
        raise ValueError("stored credential cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS") from None


class EncryptedField(TextField):
    """A text column whose value is a Fernet token; Python sees the plaintext."""

    def db_value(self, value: str | None) -> str | None:
        return None if value is None else encrypt(value)

    def python_value(self, value: str | None) -> str | None:
        return None if value is None else decrypt(value)


class EncryptedJSONField(TextField):
    """Encrypted JSON object: a gateway's kind-specific credentials and settings."""

    def db_value(self, value: dict[str, Any] | None) -> str | None:
        return None if value is None else encrypt(json.dumps(value, sort_keys=True))

    def python_value(self, value: str | None) -> dict[str, Any] | None:
        return None if value is None else json.loads(decrypt(value))
