"""Pools (one link spread over several bots, around a banned one) and broadcasts (one message to a
segment of a bot's leads), run from the browser. A pool is saved through `catalog.edit` as the
file's `[[pools]]` table; a broadcast through the same calls as `ops broadcast` (its refusals name
the field), and both are in the audit log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import settings
from accounts import sessions
from actors import broadcasts
from actors.health import unhealthy
from catalog import ConfigError, edit
from db import audit
from db.days import ZONE
from panel.refusals import BROADCAST_PROBLEMS, pt, refusal
from panel.scope import Scope
from panel.shared import PANEL
from panel.shop import uploaded
from panel.web import address, render, seller_form, seller_page

SAVED = "Salvo — no ar em alguns segundos."
NEW_MEMBERS = 2  # blank rows under a pool's bots


def _actor(request: Request, scope: Scope) -> str:
    return f"{scope.account.slug} (panel, {address(request)})"


# --- pools ---------------------------------------------------------------------------------------


@seller_page
async def pools(request: Request, session: sessions.Session, scope: Scope) -> Response:
    down = unhealthy(PANEL.redis)
    rows = [{"id": p["id"], "link": f"{settings.PUBLIC_BASE_URL}/p/{p['id']}",
             "bots": [{"bot": m["bot"], "weight": m["weight"], "ok": m["bot"] not in down} for m in p["bots"]]}
            for p in scope.pools()]  # fmt: skip
    return render(request, "pools.html", session, account=scope.account, rows=rows,
                  saved=SAVED if request.query_params.get("saved") else None)  # fmt: skip


def _pool_page(request: Request, session: sessions.Session, scope: Scope, table: dict[str, Any], *, new: bool,
               status: int = 200, error: ConfigError | None = None) -> Response:  # fmt: skip
    members = [{"index": i, "bot": m.get("bot", ""), "weight": m.get("weight", 1)}
               for i, m in enumerate(table.get("bots") or [])]  # fmt: skip
    members += [{"index": len(members) + i, "bot": "", "weight": 1} for i in range(NEW_MEMBERS)]
    return render(request, "pool.html", session, status, account=scope.account, table=table, new=new,
                  members=members, bots=scope.bot_ids(), **refusal(error))  # fmt: skip


@seller_page
async def new_pool(request: Request, session: sessions.Session, scope: Scope) -> Response:
    return _pool_page(request, session, scope, {"id": "", "bots": []}, new=True)


@seller_page
async def pool(request: Request, session: sessions.Session, scope: Scope) -> Response:
    return _pool_page(request, session, scope, scope.pool(request.path_params["pool_id"]), new=False)


@seller_form
async def save_pool(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    pool_id = request.path_params.get("pool_id")
    new = pool_id is None
    table: dict[str, Any] = {"id": form.get("id", "").strip() if new else scope.pool(str(pool_id))["id"], "bots": []}
    index = 0
    while f"bots-{index}-bot" in form:
        bot_id, weight = form.get(f"bots-{index}-bot", ""), form.get(f"bots-{index}-weight", "1").strip()
        index += 1
        if bot_id and not form.get(f"bots-{index - 1}-remove"):
            scope.bot(bot_id)  # the account's, or 404
            table["bots"].append({"bot": bot_id, "weight": int(weight) if weight.isdigit() else weight})
    if new and scope.pool_exists(table["id"]):
        error = ConfigError("id", "já existe um pool com este nome (escolha outro)")
        return _pool_page(request, session, scope, table, new=True, status=422, error=error)
    try:
        edit.save(scope.account, _actor(request, scope), pools=[table])
    except ConfigError as exc:
        return _pool_page(request, session, scope, table, new=new, status=422, error=edit.relative(exc, "pools[0]"))
    return RedirectResponse("/pools?saved=1", status_code=303)


# --- broadcasts ----------------------------------------------------------------------------------

SEGMENTS = {"all": "todos os contatos", "not_bought": "começaram e não tocaram em oferta",
            "unpaid": "geraram PIX e não pagaram", "paid": "já compraram", "expired": "assinatura vencida",
            "utm_campaign": "vieram da campanha (utm_campaign)…",
            "utm_source": "vieram da origem (utm_source)…"}  # fmt: skip
# `ops broadcast`'s option names → the form's fields.
OPTION_FIELDS = {"--segment": "segment", "--text": "text", "--media-url": "media_url", "--offer": "offer",
                 "--bot": "bot", "--at": "at"}  # fmt: skip


def _segment_of(form: dict[str, str]) -> str:
    name = form.get("segment", "all")
    return f"{name}={form.get('segment_value', '').strip()}" if name in ("utm_campaign", "utm_source") else name


def at_of(value: str) -> dt.datetime | None:
    """A date-time (without a zone: the seller's, REPORT_TIMEZONE) as naive UTC; None: now.
    ValueError when it is no date-time."""
    if not value.strip():
        return None
    given = dt.datetime.fromisoformat(value.strip())
    return (given if given.tzinfo else given.replace(tzinfo=ZONE)).astimezone(dt.UTC).replace(tzinfo=None)


def _broadcasts_page(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str],
                     status: int = 200, error: str | None = None, error_at: str | None = None,
                     reach: int | None = None) -> Response:  # fmt: skip
    bot_ids = scope.bot_ids()
    chosen = form.get("bot") or (bot_ids[0] if bot_ids else "")
    offers = [{"id": o.slug, "label": o.label} for o in scope.bot(chosen).offers] if chosen else []
    rows = [b for bid in bot_ids for b in scope.broadcasts(bid)]
    return render(request, "broadcasts.html", session, status, account=scope.account, bots=bot_ids, chosen=chosen,
                  offers=offers, form=form, segments=SEGMENTS, rows=sorted(rows, key=lambda b: -b.id), error=error,
                  error_at=error_at, reach=reach, saved=request.query_params.get("saved"))  # fmt: skip


@seller_page
async def broadcasts_page(request: Request, session: sessions.Session, scope: Scope) -> Response:
    return _broadcasts_page(request, session, scope, {"bot": request.query_params.get("bot", "")})


@seller_form
async def create_broadcast(request: Request, session: sessions.Session, scope: Scope,
                           form: dict[str, str]) -> Response:  # fmt: skip
    """The form's "Quantas pessoas?" counts the segment; "Enviar" creates the broadcast (now or at
    the time given)."""
    bot = scope.bot(form.get("bot", ""))
    segment = _segment_of(form)
    try:
        if form.get("action") == "preview":
            broadcasts.parse_segment(segment)
            reach = broadcasts.preview(bot.id, segment)
            return _broadcasts_page(request, session, scope, form, reach=reach)
        at = at_of(form.get("at", ""))
        upload = await uploaded(request, "media_file")
        if isinstance(upload, ConfigError):
            return _broadcasts_page(request, session, scope, form, 422, error=upload.args[0].split(": ", 1)[-1],
                                    error_at="media_url")  # fmt: skip
        row = broadcasts.create(bot, segment, form.get("text", ""), media_url=upload or form.get("media_url") or None,
                                offer=form.get("offer") or None, at=at)  # fmt: skip
    except broadcasts.BroadcastError as exc:
        option, _, problem = str(exc).partition(": ")
        return _broadcasts_page(request, session, scope, form, 422, error=pt(problem, BROADCAST_PROBLEMS),
                                error_at=OPTION_FIELDS.get(option))  # fmt: skip
    except ValueError:
        return _broadcasts_page(request, session, scope, form, 422, error="Escolha uma data e hora válidas.",
                                error_at="at")  # fmt: skip
    audit.record("broadcast created", account=scope.account, actor=_actor(request, scope), obj=f"broadcast {row.id}",
                 after={"bot": bot.id, "segment": segment, "starts_at": row.starts_at.isoformat()},
                 session=session.tag, address=address(request))  # fmt: skip
    return RedirectResponse(f"/broadcasts?bot={bot.id}&saved={row.id}", status_code=303)


@seller_form
async def stop_broadcast(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    row = scope.broadcast(request.path_params["broadcast_id"])
    if broadcasts.stop(row.id):
        audit.record("broadcast stopped", account=scope.account, actor=_actor(request, scope),
                     obj=f"broadcast {row.id}", session=session.tag, address=address(request))  # fmt: skip
    return RedirectResponse(f"/broadcasts?bot={row.bot_id}", status_code=303)
