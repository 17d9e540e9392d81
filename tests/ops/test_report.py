"""`python -m ops report` (CONTRACT §13): the funnel per bot, day, campaign, source or offer, in
agreement with `ops payments`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner

from actors.maintenance import prune_unattached_clicks
from actors.pixel import count_click
from catalog.snapshot import load_bots
from db.database import utcnow
from db.days import local_day
from db.models import Charge, Click, Lead
from ops.cli import cli
from reports import funnel as report
from tests.conftest import apply_config, two_bots

NOW = utcnow()


def shop() -> None:
    apply_config(two_bots())


n = iter(range(1, 10_000))


def lead(bot: str, utm: dict[str, str] | None, days_ago: float = 0) -> Lead:
    at = NOW - dt.timedelta(days=days_ago)
    i = next(n)
    row = Lead.create(bot=bot, person_id=i, chat_id=i, first_name="L", first_seen_at=at, last_seen_at=at)
    if utm is not None:
        click = Click.create(token=f"t{i}", bot_id=bot, lead_id=row.id, utm=utm, clicked_at=at)
        count_click(click)  # as actors.pixel.store_click counts it, in the same transaction
        Lead.update(first_click_id=click.id, last_click_id=click.id).where(Lead.id == row.id).execute()
    return row


def charge(row: Lead, offer: str, status: str, amount: str, paid: str | None = None, days_ago: float = 0) -> None:
    bot = load_bots()[row.bot_id]
    offer_id = next(o.id for o in bot.offers if o.slug == offer)
    at = NOW - dt.timedelta(days=days_ago)
    Charge.create(bot_id=row.bot_id, lead_id=row.id, offer_id=offer_id, gateway_id="main", gateway_kind="sandbox",
                  idempotency_key=f"k{next(n)}", amount=Decimal(amount), status=status,
                  paid_amount=Decimal(paid) if paid else None, created_at=at)  # fmt: skip


@pytest.fixture
def data() -> None:
    shop()
    bf = {"utm_source": "facebook", "utm_campaign": "bf"}
    a = lead("demo", bf)
    charge(a, "vip", "paid", "19.90", "19.90")
    b = lead("demo", bf, days_ago=1)
    charge(b, "vip", "expired", "19.90", days_ago=1)
    charge(b, "anual", "refunded", "149.90", "149.90", days_ago=1)
    c = lead("demo", {"utm_source": "tiktok", "utm_campaign": "natal"})
    charge(c, "vip", "paid", "19.90", "15.00")  # underpaid: revenue is what was paid
    charge(c, "vip", "creating", "19.90")  # not a charge yet
    lead("demo", None)  # came without a click
    count_click(Click.create(token="lonely", bot_id="demo", utm=bf, clicked_at=NOW))  # never became a /start
    d = lead("other", {"utm_source": "facebook", "utm_campaign": "bf"})
    charge(d, "vip", "paid", "19.90", "19.90")
    old = lead("demo", bf, days_ago=40)  # outside the window
    charge(old, "vip", "paid", "19.90", "19.90", days_ago=40)


def run(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["report", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_rows_per_bot_reconcile_with_ops_payments(data: None) -> None:
    rows = json.loads(run("--json"))
    assert rows == [
        {"bot": "demo", "clicks": 4, "starts": 4, "charges": 4, "paid": 3, "revenue": "34.90", "refunded": "149.90",
         "conversion": 0.75},
        {"bot": "other", "clicks": 1, "starts": 1, "charges": 1, "paid": 1, "revenue": "19.90", "refunded": "0.00",
         "conversion": 1.0},
    ]  # fmt: skip
    payments = json.loads(CliRunner().invoke(cli, ["payments", "--since-hours", str(30 * 24), "--json"]).output)
    totals = {t["bot"]: t for t in payments["totals"]}
    for row in rows:
        t = totals[row["bot"]]
        assert (row["charges"], row["paid"], row["revenue"], row["refunded"]) == (
            t["charges"], t["paid"], t["revenue"], t["refunded"])  # fmt: skip


def test_by_campaign_source_day_and_offer(data: None) -> None:
    by_campaign = {r["utm_campaign"]: r for r in json.loads(run("--by", "utm_campaign", "--bot", "demo", "--json"))}
    assert set(by_campaign) == {"bf", "natal", None}
    assert (by_campaign["bf"]["clicks"], by_campaign["bf"]["starts"], by_campaign["bf"]["paid"]) == (3, 2, 2)
    assert by_campaign["natal"]["revenue"] == "15.00" and by_campaign[None]["starts"] == 1
    by_source = {r["utm_source"]: r for r in json.loads(run("--by", "utm_source", "--json"))}
    assert by_source["facebook"]["charges"] == 4 and by_source["tiktok"]["charges"] == 1
    by_day = json.loads(run("--by", "day", "--bot", "demo", "--json"))
    assert [r["day"] for r in by_day] == [str(local_day(NOW - dt.timedelta(days=1))), str(local_day(NOW))]
    assert sum(r["charges"] for r in by_day) == 4
    by_offer = {r["offer"]: r for r in json.loads(run("--by", "offer", "--json"))}
    assert by_offer["demo/anual"] == {"offer": "demo/anual", "clicks": None, "starts": None, "charges": 1, "paid": 1,
                                      "revenue": "0.00", "refunded": "149.90", "conversion": None}  # fmt: skip
    assert by_offer["demo/vip"]["charges"] == 3 and by_offer["other/vip"]["paid"] == 1
    assert json.loads(run("--since-days", "60", "--bot", "demo", "--json"))[0]["charges"] == 5  # the old one too


def test_csv_and_text(data: None) -> None:
    table = list(csv.reader(io.StringIO(run("--by", "utm_campaign", "--csv"))))
    assert table[0] == ["utm_campaign", "clicks", "starts", "charges", "paid", "revenue", "refunded", "conversion"]
    assert ["bf", "4", "3", "4", "3", "39.80", "149.90", "0.75"] in table
    text = run()
    assert "R$ 34,90" in text and "R$ 149,90" in text and "75.0%" in text
    assert "nothing in the last" in run("--bot", "nope")


def test_clicks_are_counted_past_the_raw_rows_pruning(data: None) -> None:
    """Unattached clicks are pruned after 8 days; their per-day counts stay, so a report over 60 days
    still counts a click of 40 days ago."""
    at = NOW - dt.timedelta(days=40)
    count_click(Click.create(token="old-lonely", bot_id="demo", utm={"utm_campaign": "bf"}, clicked_at=at))
    assert prune_unattached_clicks(NOW - dt.timedelta(days=8)) == 1 and Click.get_or_none(token="old-lonely") is None
    by_campaign = {r["utm_campaign"]: r for r in json.loads(run("--by", "utm_campaign", "--bot", "demo",
                                                                 "--since-days", "60", "--json"))}  # fmt: skip
    assert by_campaign["bf"]["clicks"] == 5  # 3 within 30 days, the old lead's, and the pruned one


def test_days_are_the_sellers_days(data: None) -> None:
    """REPORT_TIMEZONE (America/Sao_Paulo, UTC−3): a sale at 01:30 UTC is the seller's evening before."""
    shop()
    today = local_day(NOW)
    late = dt.datetime.combine(today, dt.time(1, 30))  # 01:30 UTC today = 22:30 yesterday in São Paulo
    row = lead("other", {"utm_campaign": "noite"})
    Lead.update(first_seen_at=late).where(Lead.id == row.id).execute()
    Charge.create(bot_id="other", lead_id=row.id, offer_id=load_bots()["other"].offers[0].id, gateway_id="main",
                  gateway_kind="sandbox", idempotency_key="late-1", amount=Decimal("19.90"), status="paid",
                  paid_amount=Decimal("19.90"), created_at=late)  # fmt: skip
    days = {r["day"]: r for r in json.loads(run("--by", "day", "--bot", "other", "--json"))}
    assert days[str(today - dt.timedelta(days=1))]["paid"] == 1


def test_a_campaign_over_time_has_every_day_of_the_window(data: None) -> None:
    series = report.over_time("utm_campaign", "demo", 7)
    assert set(series) == {"bf", "natal", None}
    bf = series["bf"]
    assert [r.key for r in bf] == [str(local_day(NOW) - dt.timedelta(days=6 - i)) for i in range(7)]
    assert sum(r.clicks or 0 for r in bf) == 3 and sum(r.paid for r in bf) == 2
    assert bf[-1].revenue == "19.90" and bf[-2].refunded == "149.90"
