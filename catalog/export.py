"""An account's configuration written back as the file `ops apply` takes (CONTRACT §14): the same
keys, offers by slug, delays as durations, prices as decimal strings, downsells at their price.
Applying what this writes changes nothing (tests/accounts/test_export.py holds it to that)."""

from __future__ import annotations

from typing import Any

from catalog.schema import BotConfig, FollowupConfig, GatewayConfig, OfferConfig, PoolConfig
from catalog.snapshot import channel_settings, load_bots, load_gateways, load_pools
from db.models import Account, Bot, Gateway, Pool

UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def duration(seconds: int) -> str:
    """Seconds as the file writes them, in the largest unit that divides them ("3d", "90s")."""
    unit, size = next((u, n) for u, n in UNITS if seconds % n == 0)
    return f"{seconds // size}{unit}"


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != "" and v is not False}


def gateway_table(g: GatewayConfig) -> dict[str, Any]:
    return {"id": g.id, "kind": g.kind, "webhook_secret": g.webhook_secret, **g.settings}


def offer_table(o: OfferConfig) -> dict[str, Any]:
    return _given(id=o.slug, label=o.label, price=str(o.price), delivery_text=o.delivery_text,
                  delivery_link=o.delivery_link, delivery_chat_id=o.delivery_chat_id, hidden=o.hidden, bump=o.bump,
                  duration=duration(o.duration_seconds) if o.duration_seconds else None,
                  join_by_request=o.join_by_request)  # fmt: skip


def _followup(f: FollowupConfig) -> dict[str, Any]:
    common = _given(delay=duration(f.delay_seconds) if f.delay_seconds else "0s", text=f.text, media_url=f.media_url,
                    offer=f.offer)  # fmt: skip
    if f.kind == "upsell":
        return {"after_offer": f.after_offer, **common}
    return {"when": f.when, **common, "price": str(f.price)}


def bot_table(b: BotConfig) -> dict[str, Any]:
    table: dict[str, Any] = {"id": b.id}
    if b.whatsapp is None:
        table.update(token=b.token, username=b.username, webhook_secret=b.webhook_secret)
    else:
        table["channel"] = b.channel
        table.update(channel_settings(b) or {})
    table.update(_given(gateway=b.gateway_id, pixel_id=b.pixel_id, pixel_access_token=b.pixel_access_token,
                        pixel_test_event_code=b.pixel_test_event_code, utmify_token=b.utmify_token,
                        tiktok_pixel_code=b.tiktok_pixel_code, tiktok_access_token=b.tiktok_access_token))  # fmt: skip
    table["welcome"] = _given(text=b.welcome_text, media_url=b.welcome_media_url)
    table["checkout"] = {"expires_minutes": b.charge_minutes, "send_qr": b.send_qr}
    if b.texts:
        table["texts"] = dict(b.texts)
    if b.remind_before:
        table["subscriptions"] = {"remind_before": [duration(s) for s in b.remind_before]}
    if b.bumps:
        table["bumps"] = {slug: _given(text=t.text, accept=t.accept, decline=t.decline) for slug, t in b.bumps.items()}
    if b.offers:
        table["offers"] = [offer_table(o) for o in b.offers]
    if b.upsells:
        table["upsells"] = [_followup(f) for f in b.upsells]
    if b.downsells:
        table["downsells"] = [_followup(f) for f in b.downsells]
    return table


def pool_table(p: PoolConfig) -> dict[str, Any]:
    return {"id": p.id, "bots": [{"bot": bot, "weight": weight} for bot, weight in p.members]}


def document(account: Account) -> dict[str, Any]:
    """The account's gateways, bots (their active offers) and pools, as a configuration file's tables."""
    mine = Gateway.account == account.id
    gateway_ids = {g.id for g in Gateway.select(Gateway.id).where(mine)}
    bot_ids = {b.id for b in Bot.select(Bot.id).where(Bot.account == account.id)}
    pool_ids = {p.id for p in Pool.select(Pool.id).where(Pool.account == account.id)}
    doc: dict[str, Any] = {"account": account.slug}
    gateways = [gateway_table(g) for _, g in sorted(load_gateways(gateway_ids).items())]
    bots = [bot_table(b) for _, b in sorted(load_bots(bot_ids).items())]
    pools = [pool_table(p) for _, p in sorted(load_pools(pool_ids).items())]
    for name, tables in (("gateways", gateways), ("bots", bots), ("pools", pools)):
        if tables:
            doc[name] = tables
    return doc
