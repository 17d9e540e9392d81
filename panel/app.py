"""The panel's Starlette app (CONTRACT §14): its routes. Every page but the login, sign-up, reset
and health needs a logged-in account (panel/web.py); every POST needs the session's CSRF token (no
exemptions); every object is read through the account's `Scope` (another account's id answers 404,
saying nothing of it)."""

from __future__ import annotations

import redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from db.database import db, init_db
from panel import account, api, api_shop, auth, campaigns, operator, pages, shop
from panel.shared import PANEL
from panel.web import COOKIE, safe_next

__all__ = ["COOKIE", "PANEL", "make_app", "safe_next"]


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


class ReturnConnection:
    """After each request, the database connection its thread took goes back to the pool (the
    panel's handlers connect on first use; a process whose threads come and go would otherwise
    hold one per thread until the pool is exhausted)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http" and not db.is_closed():
                db.close()


def make_app(client: redis.Redis | None = None) -> Starlette:
    if client is not None:
        PANEL._client = client
    init_db()
    get, post = ["GET"], ["POST"]
    return Starlette(routes=[
        Route("/health", health),
        Route("/login", auth.login_page, methods=get),
        Route("/login", auth.login, methods=post),
        Route("/login/code", auth.second_factor_login, methods=post),
        Route("/logout", auth.logout, methods=post),
        Route("/logout/everywhere", auth.logout, methods=post),
        Route("/signup", auth.open_signup_page, methods=get),
        Route("/signup", auth.signup, methods=post),
        Route("/signup/{token}", auth.signup_page, methods=get),
        Route("/signup/{token}", auth.signup, methods=post),
        Route("/forgot", auth.forgot_page, methods=get),
        Route("/forgot", auth.forgot, methods=post),
        Route("/reset/{token}", auth.reset_page, methods=get),
        Route("/reset/{token}", auth.reset, methods=post),
        Route("/", pages.dashboard, methods=get),
        Route("/sales", pages.sales, methods=get),
        Route("/sales.csv", pages.sales_csv, methods=get),
        Route("/sales/{charge_id}", pages.sale, methods=get),
        Route("/sales/{charge_id}/purchase", pages.send_purchase_again, methods=post),
        Route("/bots", pages.bots, methods=get),
        Route("/media/{name}", pages.stored_media, methods=get),
        Route("/bots/new", shop.new_bot, methods=get),
        Route("/bots/new", shop.create_bot, methods=post),
        Route("/bots/new/whatsapp", shop.new_whatsapp_bot, methods=get),
        Route("/bots/new/whatsapp", shop.create_whatsapp_bot, methods=post),
        Route("/bots/{bot_id}", pages.bot, methods=get),
        Route("/bots/{bot_id}/edit", shop.bot_editor, methods=get),
        Route("/bots/{bot_id}/edit", shop.save_bot, methods=post),
        Route("/bots/{bot_id}/webhook", shop.set_webhook, methods=post),
        Route("/bots/{bot_id}/selling", shop.selling, methods=get),
        Route("/bots/{bot_id}/selling", shop.save_selling, methods=post),
        Route("/bots/{bot_id}/texts", shop.texts, methods=get),
        Route("/bots/{bot_id}/texts", shop.save_texts, methods=post),
        Route("/bots/{bot_id}/channel", shop.channel, methods=get),
        Route("/bots/{bot_id}/channel", shop.save_channel, methods=post),
        Route("/bots/{bot_id}/funnel.toml", shop.export_funnel, methods=get),
        Route("/bots/{bot_id}/funnel", shop.import_funnel, methods=post),
        Route("/gateways", shop.gateways, methods=get),
        Route("/gateways/new", shop.new_gateway, methods=get),
        Route("/gateways/new", shop.save_gateway, methods=post),
        Route("/gateways/{gateway_id}", shop.gateway, methods=get),
        Route("/gateways/{gateway_id}", shop.save_gateway, methods=post),
        Route("/gateways/{gateway_id}/test", shop.test_gateway, methods=post),
        Route("/pools", campaigns.pools, methods=get),
        Route("/pools/new", campaigns.new_pool, methods=get),
        Route("/pools/new", campaigns.save_pool, methods=post),
        Route("/pools/{pool_id}", campaigns.pool, methods=get),
        Route("/pools/{pool_id}", campaigns.save_pool, methods=post),
        Route("/broadcasts", campaigns.broadcasts_page, methods=get),
        Route("/broadcasts", campaigns.create_broadcast, methods=post),
        Route("/broadcasts/{broadcast_id}/stop", campaigns.stop_broadcast, methods=post),
        Route("/account", account.page, methods=get),
        Route("/account/password", account.change_password, methods=post),
        Route("/account/email", account.change_email, methods=post),
        Route("/account/2fa", account.second_factor_page, methods=get),
        Route("/account/2fa", account.enable_second_factor, methods=post),
        Route("/account/2fa/disable", account.disable_second_factor, methods=post),
        Route("/account/2fa/codes", account.new_recovery_codes, methods=post),
        Route("/account/keys", account.create_api_key, methods=post),
        Route("/account/keys/revoke", account.revoke_api_key, methods=post),
        Route("/operator/accounts", operator.accounts_page, methods=get),
        Route("/operator/accounts/{slug}/suspend", operator.set_state, methods=post),
        Route("/operator/accounts/{slug}/resume", operator.set_state, methods=post),
        Route("/operator/audit", operator.audit_log, methods=get),
        Route("/operator/system", operator.system, methods=get),
        *api.ROUTES,
        *api_shop.ROUTES,
    ], middleware=[Middleware(ReturnConnection)])  # fmt: skip
