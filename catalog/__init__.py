"""The sellers' configuration: one schema (`schema`: its types), validated (`validate`: errors by key), applied in one
transaction (`apply`), and the snapshot the edge and the workers read (`snapshot`). `ops apply`
and, next, the seller panel both go through here."""

from catalog.apply import account_for, apply, owned
from catalog.schema import ConfigError, ConfigFile, discounted
from catalog.validate import account_of, duration_seconds, load, parse, read

__all__ = [
    "ConfigError",
    "ConfigFile",
    "account_for",
    "account_of",
    "apply",
    "discounted",
    "duration_seconds",
    "load",
    "owned",
    "parse",
    "read",
]
