"""The operator's pages: every account (state, bots, revenue this month) with suspend and resume,
every account's audit log, and the platform's health (queues and workers, as `ops queues` and
`ops status` show them). For any other account these routes do not exist (404)."""

from __future__ import annotations

from typing import Any

import redis
from peewee import JOIN
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import accounts
from accounts import sessions
from db.models import Account, AuditEntry
from panel.scope import NotFound, Scope
from panel.shared import PANEL
from panel.web import address, render, seller_form, seller_page


def _operator(scope: Scope, what: str) -> None:
    if not scope.operator:
        raise NotFound(what)


@seller_page
async def accounts_page(request: Request, session: sessions.Session, scope: Scope) -> Response:
    _operator(scope, "accounts")
    done = request.query_params.get("done", "")
    return render(request, "operator.html", session, account=scope.account, rows=accounts.summaries(), done=done)


@seller_form
async def set_state(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    _operator(scope, "accounts")
    slug, state = request.path_params["slug"], "suspended" if request.url.path.endswith("/suspend") else "active"
    try:
        target = accounts.get(slug)
    except accounts.AccountError:
        raise NotFound(slug) from None
    if target.id == scope.account.id:
        return render(request, "message.html", session, 422, account=scope.account, title="Não permitido",
                      text="Você não pode suspender a sua própria conta.")  # fmt: skip
    accounts.set_state(slug, state, actor=f"{scope.account.slug} (panel, {address(request)})")
    if state == "suspended":
        sessions.end_all(PANEL.redis, target.id)
    return RedirectResponse(f"/operator/accounts?done={state}:{slug}", status_code=303)


def _system() -> dict[str, Any]:
    from actors.broker import QUEUES
    from actors.metrics import processes
    from reports.queues import queue_stats

    try:
        stats = [queue_stats(PANEL.redis, q) for q in QUEUES]
        alive = processes(PANEL.redis)
    except redis.RedisError as exc:
        return {"error": type(exc).__name__, "queues": [], "workers": []}
    return {"error": None, "queues": stats, "workers": alive}


@seller_page
async def audit_log(request: Request, session: sessions.Session, scope: Scope) -> Response:
    """Every account's audit log, newest first (200 entries)."""
    _operator(scope, "audit")
    entries = list(AuditEntry.select(AuditEntry, Account.slug).join(Account, JOIN.LEFT_OUTER)
                   .order_by(AuditEntry.id.desc()).limit(200).objects())  # fmt: skip
    return render(request, "operator_audit.html", session, account=scope.account, entries=entries)


@seller_page
async def system(request: Request, session: sessions.Session, scope: Scope) -> Response:
    _operator(scope, "system")
    return render(request, "system.html", session, account=scope.account, **_system())
