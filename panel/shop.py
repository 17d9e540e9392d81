"""The seller's shop, edited in the browser: gateways, bots (a new one by its token; its welcome,
offers and checkout). Each form is turned into the file's table of its object and saved through
`catalog.edit` — the file's validation and apply, as the HTTP API does — so a refusal names a key,
shown beside the field it belongs to, and a save is live within CONFIG_POLL_SECONDS.

Credentials are write-only: a form shows "definido (…abcd)" and an empty field keeps the stored
value; nothing secret is ever sent back to the browser."""

from __future__ import annotations

import logging
import re
import secrets
import tomllib
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

import tomli_w
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from accounts import sessions
from actors.channels import standalone, webhook_url
from catalog import ConfigError, edit
from catalog.schema import DEFAULT_TEXTS, brl
from catalog.validate import SLUG, WHATSAPP_KEYS
from db.audit import is_secret
from gateways import media
from gateways.channel import ChannelError
from gateways.payments import registry
from gateways.payments.base import PaymentPermanent, PaymentTransient
from gateways.payments.registry import OPTIONS
from gateways.telegram import TelegramError
from panel.refusals import field_of, pt, refusal
from panel.scope import NotFound, Scope
from panel.shared import PANEL
from panel.web import address, in_thread, render, seller_form, seller_page

log = logging.getLogger("grimbots.panel")
SAVED = "Salvo — no ar em alguns segundos."

# What each gateway kind is, and what each of its keys means, for a seller.
KINDS = {
    "sandbox": "Sandbox (testes: PIX estático, sem banco)",
    "mercadopago": "Mercado Pago",
    "pushinpay": "PushinPay",
    "woovi": "Woovi (OpenPix)",
}
LABELS = {
    "pix_key": "Chave PIX",
    "merchant_name": "Nome do recebedor (até 25 letras)",
    "merchant_city": "Cidade do recebedor (até 15 letras)",
    "access_token": "Access token (produção)",
    "payer_email": "E-mail do pagador (opcional)",
    "api_token": "Token da API",
    "app_id": "AppID",
    "public_key": "Chave pública dos webhooks (opcional)",
    "webhook_secret": "Segredo das notificações",
}
SECRET_HELP = {
    "sandbox": "Assina as notificações do sandbox. Deixe em branco: a plataforma cria um.",
    "mercadopago": 'A "assinatura secreta" dos webhooks, no painel do Mercado Pago (Suas integrações → Webhooks).',
    "pushinpay": "O token que a PushinPay manda no cabeçalho x-pushinpay-token das notificações.",
    "woovi": "Um segredo seu. A assinatura da Woovi é conferida com a chave pública.",
}


def _actor(request: Request, scope: Scope) -> str:
    return f"{scope.account.slug} (panel, {address(request)})"


def _write_only(value: str | None) -> str | None:
    return f"definido (…{value[-4:]})" if value else None


def _merge(table: dict[str, Any], form: dict[str, str], names: Iterable[str]) -> None:
    """The form's values of `names` into `table`: an empty credential keeps the stored one (they
    are write-only); any other field left empty clears its key."""
    for name in names:
        value = form.get(name, "").strip()
        if value:
            table[name] = value
        elif not is_secret(name):
            table.pop(name, None)


# --- gateways ------------------------------------------------------------------------------------


@seller_page
async def gateways(request: Request, session: sessions.Session, scope: Scope) -> Response:
    rows = [{"id": g["id"], "kind": KINDS.get(g["kind"], g["kind"]), "bots": scope.bots_of_gateway(g["id"])}
            for g in scope.gateways()]  # fmt: skip
    return render(request, "gateways.html", session, account=scope.account, rows=rows, kinds=KINDS,
                  saved=SAVED if request.query_params.get("saved") else None,
                  notify_base=scope.notification_base())  # fmt: skip


def _gateway_context(scope: Scope, table: dict[str, Any], *, new: bool,
                     error: ConfigError | None = None) -> dict[str, Any]:  # fmt: skip
    kind = table["kind"]
    fields = [{"name": name, "label": LABELS.get(name, name), "required": required, "secret": is_secret(name),
               "value": "" if is_secret(name) else table.get(name, ""),
               "stored": _write_only(table.get(name)) if is_secret(name) and not new else None}
              for name, required in OPTIONS[kind].items()]  # fmt: skip
    return {"account": scope.account, "table": table, "new": new, "kind_label": KINDS.get(kind, kind),
            "fields": fields, "secret_help": SECRET_HELP.get(kind, ""),
            "secret_stored": None if new else _write_only(table.get("webhook_secret")),
            "notify_url": f"{scope.notification_base()}/{table.get('id') or '{id}'}", **refusal(error)}  # fmt: skip


def _gateway_form(request: Request, session: sessions.Session, scope: Scope, table: dict[str, Any], *, new: bool,
                  status: int = 200, error: ConfigError | None = None) -> Response:  # fmt: skip
    return render(request, "gateway.html", session, status, **_gateway_context(scope, table, new=new, error=error))


@seller_page
async def new_gateway(request: Request, session: sessions.Session, scope: Scope) -> Response:
    kind = request.query_params.get("kind", "")
    if kind not in OPTIONS:
        raise NotFound(kind)
    return _gateway_form(request, session, scope, {"kind": kind, "id": ""}, new=True)


@seller_page
async def gateway(request: Request, session: sessions.Session, scope: Scope) -> Response:
    return _gateway_form(request, session, scope, scope.gateway(request.path_params["gateway_id"]), new=False)


@seller_form
async def save_gateway(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    gateway_id = request.path_params.get("gateway_id")
    new = gateway_id is None
    if new:
        kind = form.get("kind", "")
        if kind not in OPTIONS:
            raise NotFound(kind)
        stored: dict[str, Any] = {"kind": kind, "id": form.get("id", "").strip()}
        if scope.gateway_exists(stored["id"]):
            error = ConfigError("id", "já existe um gateway com este nome (escolha outro)")
            return _gateway_form(request, session, scope, stored, new=True, status=422, error=error)
    else:
        stored = scope.gateway(str(gateway_id))
    table = dict(stored)
    _merge(table, form, (*OPTIONS[table["kind"]], "webhook_secret"))
    if new and not table.get("webhook_secret"):
        table["webhook_secret"] = secrets.token_urlsafe(24)
    try:
        edit.save(scope.account, _actor(request, scope), gateways=[table])
    except ConfigError as exc:
        return _gateway_form(request, session, scope, table, new=new, status=422,
                             error=edit.relative(exc, "gateways[0]"))  # fmt: skip
    return RedirectResponse("/gateways?saved=1", status_code=303)


def slug_from(text: str) -> str:
    """A bot or gateway id from a name: letters, digits, - and _ only."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:64]
    return slug if SLUG.match(slug) else ""


# --- a new bot --------------------------------------------------------------------------------------

WELCOME = "Olá! Escolha uma opção abaixo."  # the first welcome, edited on the next page


def _copy_of(scope: Scope, bot_id: str) -> dict[str, Any] | None:
    """The funnel of the account's Telegram bot `bot_id` (what a duplicate starts from), or None."""
    if not bot_id:
        return None
    source = _stored_bot(scope, bot_id)
    if scope.bot(bot_id).channel != "telegram":
        raise NotFound(bot_id)
    return {k: v for k, v in source.items() if k not in ("id", "token", "username", "webhook_secret")}


@seller_page
async def new_bot(request: Request, session: sessions.Session, scope: Scope) -> Response:
    copy_of = request.query_params.get("copy_of", "")
    _copy_of(scope, copy_of)
    return render(request, "bot_new.html", session, account=scope.account, copy_of=copy_of,
                  gateways=[g["id"] for g in scope.gateways()])  # fmt: skip


def _telegram_bot(token: str) -> dict[str, Any]:
    """getMe with the token: the bot's `username` and `first_name` (TelegramError when refused)."""
    channels = standalone()
    result = channels.telegram.call(token, "getMe", {})
    return result if isinstance(result, dict) else {}


class Refused(ValueError):
    """A new bot refused: what to tell the seller, and the field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


TOKEN = re.compile(r"\d{5,16}:[A-Za-z0-9_-]{30,64}")


def add_telegram_bot(scope: Scope, actor: str, token: str, gateway_id: str = "",
                     copy_of: str = "") -> tuple[str, bool]:  # fmt: skip
    """A Telegram bot from its token: checked with getMe, a webhook secret made, saved with a first
    welcome (or, duplicating `copy_of`, that bot's whole funnel), then setWebhook. (its id, whether
    Telegram took the webhook). Refused names the field; NotFound: another account's gateway or bot."""
    base = _copy_of(scope, copy_of)
    if gateway_id:
        scope.gateway(gateway_id)
    if not TOKEN.fullmatch(token):
        raise Refused("token", "Cole o token que o BotFather deu (números, dois-pontos, letras).")
    try:
        me = _telegram_bot(token)
    except TelegramError as exc:
        raise Refused("token", f"O Telegram recusou este token ({exc.description}). Confira no BotFather.") from None
    username = str(me.get("username") or "")
    bot_id = slug_from(username.lower().removesuffix("bot").rstrip("_-") or username) or "bot"
    while scope.bot_id_taken(bot_id):
        bot_id = f"{bot_id[:56]}-{secrets.token_hex(3)}"
    table: dict[str, Any] = {"welcome": {"text": WELCOME}, **(base or {}), "id": bot_id, "token": token,
                             "username": username, "webhook_secret": secrets.token_urlsafe(24)}  # fmt: skip
    if gateway_id:
        table["gateway"] = gateway_id
    _save_new(scope, actor, table)
    return bot_id, _set_webhook(scope, bot_id)


def _save_new(scope: Scope, actor: str, table: dict[str, Any]) -> None:
    try:
        edit.save(scope.account, actor, bots=[table])
    except ConfigError as exc:
        error = edit.relative(exc, "bots[0]")
        if error.key == "token":
            raise Refused("token", "Este bot já está em outra conta da plataforma.") from None
        raise Refused(field_of(error.key), pt(str(error).split(": ", 1)[-1])) from None


@seller_form
async def create_bot(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    copy_of = form.get("copy_of", "")
    try:
        token, gateway_id = form.get("token", "").strip(), form.get("gateway", "")
        bot_id, webhook = await in_thread(add_telegram_bot, scope, _actor(request, scope), token, gateway_id,
                                                  copy_of)  # fmt: skip
    except Refused as exc:
        return render(request, "bot_new.html", session, 422, account=scope.account, copy_of=copy_of,
                      gateways=[g["id"] for g in scope.gateways()], error=str(exc), error_at=exc.field)  # fmt: skip
    return RedirectResponse(f"/bots/{bot_id}/edit?created=1" + ("" if webhook else "&webhook=0"), status_code=303)


def _set_webhook(scope: Scope, bot_id: str) -> bool:
    bot = scope.fresh_bot(bot_id)
    try:
        standalone().of(bot).set_webhook(webhook_url(bot), bot.webhook_secret)
    except ChannelError as exc:
        log.warning("setWebhook failed bot=%s error=%s", bot_id, exc)
        return False
    return True


@seller_form
async def set_webhook(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    bot_id = scope.bot(request.path_params["bot_id"]).id
    done = await in_thread(_set_webhook, scope, bot_id)
    return RedirectResponse(f"/bots/{bot_id}/edit?webhook={int(done)}", status_code=303)


# --- uploads: a welcome's, a follow-up's image or video -------------------------------------------

MEDIA_PROBLEMS = {"only JPEG or PNG images and MP4 videos": "Envie uma imagem JPEG ou PNG, ou um vídeo MP4.",
                  "at most 5 MB for a image": "A imagem pode ter até 5 MB.",
                  "at most 16 MB for a video": "O vídeo pode ter até 16 MB."}  # fmt: skip


async def uploaded(request: Request, field: str) -> str | ConfigError | None:
    """The reference of the file the form's `field` carries, once stored (media.store); None when
    no file was chosen; a ConfigError naming the field when it is no image or video a channel takes."""
    posted = await request.form()  # parsed once (seller_form checked its CSRF token)
    upload = posted.get(field)
    if not isinstance(upload, UploadFile) or not upload.filename:
        return None
    data = await upload.read(media.LIMITS["mp4"] + 1)
    try:
        return await run_in_threadpool(media.store, data)
    except media.MediaError as exc:
        return ConfigError(field.replace("_file", "_url"), MEDIA_PROBLEMS.get(str(exc), str(exc)))


# --- the bot editor: gateway, welcome, offers, checkout, tracking -------------------------------

OFFER_FIELDS = ("label", "price", "delivery_link", "delivery_text", "delivery_chat_id", "duration")
OFFER_FLAGS = ("join_by_request", "hidden")
TRACKING = ("pixel_id", "pixel_access_token", "pixel_test_event_code", "tiktok_pixel_code", "tiktok_access_token",
            "utmify_token")  # fmt: skip
NEW_OFFERS = 1  # blank rows for new offers under the list


def _offer_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"index": i, "id": o.get("id", ""), **{k: o.get(k, "") for k in OFFER_FIELDS},
             **{k: bool(o.get(k)) for k in OFFER_FLAGS}} for i, o in enumerate(table.get("offers") or [])]  # fmt: skip
    for row in rows:
        row["price_text"] = _price_text(row["price"])
    start = len(rows)
    rows += [{"index": start + i, "id": "", **dict.fromkeys(OFFER_FIELDS, ""), **dict.fromkeys(OFFER_FLAGS, False)}
             for i in range(NEW_OFFERS)]  # fmt: skip
    for row in rows[start:]:
        row["price_text"] = ""
    return rows


def _price_text(price: Any) -> str:
    """A price as the seller writes it (19,90); what they typed when it is no price (to correct it)."""
    try:
        return brl(Decimal(str(price)))
    except InvalidOperation:
        return str(price)


def _editor(request: Request, session: sessions.Session, scope: Scope, table: dict[str, Any], status: int = 200,
            error: ConfigError | None = None, saved: str | None = None,
            problem: str | None = None) -> Response:  # fmt: skip
    config = scope.bot(table["id"])
    tracking = {k: ("" if is_secret(k) else table.get(k, "")) for k in TRACKING}
    stored = {k: _write_only(table.get(k)) for k in TRACKING if is_secret(k)}
    where = "Telegram" if config.channel == "telegram" else "WhatsApp"
    notes = {"created": f"Bot criado e ligado ao {where}. Escreva as boas-vindas e as ofertas.",
             "webhook-0": f"O {where} não aceitou o webhook agora. Tente \"Ligar de novo\"."}  # fmt: skip
    shown = [notes[k] for k in ("created",) if request.query_params.get(k)]
    if request.query_params.get("webhook") == "0":
        shown.append(notes["webhook-0"])
    cloud = {"callback": webhook_url(config), "verify_token": table.get("verify_token")} if (
        config.channel == "whatsapp_cloud") else None  # fmt: skip
    return render(request, "bot_edit.html", session, status, account=scope.account, bot=config, table=table,
                  cloud=cloud, offers=_offer_rows(table), gateways=[g["id"] for g in scope.gateways()],
                  tracking=tracking, stored=stored, checkout=table.get("checkout") or {},
                  welcome=table.get("welcome") or {}, notes=shown, saved=saved, import_problem=problem,
                  **refusal(error))  # fmt: skip


@seller_page
async def bot_editor(request: Request, session: sessions.Session, scope: Scope) -> Response:
    table = _stored_bot(scope, request.path_params["bot_id"])
    return _editor(request, session, scope, table, saved=SAVED if request.query_params.get("saved") else None)


def _number(value: str) -> int | str:
    """A whole number from a form (as the file would have it), or the text for validation to refuse."""
    text = value.strip()
    return int(text) if re.fullmatch(r"-?\d{1,18}", text) else text


def _offers_from(form: dict[str, str], stored: list[dict[str, Any]], taken: set[str]) -> list[dict[str, Any]]:
    """The offers in the order of their positions; a removed one is left out (deactivated, never
    deleted); a new row with a label becomes an offer with a slug made from it."""
    rows: list[tuple[float, int, dict[str, Any]]] = []
    index = 0
    while f"offers-{index}-label" in form or f"offers-{index}-id" in form:
        prefix = f"offers-{index}-"
        slug = form.get(prefix + "id", "")
        base = next((o for o in stored if o.get("id") == slug), {}) if slug else {}
        label = form.get(prefix + "label", "").strip()
        if form.get(prefix + "remove") or (not slug and not label):
            index += 1
            continue
        offer = {k: v for k, v in base.items() if k not in (*OFFER_FIELDS, *OFFER_FLAGS)}  # e.g. its bump
        if not slug:
            slug = _new_slug(label, taken)
            taken.add(slug)
        offer["id"] = slug
        for name in OFFER_FIELDS:
            value = form.get(prefix + name, "").strip()
            if name == "price":
                value = _decimal_text(value)
            if value:
                offer[name] = _number(value) if name == "delivery_chat_id" else value
        for name in OFFER_FLAGS:
            if form.get(prefix + name):
                offer[name] = True
        position = form.get(prefix + "position", "").strip()
        rows.append((float(position) if re.fullmatch(r"-?\d{1,6}", position) else index, index, offer))
        index += 1
    return [offer for _, _, offer in sorted(rows, key=lambda r: (r[0], r[1]))]


def _new_slug(label: str, taken: set[str]) -> str:
    base = (slug_from(label.lower()) or "oferta")[:56]
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug


@seller_form
async def save_bot(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    stored = _stored_bot(scope, request.path_params["bot_id"])
    bot_id, table = stored["id"], dict(stored)
    gateway_id = form.get("gateway", "")
    if gateway_id:
        scope.gateway(gateway_id)  # the account's, or 404
        table["gateway"] = gateway_id
    else:
        table.pop("gateway", None)
    welcome = {k: v for k in ("text", "media_url") if (v := form.get(f"welcome-{k}", "").strip())}
    if form.get("welcome-media_remove"):
        welcome.pop("media_url", None)
    upload = await uploaded(request, "welcome-media_file")
    if isinstance(upload, ConfigError):
        return _editor(request, session, scope, table, 422, upload)
    if upload is not None:
        welcome["media_url"] = upload
    table["welcome"] = welcome
    table["offers"] = _offers_from(form, list(stored.get("offers") or []), scope.offer_slugs(bot_id))
    if not table["offers"]:
        table.pop("offers")
    table["checkout"] = {"expires_minutes": _number(form.get("checkout-expires_minutes", "30")),
                         "send_qr": bool(form.get("checkout-send_qr"))}  # fmt: skip
    _merge(table, form, TRACKING)
    for name in TRACKING:
        if form.get(f"{name}-clear"):
            table.pop(name, None)
    try:
        edit.save(scope.account, _actor(request, scope), bots=[table])
    except ConfigError as exc:
        return _editor(request, session, scope, table, 422, edit.relative(exc, "bots[0]"))
    return RedirectResponse(f"/bots/{bot_id}/edit?saved=1", status_code=303)


# --- selling more: order bumps, upsells, downsells, subscription reminders; the bot's texts ----------

FOLLOWUP_FIELDS = {
    "upsells": ("after_offer", "delay", "text", "media_url", "offer"),
    "downsells": ("when", "delay", "text", "media_url", "offer", "discount_percent", "price"),
}
NEW_FOLLOWUPS = 1


def _followup_rows(table: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    fields = FOLLOWUP_FIELDS[kind]
    rows = [{"index": i, **{k: str(f.get(k, "")) for k in fields}} for i, f in enumerate(table.get(kind) or [])]
    rows += [{"index": len(rows) + i, **dict.fromkeys(fields, ""), "new": True} for i in range(NEW_FOLLOWUPS)]
    for row in rows:
        if row.get("price"):
            row["price"] = _price_text(row["price"])
    return rows


def _selling_page(request: Request, session: sessions.Session, scope: Scope, table: dict[str, Any], status: int = 200,
                  error: ConfigError | None = None, saved: str | None = None) -> Response:  # fmt: skip
    config = scope.bot(table["id"])
    offers = [{"id": o["id"], "label": o.get("label", o["id"]), "bump": o.get("bump", ""),
               "texts": (table.get("bumps") or {}).get(o["id"], {})} for o in table.get("offers") or []]  # fmt: skip
    reminders = ", ".join((table.get("subscriptions") or {}).get("remind_before", []))
    return render(request, "bot_selling.html", session, status, account=scope.account, bot=config, offers=offers,
                  upsells=_followup_rows(table, "upsells"), downsells=_followup_rows(table, "downsells"),
                  reminders=reminders, saved=saved, **refusal(error))  # fmt: skip


def _stored_bot(scope: Scope, bot_id: str) -> dict[str, Any]:
    table = edit.bot(scope.account, scope.bot(bot_id).id)
    if table is None:
        raise NotFound(bot_id)
    return table


@seller_page
async def selling(request: Request, session: sessions.Session, scope: Scope) -> Response:
    table = _stored_bot(scope, request.path_params["bot_id"])
    return _selling_page(request, session, scope, table, saved=SAVED if request.query_params.get("saved") else None)


def _followups_from(form: dict[str, str], kind: str) -> list[dict[str, Any]]:
    out, index = [], 0
    while f"{kind}-{index}-text" in form:
        prefix = f"{kind}-{index}-"
        index += 1
        row = {k: form.get(prefix + k, "").strip() for k in FOLLOWUP_FIELDS[kind]}
        if form.get(prefix + "remove") or not (row["text"] or row["media_url"]):
            continue
        followup: dict[str, Any] = {k: v for k, v in row.items() if v}
        if "discount_percent" in followup:
            followup["discount_percent"] = _number(followup["discount_percent"])
        if "price" in followup:
            followup["price"] = _decimal_text(followup["price"])
        out.append(followup)
    return out


def _decimal_text(value: str) -> str:
    """A price typed the Brazilian way (1.234,50) as the file writes it (1234.50)."""
    value = value.replace("R$", "").strip()
    return value.replace(".", "").replace(",", ".") if "," in value else value


@seller_form
async def save_selling(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    table = _stored_bot(scope, request.path_params["bot_id"])
    bumps: dict[str, dict[str, str]] = {}
    for offer in table.get("offers") or []:
        slug = offer["id"]
        chosen = form.get(f"bump-{slug}", "")
        if chosen:
            offer["bump"] = chosen
        else:
            offer.pop("bump", None)
        texts = {k: v for k in ("text", "accept", "decline") if (v := form.get(f"bumps-{slug}-{k}", "").strip())}
        if texts:
            bumps[slug] = texts
    table["bumps"] = bumps
    for kind in FOLLOWUP_FIELDS:
        index = 0
        while f"{kind}-{index}-text" in form:  # an uploaded image or video stands for the row's URL
            upload = await uploaded(request, f"{kind}-{index}-media_file")
            if isinstance(upload, ConfigError):
                return _selling_page(request, session, scope, table, 422, upload)
            if upload is not None:
                form[f"{kind}-{index}-media_url"] = upload
            index += 1
        table[kind] = _followups_from(form, kind)
    reminders = [r.strip() for r in form.get("subscriptions-remind_before", "").split(",") if r.strip()]
    table["subscriptions"] = {"remind_before": reminders} if reminders else {}
    for name in ("bumps", "upsells", "downsells", "subscriptions"):
        if not table[name]:
            table.pop(name)
    try:
        edit.save(scope.account, _actor(request, scope), bots=[table])
    except ConfigError as exc:
        return _selling_page(request, session, scope, table, 422, edit.relative(exc, "bots[0]"))
    return RedirectResponse(f"/bots/{table['id']}/selling?saved=1", status_code=303)


# What each of a bot's texts is for, as the seller reads it (keys: catalog.schema.DEFAULT_TEXTS).
TEXTS = {
    "pix": "A mensagem com o código PIX ({code}: o código; {amount}: o valor)",
    "copy_button": "Botão que copia o código",
    "check_button": 'Botão "já paguei"',
    "payment_pending": 'Resposta do "já paguei" quando ainda não caiu',
    "payment_confirmed": "Pagamento confirmado",
    "charge_failed": "Quando o PIX não pôde ser gerado",
    "charge_expired": "Quando o PIX expirou",
    "bump": "Pergunta do order bump ({offer}, {amount})",
    "bump_accept": "Botão que aceita o order bump",
    "bump_decline": "Botão que recusa o order bump",
    "followup_button": "Botão de upsell e downsell ({offer}, {amount})",
    "broadcast_button": "Botão das transmissões ({offer}, {amount})",
    "reminder_text": "Lembrete de assinatura ({days}: dias que faltam)",
    "expired_text": "Assinatura vencida",
    "renew_button": "Botão de renovar ({amount})",
    "whatsapp_start": "WhatsApp: a primeira mensagem do link ({token}: o código do clique)",
    "choose_hint": "WhatsApp: quando a resposta não escolhe nada",
    "choices_button": "WhatsApp: botão que abre a lista de opções",
    "unavailable": "Quando a loja está suspensa",
}


@seller_page
async def texts(request: Request, session: sessions.Session, scope: Scope) -> Response:
    table = _stored_bot(scope, request.path_params["bot_id"])
    return _texts_page(request, session, scope, table, saved=SAVED if request.query_params.get("saved") else None)


def _texts_page(request: Request, session: sessions.Session, scope: Scope, table: dict[str, Any], status: int = 200,
                error: ConfigError | None = None, saved: str | None = None) -> Response:  # fmt: skip
    rows = [{"name": name, "label": label, "value": (table.get("texts") or {}).get(name, ""),
             "default": DEFAULT_TEXTS[name]} for name, label in TEXTS.items()]  # fmt: skip
    return render(request, "bot_texts.html", session, status, account=scope.account, bot=scope.bot(table["id"]),
                  rows=rows, saved=saved, **refusal(error))  # fmt: skip


@seller_form
async def save_texts(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    table = _stored_bot(scope, request.path_params["bot_id"])
    given = {name: value for name in TEXTS if (value := form.get(f"texts-{name}", "").strip())}
    table["texts"] = given
    if not given:
        table.pop("texts")
    try:
        edit.save(scope.account, _actor(request, scope), bots=[table])
    except ConfigError as exc:
        return _texts_page(request, session, scope, table, 422, edit.relative(exc, "bots[0]"))
    return RedirectResponse(f"/bots/{table['id']}/texts?saved=1", status_code=303)


# --- a new WhatsApp bot: Evolution API or the Cloud API ------------------------------------------

WHATSAPP = {"evolution": "WhatsApp (Evolution API)", "whatsapp_cloud": "WhatsApp (API oficial da Meta)"}
WHATSAPP_LABELS = {
    "number": "Número do WhatsApp (só dígitos, com 55 e DDD)",
    "evolution_url": "Endereço do servidor Evolution (https://...)",
    "instance": "Nome da instância",
    "apikey": "apikey da instância",
    "webhook_secret": "Segredo do webhook (em branco: a plataforma cria um)",
    "phone_number_id": "Phone number ID",
    "waba_id": "WhatsApp Business Account ID",
    "access_token": "Token de acesso (permanente)",
    "app_secret": "App secret do app da Meta",
    "verify_token": "Verify token (em branco: a plataforma cria um)",
    "access_template": "Modelo aprovado para entregar fora da janela de 24 h (opcional)",
    "access_template_language": "Idioma do modelo (ex.: pt_BR)",
}
MADE_SECRETS = ("webhook_secret", "verify_token")  # made by the platform when left blank


def _whatsapp_fields(channel: str, given: dict[str, str]) -> list[dict[str, Any]]:
    keys = {"number": True, **WHATSAPP_KEYS[channel]}
    return [{"name": name, "label": WHATSAPP_LABELS.get(name, name), "secret": is_secret(name),
             "required": required and name not in MADE_SECRETS,
             "value": "" if is_secret(name) else given.get(name, "")} for name, required in keys.items()]  # fmt: skip


def _whatsapp_page(request: Request, session: sessions.Session, scope: Scope, channel: str, form: dict[str, str],
                   status: int = 200, error: ConfigError | None = None) -> Response:  # fmt: skip
    return render(request, "bot_new_whatsapp.html", session, status, account=scope.account, channel=channel,
                  channel_label=WHATSAPP[channel], fields=_whatsapp_fields(channel, form), form=form,
                  gateways=[g["id"] for g in scope.gateways()], **refusal(error))  # fmt: skip


@seller_page
async def new_whatsapp_bot(request: Request, session: sessions.Session, scope: Scope) -> Response:
    channel = request.query_params.get("channel", "")
    if channel not in WHATSAPP:
        raise NotFound(channel)
    return _whatsapp_page(request, session, scope, channel, {})


def add_whatsapp_bot(scope: Scope, actor: str, channel: str, given: dict[str, str],
                     gateway_id: str = "") -> tuple[str, bool]:  # fmt: skip
    """A WhatsApp number's bot: its keys saved (the secrets left blank made here); Evolution is
    then told where to post (webhook/set). (its id, whether the webhook was taken)."""
    if channel not in WHATSAPP:
        raise NotFound(channel)
    if gateway_id:
        scope.gateway(gateway_id)
    bot_id = slug_from(given.get("id", "").strip())
    if not bot_id or scope.bot_id_taken(bot_id):
        raise Refused("id", "Escolha outro nome (só letras, números, - e _; este já existe).")
    table: dict[str, Any] = {"id": bot_id, "channel": channel, "welcome": {"text": WELCOME}}
    for field in _whatsapp_fields(channel, given):
        value = str(given.get(field["name"], "")).strip()
        if not value and field["name"] in MADE_SECRETS:
            value = secrets.token_urlsafe(24)
        if value:
            table[field["name"]] = value
    if gateway_id:
        table["gateway"] = gateway_id
    _save_new(scope, actor, table)
    return bot_id, _set_webhook(scope, bot_id) if channel == "evolution" else True


@seller_form
async def create_whatsapp_bot(request: Request, session: sessions.Session, scope: Scope,
                              form: dict[str, str]) -> Response:  # fmt: skip
    channel = form.get("channel", "")
    try:
        bot_id, webhook = await in_thread(add_whatsapp_bot, scope, _actor(request, scope), channel, form,
                                                  form.get("gateway", ""))  # fmt: skip
    except Refused as exc:
        return _whatsapp_page(request, session, scope, channel, form, 422, ConfigError(exc.field, str(exc)))
    return RedirectResponse(f"/bots/{bot_id}/edit?created=1" + ("" if webhook else "&webhook=0"), status_code=303)


# --- "test connection": the gateway's cheapest authenticated call ---------------------------------

PROBE_ID = "grimbots-connection-test"  # a charge no gateway has: asking for it proves the credentials


def probe_gateway(table: dict[str, Any]) -> tuple[bool, str]:
    """Ask the gateway for a charge that does not exist, with the seller's credentials: "not found"
    means they were accepted; 401/403 that they were refused. (ok, what to tell the seller)."""
    kind = table["kind"]
    options = {k: v for k, v in table.items() if k in OPTIONS[kind]}
    try:
        adapter = registry.build(kind, gateway_id=table["id"], webhook_secret=table["webhook_secret"],
                                 options=options, client=PANEL.payments, bank=PANEL.redis)  # fmt: skip
        adapter.fetch_status(PROBE_ID)
    except PaymentPermanent as exc:
        if "credentials rejected" in str(exc):
            status = str(exc).split("(")[-1].rstrip(")")
            return False, f"O gateway recusou as credenciais ({status}). Confira e salve de novo."
        if kind == "sandbox":
            return True, "Sandbox pronto (ele não usa rede nem banco)."
        return True, "Conectado: o gateway aceitou as credenciais."
    except PaymentTransient as exc:
        return False, f"O gateway não respondeu agora ({str(exc).split(': ', 1)[-1]}). Tente de novo em instantes."
    except (ValueError, KeyError) as exc:
        return False, f"Configuração incompleta ({type(exc).__name__})."
    return True, "Conectado: o gateway aceitou as credenciais."


@seller_form
async def test_gateway(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    table = scope.gateway(request.path_params["gateway_id"])
    ok, said = await run_in_threadpool(probe_gateway, table)
    return render(request, "gateway.html", session, probe={"ok": ok, "said": said},
                  **_gateway_context(scope, table, new=False))  # fmt: skip


# --- a bot's funnel as a file: exported, imported into another bot --------------------------------

FUNNEL_KEYS = ("welcome", "checkout", "texts", "offers", "bumps", "upsells", "downsells", "subscriptions")
FUNNEL_FILE_BYTES = 256 * 1024


@seller_page
async def export_funnel(request: Request, session: sessions.Session, scope: Scope) -> Response:
    """The bot's funnel (welcome, offers, selling more, texts, checkout) as a TOML file, with no
    credential: what "import" takes into this or another bot."""
    table = _stored_bot(scope, request.path_params["bot_id"])
    funnel = {k: table[k] for k in FUNNEL_KEYS if k in table}
    name = f"funil-{table['id']}.toml"
    return Response(
        tomli_w.dumps(funnel),
        media_type="application/toml; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@seller_form
async def import_funnel(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    """A funnel file replaces the bot's funnel (its channel, credentials and tracking stay), through
    the same validation: a refusal names the key, and nothing is written."""
    table = _stored_bot(scope, request.path_params["bot_id"])
    upload = (await request.form()).get("file")  # parsed (and its CSRF token checked) by seller_form
    raw = await upload.read(FUNNEL_FILE_BYTES + 1) if isinstance(upload, UploadFile) else b""
    problem = None
    funnel: dict[str, Any] = {}
    if not raw or len(raw) > FUNNEL_FILE_BYTES:
        problem = "Escolha o arquivo do funil (.toml, até 256 KB)."
    else:
        try:
            funnel = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problem = f"Este arquivo não é um funil exportado pelo GrimBots ({type(exc).__name__})."
        unknown = sorted(set(funnel) - set(FUNNEL_KEYS))
        if problem is None and unknown:
            problem = f"O arquivo tem chaves que um funil não tem: {', '.join(unknown)}."
    if problem is None:
        merged = {k: v for k, v in table.items() if k not in FUNNEL_KEYS} | funnel
        try:
            edit.save(scope.account, _actor(request, scope), bots=[merged])
        except ConfigError as exc:
            error = edit.relative(exc, "bots[0]")
            problem = f"{error.key}: {pt(str(error).split(': ', 1)[-1])}"
    if problem is not None:
        return _editor(request, session, scope, table, 422, saved=None, problem=problem)
    return RedirectResponse(f"/bots/{table['id']}/edit?saved=1", status_code=303)


# --- the bot's channel: a new token, a WhatsApp number's keys and pace ------------------------------


def _channel_fields(config: Any, table: dict[str, Any]) -> list[dict[str, Any]]:
    if config.channel == "telegram":
        return [{"name": "token", "label": "Novo token do BotFather (em branco: o mesmo)", "secret": True,
                 "value": "", "stored": _write_only(table.get("token"))}]  # fmt: skip
    keys = {"number": True, "rate_per_minute": False, **WHATSAPP_KEYS[config.channel]}
    labels = {**WHATSAPP_LABELS, "rate_per_minute": "Mensagens por minuto deste número (1 a 6000)"}
    return [{"name": name, "label": labels.get(name, name), "secret": is_secret(name),
             "value": "" if is_secret(name) else str(table.get(name, "")),
             "stored": _write_only(table.get(name)) if is_secret(name) else None} for name in keys]  # fmt: skip


def _channel_page(request: Request, session: sessions.Session, scope: Scope, table: dict[str, Any], status: int = 200,
                  error: ConfigError | None = None, saved: str | None = None) -> Response:  # fmt: skip
    config = scope.bot(table["id"])
    return render(request, "bot_channel.html", session, status, account=scope.account, bot=config,
                  fields=_channel_fields(config, table), saved=saved, **refusal(error))  # fmt: skip


@seller_page
async def channel(request: Request, session: sessions.Session, scope: Scope) -> Response:
    table = _stored_bot(scope, request.path_params["bot_id"])
    return _channel_page(request, session, scope, table, saved=SAVED if request.query_params.get("saved") else None)


def _save_channel(scope: Scope, actor: str, table: dict[str, Any], given: dict[str, str]) -> ConfigError | None:
    """The channel's keys from the form (a credential left blank keeps the stored one); a new
    Telegram token is checked with getMe first. Then saved, and the provider told the webhook."""
    config = scope.bot(table["id"])
    _merge(table, given, [field["name"] for field in _channel_fields(config, table)])
    if "rate_per_minute" in table:
        table["rate_per_minute"] = _number(str(table["rate_per_minute"]))
    if config.channel == "telegram" and table["token"] != config.token:
        if not TOKEN.fullmatch(table["token"]):
            return ConfigError("token", "Cole o token que o BotFather deu (números, dois-pontos, letras).")
        try:
            table["username"] = str(_telegram_bot(table["token"]).get("username") or table["username"])
        except TelegramError as exc:
            return ConfigError("token", f"O Telegram recusou este token ({exc.description}).")
    try:
        edit.save(scope.account, actor, bots=[table])
    except ConfigError as exc:
        refused = edit.relative(exc, "bots[0]")
        if refused.key == "token":
            return ConfigError("token", "Este token é de um bot de outra conta da plataforma.")
        return refused
    if config.channel != "whatsapp_cloud":
        _set_webhook(scope, table["id"])
    return None


@seller_form
async def save_channel(request: Request, session: sessions.Session, scope: Scope, form: dict[str, str]) -> Response:
    table = _stored_bot(scope, request.path_params["bot_id"])
    refused = await in_thread(_save_channel, scope, _actor(request, scope), table, form)
    if refused is not None:
        return _channel_page(request, session, scope, _stored_bot(scope, table["id"]), 422, refused)
    return RedirectResponse(f"/bots/{table['id']}/channel?saved=1", status_code=303)
