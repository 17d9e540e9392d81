"""Every setting of the platform, read once from the environment (CONTRACT §2)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VAR_DIR = Path(os.environ.get("GRIMBOTS_VAR_DIR", ROOT / "var"))


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"setting {name} must be an integer, got {raw!r}") from None


def _secret_key() -> str:
    """SECRET_KEY from the environment, else the one generated into var/secret_key."""
    value = os.environ.get("SECRET_KEY", "").strip()
    if value:
        if value.upper().startswith("CHANGE-ME"):
            raise SystemExit(
                "SECRET_KEY is still the placeholder from ops/deploy/env.example: set a long random value, "
                "e.g. the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return value
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(48)
    # O_EXCL: when several processes start at once, exactly one key wins and all read it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(candidate + "\n")
    return candidate


DATABASE_URL = _env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'grimbots.sqlite3'}")
REDIS_URL = _env("REDIS_URL", "redis://127.0.0.1:6379/0")
PUBLIC_BASE_URL = _env("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
EDGE_HOST = _env("EDGE_HOST", "127.0.0.1")
EDGE_PORT = _env_int("EDGE_PORT", 8000)
TELEGRAM_API_BASE = _env("TELEGRAM_API_BASE", "https://api.telegram.org").rstrip("/")
META_GRAPH_BASE = _env("META_GRAPH_BASE", "https://graph.facebook.com").rstrip("/")
META_API_VERSION = _env("META_API_VERSION", "v21.0")
MERCADOPAGO_API_BASE = _env("MERCADOPAGO_API_BASE", "https://api.mercadopago.com").rstrip("/")
PUSHINPAY_API_BASE = _env("PUSHINPAY_API_BASE", "https://api.pushinpay.com.br").rstrip("/")
WOOVI_API_BASE = _env("WOOVI_API_BASE", "https://api.woovi.com").rstrip("/")
UTMIFY_API_BASE = _env("UTMIFY_API_BASE", "https://api.utmify.com.br").rstrip("/")
TIKTOK_API_BASE = _env("TIKTOK_API_BASE", "https://business-api.tiktok.com").rstrip("/")
# The seller panel (CONTRACT §14): accounts, sessions, pages. PANEL_BASE_URL is where sellers reach it
# (invite and reset links point there); PANEL_SIGNUP: "invite" (an operator's link) or "open".
PANEL_HOST = _env("PANEL_HOST", "127.0.0.1")
PANEL_PORT = _env_int("PANEL_PORT", 8100)
PANEL_BASE_URL = _env("PANEL_BASE_URL", f"http://{PANEL_HOST}:{PANEL_PORT}").rstrip("/")
PANEL_SIGNUP = _env("PANEL_SIGNUP", "invite")
# Mail to sellers (password reset links): smtp://[user:password@]host[:port] or smtps://...; unset: no mail.
SMTP_URL = os.environ.get("SMTP_URL", "").strip() or None
SMTP_FROM = _env("SMTP_FROM", "GrimBots <no-reply@localhost>")
API_RATE_PER_MINUTE = _env_int("API_RATE_PER_MINUTE", 120)  # an account's requests to /api/v1, per minute
SESSION_IDLE_SECONDS = _env_int("SESSION_IDLE_SECONDS", 12 * 3600)  # a session unused this long ends
SESSION_MAX_SECONDS = _env_int("SESSION_MAX_SECONDS", 7 * 86400)  # and every session ends after this
# The sellers' days in reports and the dashboard (an IANA zone name).
REPORT_TIMEZONE = _env("REPORT_TIMEZONE", "America/Sao_Paulo")
EDGE_MAX_BODY_BYTES = _env_int("EDGE_MAX_BODY_BYTES", 1_048_576)
SENTRY_DSN = os.environ.get("SENTRY_DSN", "").strip() or None
SENTRY_ENVIRONMENT = _env("SENTRY_ENVIRONMENT", "production")

# Extensions beyond the contract (documented in docs/operations.md).
LOG_FORMAT = _env("LOG_FORMAT", "text")  # text (key=value) | json
LOG_LEVEL = _env("LOG_LEVEL", "INFO")
# How long without a heartbeat before a worker's unacked messages go back to their queue.
WORKER_HEARTBEAT_TIMEOUT_MS = _env_int("WORKER_HEARTBEAT_TIMEOUT_MS", 10_000)
# Chance (per million broker commands) that a command also runs queue maintenance.
BROKER_MAINTENANCE_CHANCE = _env_int("BROKER_MAINTENANCE_CHANCE", 10_000)
# How often running processes look for configuration applied by `ops apply`.
CONFIG_POLL_SECONDS = float(_env("CONFIG_POLL_SECONDS", "1.0"))
# Telegram outbound limits, shared by every worker through Redis.
TELEGRAM_BOT_RATE = _env_int("TELEGRAM_BOT_RATE", 30)  # messages per bot in any TELEGRAM_WINDOW_MS
# The window of TELEGRAM_BOT_RATE (CONTRACT §10: at most 30 sends per bot in any 1-second window). A send
# counts from when its answer came back, so the limit holds as Telegram sees it (actors/throttle.py).
TELEGRAM_WINDOW_MS = _env_int("TELEGRAM_WINDOW_MS", 1000)
# Broadcasts created with --paid (allow_paid_broadcast: Telegram charges Stars per message over the
# free limit) are paced at this many messages per second per bot instead.
TELEGRAM_PAID_BROADCAST_RATE = _env_int("TELEGRAM_PAID_BROADCAST_RATE", 1000)
# Senders per running broadcast (each sends one message at a time): enough to fill the bot's rate
# at Telegram's latency (4 × ~100 ms round trips ≥ 30/s). Broadcast worker threads should be at
# least BROADCAST_LANES × broadcasts running at once.
BROADCAST_LANES = _env_int("BROADCAST_LANES", 4)
# A lane's claim on a batch of recipients: if its worker dies, they are sent by another lane after this.
BROADCAST_LEASE_SECONDS = _env_int("BROADCAST_LEASE_SECONDS", 60)
# How often the clock asks Telegram (getMe) whether a bot whose token was refused is back (CONTRACT §11: ≤ 60 s).
BOT_RECHECK_SECONDS = _env_int("BOT_RECHECK_SECONDS", 15)
TELEGRAM_CHAT_RATE = _env_int("TELEGRAM_CHAT_RATE", 1)  # messages per second per chat
TELEGRAM_CHAT_BURST = _env_int("TELEGRAM_CHAT_BURST", 3)  # a welcome's parts go out together
TELEGRAM_TIMEOUT_SECONDS = float(_env("TELEGRAM_TIMEOUT_SECONDS", "10"))
# WhatsApp (CONTRACT §12). Evolution shows "typing..." for this long before each text (its `delay`);
# its calls wait that long, so keep it short.
EVOLUTION_TYPING_MS = _env_int("EVOLUTION_TYPING_MS", 800)
WHATSAPP_TIMEOUT_SECONDS = float(_env("WHATSAPP_TIMEOUT_SECONDS", "15"))
# A WhatsApp lead's last numbered menu is answerable this long (seconds); a message that picks
# nothing from an older one (or from none) gets the welcome again, not the "pick a number" hint.
WHATSAPP_MENU_TTL = _env_int("WHATSAPP_MENU_TTL", 24 * 3600)
# Payment gateways: request timeout; when a quiet pending charge is first asked about (then with
# backoff up to PAYMENT_CHECK_MAX_SECONDS); how often the clock looks for such charges.
PAYMENT_TIMEOUT_SECONDS = float(_env("PAYMENT_TIMEOUT_SECONDS", "10"))
# Calls in flight to one gateway, across every worker: a slow gateway never holds every thread.
GATEWAY_CONCURRENCY = _env_int("GATEWAY_CONCURRENCY", 6)
PAYMENT_FIRST_CHECK_SECONDS = _env_int("PAYMENT_FIRST_CHECK_SECONDS", 60)
PAYMENT_CHECK_MAX_SECONDS = _env_int("PAYMENT_CHECK_MAX_SECONDS", 900)
RECONCILE_INTERVAL_SECONDS = _env_int("RECONCILE_INTERVAL_SECONDS", 30)
# One-use invite links made for delivery_chat_id stop working after this many hours.
DELIVERY_INVITE_HOURS = _env_int("DELIVERY_INVITE_HOURS", 72)
# Ad clicks (GET /r/{bot_id}): X-Forwarded-For is believed only from these proxies (comma-separated
# addresses or networks, e.g. "127.0.0.1,10.0.0.0/8"); otherwise the client is the socket's peer.
TRUSTED_PROXIES = _env("TRUSTED_PROXIES", "")
# Ad clicks live 7 days in Redis. CACHE_URL: a Redis of their own (run it with an evicting policy,
# e.g. maxmemory 256mb + volatile-lru), so a flood of clicks can never fill the one that holds the
# queues; unset, clicks share REDIS_URL under a ceiling of CLICK_MEMORY_MB of click data.
CACHE_URL = os.environ.get("CACHE_URL", "").strip() or None
# Sellers' uploaded images and videos (gateways/media.py): every machine that sends must read the
# same directory (a network volume when there are several).
MEDIA_DIR = Path(_env("MEDIA_DIR", str(VAR_DIR / "media")))
CLICK_MEMORY_MB = _env_int("CLICK_MEMORY_MB", 256)
# Clicks over these rates still reach the bot (302), untracked: no Redis write, no PageView.
CLICKS_PER_IP_PER_MINUTE = _env_int("CLICKS_PER_IP_PER_MINUTE", 30)
CLICKS_PER_BOT_PER_SECOND = _env_int("CLICKS_PER_BOT_PER_SECOND", 300)
# Meta Conversions API: request timeout; how long a new event waits for others to share its request.
META_TIMEOUT_SECONDS = float(_env("META_TIMEOUT_SECONDS", "10"))
META_LINGER_MS = _env_int("META_LINGER_MS", 1000)
# A Telegram send claimed by a worker that has not recorded its outcome this long is decided then:
# what the buyer is owed is sent again (the worker died with the request in flight), marketing is not.
# Longer than any Telegram call can take (TELEGRAM_TIMEOUT_SECONDS and a flood wait slept inline).
OUTBOX_STALE_CLAIM_SECONDS = _env_int("OUTBOX_STALE_CLAIM_SECONDS", 120)
# A /start's welcome or a button's PIX code not recorded done this long after the update is
# re-driven by the clock (then with backoff), whatever Redis lost.
OWED_REDRIVE_SECONDS = _env_int("OWED_REDRIVE_SECONDS", 30)
# Prometheus metrics (they include every seller's revenue): served by the edge process on this
# private listener (0 = off); on the public listener /metrics needs `Authorization: Bearer METRICS_TOKEN`.
METRICS_HOST = _env("METRICS_HOST", "127.0.0.1")
METRICS_PORT = _env_int("METRICS_PORT", 9100)
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "").strip() or None
# Processed-update records older than this are pruned by the clock (Telegram keeps updates 24 h).
PROCESSED_UPDATE_RETENTION_HOURS = _env_int("PROCESSED_UPDATE_RETENTION_HOURS", 72)

SECRET_KEY = _secret_key()
# Earlier keys, comma-separated, newest first: credentials encrypted and click tokens signed with
# them still work after SECRET_KEY changes (`python -m ops rotate-credentials` re-encrypts).
SECRET_KEY_FALLBACKS = tuple(k.strip() for k in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if k.strip())
