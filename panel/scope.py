"""The one scoping layer of the panel: every query a page makes goes through the logged-in account's
`Scope`, so another account's objects are never read, whatever id a URL or a form carries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import settings
from catalog import edit
from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db.database import utcnow
from db.models import Account, AuditEntry, Bot, Broadcast, Charge, Gateway, Lead, Offer, Pool, Subscription
from panel.shared import PANEL
from reports import funnel as funnel_report
from reports import payments as payments_report
from reports import selling as selling_report


class NotFound(LookupError):
    """Not this account's (or not there at all): the page answers 404 and says nothing more."""


@dataclass(frozen=True)
class Scope:
    account: Account

    @property
    def operator(self) -> bool:
        return bool(self.account.role == "operator")

    def bot_ids(self) -> list[str]:
        return sorted(b.id for b in Bot.select(Bot.id).where(Bot.account == self.account.id))

    def bots(self) -> list[BotConfig]:
        """The account's bots as the running platform serves them (the snapshot, reloaded when a
        change bumped its version: one tiny query otherwise)."""
        PANEL.catalog.refresh()
        return [b for bid in self.bot_ids() if (b := PANEL.catalog.bot(bid)) is not None]

    def bot(self, bot_id: str) -> BotConfig:
        if bot_id not in self.bot_ids():
            raise NotFound(bot_id)
        PANEL.catalog.refresh()
        bot = PANEL.catalog.bot(bot_id)
        if bot is None:
            raise NotFound(bot_id)
        return bot

    def funnel(self, days: int, by: str = "bot", bot: str | None = None) -> list[funnel_report.Row]:
        """The funnel of the account's bots (or of its `bot`) over its last `days`, grouped `by`."""
        return funnel_report.report(by, since_days=days, bots=self._only(bot))

    def over_time(self, by: str, days: int, bot: str | None = None) -> dict[str | None, list[funnel_report.Row]]:
        return funnel_report.over_time(by, since_days=days, bots=self._only(bot))

    def _only(self, bot: str | None) -> list[str]:
        return [self.bot(bot).id] if bot else self.bot_ids()

    def charges(self, bot: str | None, state: str | None, limit: int = 100,
                since: dt.datetime | None = None) -> list[payments_report.ChargeLine]:  # fmt: skip
        if bot:
            self.bot(bot)  # 404 when not this account's
        return payments_report.recent(bot=bot or None, status=state or None, since=since, limit=limit,
                                      bots=self.bot_ids())  # fmt: skip

    @staticmethod
    def bot_id_taken(bot_id: str) -> bool:
        return bool(Bot.select().where(Bot.id == bot_id).exists())

    def fresh_bot(self, bot_id: str) -> BotConfig:
        """The account's bot as just saved (the process's snapshot may be a second behind)."""
        self.bot(bot_id)
        bot = load_bots([bot_id]).get(bot_id)
        if bot is None:
            raise NotFound(bot_id)
        return bot

    def offer_slugs(self, bot_id: str) -> set[str]:
        """Every offer slug the bot ever had (a deactivated one's too: a new offer never takes it over)."""
        return {o.slug for o in Offer.select(Offer.slug).where(Offer.bot == self.bot(bot_id).id)}

    def gateways(self) -> list[dict[str, Any]]:
        """The account's gateways as the file's tables (credentials in clear: never sent to a browser)."""
        return edit.gateways(self.account)

    def gateway(self, gateway_id: str) -> dict[str, Any]:
        table = edit.gateway(self.account, gateway_id)
        if table is None:
            raise NotFound(gateway_id)
        return table

    @staticmethod
    def gateway_exists(gateway_id: str) -> bool:
        """Is the id taken (gateway ids are the platform's: the notification URL carries them)?"""
        return bool(Gateway.select().where(Gateway.id == gateway_id).exists())

    def bots_of_gateway(self, gateway_id: str) -> list[str]:
        return [b.id for b in self.bots() if b.gateway_id == gateway_id]

    @staticmethod
    def notification_base() -> str:
        return f"{settings.PUBLIC_BASE_URL}/webhook/payment"

    def lead_of_charge(self, charge_id: int) -> Lead:
        """The lead who made one of the account's charges."""
        charge = Charge.get_or_none((Charge.id == charge_id) & Charge.bot_id.in_(self.bot_ids() or [""]))
        lead = Lead.get_or_none(Lead.id == charge.lead_id) if charge is not None else None
        if lead is None:
            raise NotFound(str(charge_id))
        return lead

    def subscriptions(self, bot: str) -> dict[str, Any]:
        """`ops status`'s subscription totals of the bot, and how many active ones end within 7 days."""
        bot_id = self.bot(bot).id
        rows = selling_report.subscription_totals(bot_id)
        totals = rows[0] if rows else {"active": 0, "renewals_30d": 0, "churned_30d": 0, "churn_30d": 0.0,
                                       "mrr": "0.00"}  # fmt: skip
        now = utcnow()
        soon = Subscription.ends_at.between(now, now + dt.timedelta(days=7))
        ending = Subscription.select().where((Subscription.bot_id == bot_id) & (Subscription.state == "active") & soon)
        return {**totals, "ending_7d": ending.count()}

    def broadcasts(self, bot: str) -> list[Any]:
        from actors import broadcasts

        return broadcasts.summaries(self.bot(bot).id)[:20]

    def broadcast(self, raw_id: str) -> Broadcast:
        row = Broadcast.get_or_none(Broadcast.id == int(raw_id)) if raw_id.isdigit() and len(raw_id) < 18 else None
        if row is None or row.bot_id not in self.bot_ids():
            raise NotFound(raw_id)
        return row

    def pools(self) -> list[dict[str, Any]]:
        return edit.pools(self.account)

    def pool(self, pool_id: str) -> dict[str, Any]:
        table = edit.pool(self.account, pool_id)
        if table is None:
            raise NotFound(pool_id)
        return table

    @staticmethod
    def pool_exists(pool_id: str) -> bool:
        return bool(Pool.select().where(Pool.id == pool_id).exists())

    def uses_media(self, ref: str) -> bool:
        """Does one of the account's bots (its welcome, a follow-up) or broadcasts use this upload?"""
        for bot in self.bots():
            if ref in (bot.welcome_media_url, *(f.media_url for f in (*bot.upsells, *bot.downsells))):
                return True
        return bool(Broadcast.select().where((Broadcast.media_url == ref)
                                             & Broadcast.bot_id.in_(self.bot_ids() or [""])).exists())  # fmt: skip

    def audit(self, limit: int = 50) -> list[AuditEntry]:
        return list(AuditEntry.select().where(AuditEntry.account == self.account.id)
                    .order_by(AuditEntry.id.desc()).limit(limit))  # fmt: skip
