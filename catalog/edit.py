"""An account's configuration edited one object at a time, as the file's tables: the one layer the
seller panel's forms and the HTTP API share. Every save goes through the file's validation (a
`ConfigError` names the key, relative to the object: `offers[1].price`) and the file's apply (one
transaction, audited, a version bump: served within CONFIG_POLL_SECONDS).

Credentials are write-only for a browser or an API client: `masked` replaces them with their last
four characters, and `unmasked` takes a masked value sent back as "keep the stored one"."""

from __future__ import annotations

from typing import Any

from catalog.apply import apply, owned
from catalog.export import bot_table, gateway_table, pool_table
from catalog.schema import ConfigError
from catalog.snapshot import load_bots, load_gateways, load_pools
from catalog.validate import parse
from db.audit import MASK, is_secret, masked
from db.models import Account, Bot, Gateway, Pool

__all__ = ["MASK", "bot", "gateway", "gateways", "is_secret", "masked", "pool", "pools", "relative", "save", "unmasked"]


def unmasked(given: Any, stored: Any) -> Any:
    """A masked value sent back as it was read ("…abcd") stands for the stored one."""
    if isinstance(given, dict) and isinstance(stored, dict):
        return {k: unmasked(v, stored.get(k)) for k, v in given.items()}
    if isinstance(given, list) and isinstance(stored, list) and len(given) == len(stored):
        return [unmasked(g, s) for g, s in zip(given, stored, strict=True)]
    if isinstance(given, str) and given.startswith(MASK) and isinstance(stored, str) and stored.endswith(given[1:]):
        return stored
    return given


def bot(account: Account, bot_id: str) -> dict[str, Any] | None:
    """The account's bot as the file's table (credentials in clear: for the server only), or None."""
    config = load_bots(_owned(Bot, account, [bot_id])).get(bot_id)
    return bot_table(config) if config is not None else None


def gateway(account: Account, gateway_id: str) -> dict[str, Any] | None:
    config = load_gateways(_owned(Gateway, account, [gateway_id])).get(gateway_id)
    return gateway_table(config) if config is not None else None


def gateways(account: Account) -> list[dict[str, Any]]:
    """Every gateway of the account, by id, as the file's tables (one read)."""
    return [gateway_table(g) for _, g in sorted(load_gateways(_owned(Gateway, account)).items())]


def pool(account: Account, pool_id: str) -> dict[str, Any] | None:
    config = load_pools(_owned(Pool, account, [pool_id])).get(pool_id)
    return pool_table(config) if config is not None else None


def pools(account: Account) -> list[dict[str, Any]]:
    return [pool_table(p) for _, p in sorted(load_pools(_owned(Pool, account)).items())]


def _owned(model: Any, account: Account, ids: list[str] | None = None) -> list[str]:
    """The account's objects of `model` (among `ids`, when given)."""
    query = model.select(model.id).where(model.account == account.id)
    if ids is not None:
        query = query.where(model.id.in_(ids))
    return [row.id for row in query]


def save(account: Account, actor: str, *, gateways: list[dict[str, Any]] | None = None,
         bots: list[dict[str, Any]] | None = None, pools: list[dict[str, Any]] | None = None) -> list[str]:  # fmt: skip
    """Validate and apply these tables into the account (as a file naming it would be); the changes
    made. A `ConfigError` names the first bad key (`bots[0].offers[1].price`) and nothing is written."""
    known_gateways, known_bots = owned(account)
    document: dict[str, Any] = {"account": account.slug}
    for name, tables in (("gateways", gateways), ("bots", bots), ("pools", pools)):
        if tables:
            document[name] = tables
    return apply(parse(document, known_gateways, known_bots), actor=actor)


def relative(error: ConfigError, prefix: str) -> ConfigError:
    """The error with its key relative to the one object saved (`bots[0].offers[1].price` → `offers[1].price`)."""
    if not error.key.startswith(prefix):
        return error
    key = error.key.removeprefix(prefix).lstrip(".")
    return ConfigError(key, str(error).split(": ", 1)[-1])
