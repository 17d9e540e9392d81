"""The sellers' configuration: one schema (`schema`: its types), validated (`validate`: errors by key), applied in one
transaction (`apply`), and the snapshot the edge and the workers read (`snapshot`). `ops apply`
and, next, the seller panel both go through here."""

from catalog.apply import apply
from catalog.schema import ConfigError, ConfigFile, discounted
from catalog.validate import duration_seconds, load, parse

__all__ = ["ConfigError", "ConfigFile", "apply", "discounted", "duration_seconds", "load", "parse"]
