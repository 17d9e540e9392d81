"""The one scoping layer of the panel: every query a page makes goes through the logged-in account's
`Scope`, so another account's objects are never read, whatever id a URL or a form carries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from catalog.schema import BotConfig
from db.models import Account, AuditEntry, Bot
from panel.shared import PANEL
from reports import funnel as funnel_report
from reports import payments as payments_report


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

    def funnel(self, days: int) -> list[funnel_report.Row]:
        mine = set(self.bot_ids())
        return [row for row in funnel_report.report("bot", since_days=days) if row.key in mine]

    def charges(self, bot: str | None, state: str | None, limit: int = 100,
                since: dt.datetime | None = None) -> list[payments_report.ChargeLine]:  # fmt: skip
        if bot:
            self.bot(bot)  # 404 when not this account's
        return payments_report.recent(bot=bot or None, status=state or None, since=since, limit=limit,
                                      bots=self.bot_ids())  # fmt: skip

    def audit(self, limit: int = 50) -> list[AuditEntry]:
        return list(AuditEntry.select().where(AuditEntry.account == self.account.id)
                    .order_by(AuditEntry.id.desc()).limit(limit))  # fmt: skip
