"""Applying a parsed configuration into its account: every gateway, bot, offer and pool upserted in
one transaction, offers no longer named deactivated (never deleted: charges point at them), and the
version bumped when anything changed, so running processes reload within CONFIG_POLL_SECONDS.
Another account's gateway, bot or pool id, or another account's bot token, is refused by key and
nothing is written."""

from __future__ import annotations

from typing import Any

from catalog.schema import ConfigError, ConfigFile
from catalog.snapshot import channel_settings, selling_doc
from db import audit
from db.database import transaction, utcnow
from db.models import DEFAULT_ACCOUNT, Account, Bot, ConfigState, Gateway, Offer, Pool


class _Audited:
    """Upserts that write the audit log: who (`actor`) changed which object of the account, before
    and after (only the fields that changed; secrets masked)."""

    def __init__(self, account: Account, actor: str) -> None:
        self.account, self.actor = account, actor

    def upsert(self, model: Any, where: Any, values: dict[str, Any], create: dict[str, Any], obj: str) -> str:
        """Create or update the row: created | updated | unchanged."""
        row = model.get_or_none(where)
        if row is None:
            model.create(**create, **values)
            self.record("created", obj, None, values)
            return "created"
        before = {name: getattr(row, name) for name, value in values.items() if getattr(row, name) != value}
        if not before:
            return "unchanged"
        model.update(**values, updated_at=utcnow()).where(where).execute()
        self.record("updated", obj, before, {name: values[name] for name in before})
        return "updated"

    def record(self, outcome: str, obj: str, before: Any, after: Any) -> None:
        audit.record(f"{obj.split()[0]} {outcome}", account=self.account, actor=self.actor, obj=obj, before=before,
                     after=after)  # fmt: skip


def bump_version() -> None:
    """Every running process reloads its snapshot within CONFIG_POLL_SECONDS (call inside the
    transaction of the change)."""
    ConfigState.update(version=ConfigState.version + 1, updated_at=utcnow()).where(ConfigState.id == 1).execute()


def account_for(slug: str | None) -> Account:
    """The account a configuration applies into: the one it names, or `default` (made when missing)."""
    if slug is None:
        account, _ = Account.get_or_create(slug=DEFAULT_ACCOUNT)
        return account
    account = Account.get_or_none(Account.slug == slug)
    if account is None:
        raise ConfigError("account", f"no account {slug!r} (the operator creates it: ops accounts create)")
    return account


def owned(account: Account) -> tuple[set[str], set[str]]:
    """The ids of the account's gateways and bots, which its files may refer to without defining."""
    gateways = {g.id for g in Gateway.select(Gateway.id).where(Gateway.account == account.id)}
    bots = {b.id for b in Bot.select(Bot.id).where(Bot.account == account.id)}
    return gateways, bots


def _refuse_others(config: ConfigFile, account: Account) -> None:
    """Ids and bot tokens that another account holds: refused, naming the key."""
    files: tuple[tuple[str, Any, list[str]], ...] = (
        ("gateways", Gateway, [g.id for g in config.gateways]),
        ("bots", Bot, [b.id for b in config.bots]),
        ("pools", Pool, [p.id for p in config.pools]),
    )
    for where, model, ids in files:
        others = model.account.is_null() | (model.account != account.id)
        taken = {row.id for row in model.select(model.id).where(model.id.in_(ids or [""]) & others)}
        for i, item_id in enumerate(ids):
            if item_id in taken:
                raise ConfigError(f"{where}[{i}].id", f"{item_id!r} belongs to another account")
    tokens = {b.token: i for i, b in enumerate(config.bots) if b.token}
    if tokens:
        for row in Bot.select(Bot.id, Bot.token).where(Bot.account.is_null() | (Bot.account != account.id)):
            if row.token in tokens:
                raise ConfigError(f"bots[{tokens[row.token]}].token", "is the token of another account's bot")


def apply(config: ConfigFile, actor: str = "ops apply") -> list[str]:
    """Upsert everything into the file's account in one transaction, each change in the audit log
    under `actor`. Returns one line per change; none when nothing changed. Raises ConfigError (and
    writes nothing) for another account's ids."""
    changes: list[str] = []
    with transaction():
        account = account_for(config.account)
        _refuse_others(config, account)
        audited = _Audited(account, actor)
        for g in config.gateways:
            values: dict[str, Any] = {"kind": g.kind, "webhook_secret": g.webhook_secret, "settings": g.settings}
            outcome = audited.upsert(Gateway, Gateway.id == g.id, values, {"id": g.id, "account": account.id},
                                     f"gateway {g.id}")  # fmt: skip
            if outcome != "unchanged":
                changes.append(f"{outcome} gateway {g.id}")
        for b in config.bots:
            values = {
                "token": b.token,
                "username": b.username,
                "webhook_secret": b.webhook_secret,
                "gateway_id": b.gateway_id,
                "pixel_id": b.pixel_id,
                "pixel_access_token": b.pixel_access_token,
                "pixel_test_event_code": b.pixel_test_event_code,
                "utmify_token": b.utmify_token,
                "tiktok_pixel_code": b.tiktok_pixel_code,
                "tiktok_access_token": b.tiktok_access_token,
                "welcome_text": b.welcome_text,
                "welcome_media_url": b.welcome_media_url,
                "texts": b.texts,
                "charge_minutes": b.charge_minutes,
                "send_qr": b.send_qr,
                "selling": selling_doc(b),
                "channel": b.channel,
                "channel_settings": channel_settings(b),
            }
            outcome = audited.upsert(Bot, Bot.id == b.id, values, {"id": b.id, "account": account.id}, f"bot {b.id}")
            if outcome != "unchanged":
                changes.append(f"{outcome} bot {b.id}")
            for position, o in enumerate(b.offers):
                values = {
                    "label": o.label,
                    "price": o.price,
                    "delivery_text": o.delivery_text,
                    "delivery_link": o.delivery_link,
                    "delivery_chat_id": o.delivery_chat_id,
                    "position": position,
                    "active": True,
                    "hidden": o.hidden,
                    "bump_slug": o.bump,
                    "duration_seconds": o.duration_seconds,
                    "join_by_request": o.join_by_request,
                }
                where = (Offer.bot == b.id) & (Offer.slug == o.slug)
                outcome = audited.upsert(Offer, where, values, {"bot": b.id, "slug": o.slug}, f"offer {b.id}/{o.slug}")
                if outcome != "unchanged":
                    offer_id = Offer.select(Offer.id).where(where).scalar()
                    changes.append(f"{outcome} offer {b.id}/{o.slug} (button buy:{offer_id})")
            kept = [o.slug for o in b.offers]
            stale = Offer.select().where((Offer.bot == b.id) & Offer.active & Offer.slug.not_in(kept or [""]))
            for offer in stale:
                # Deactivated, not deleted: charges and deliveries keep pointing at it.
                Offer.update(active=False, updated_at=utcnow()).where(Offer.id == offer.id).execute()
                audited.record("deactivated", f"offer {b.id}/{offer.slug}", {"active": True}, {"active": False})
                changes.append(f"deactivated offer {b.id}/{offer.slug}")
        for p in config.pools:
            outcome = audited.upsert(Pool, Pool.id == p.id, {"members": [list(m) for m in p.members]},
                                     {"id": p.id, "account": account.id}, f"pool {p.id}")  # fmt: skip
            if outcome != "unchanged":
                changes.append(f"{outcome} pool {p.id} (GET /p/{p.id})")
        if changes:
            bump_version()
    return changes
