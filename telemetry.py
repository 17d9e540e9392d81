"""Logging and Sentry for every process: one line per event, and nothing secret leaves.

Bot tokens travel inside Telegram URLs (`/bot<token>/`), gateway keys in headers, buyers' data
in bodies; all of it is scrubbed before a log line is written or a Sentry event is sent."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextvars import ContextVar
from typing import Any

import settings

# A Telegram bot token anywhere in a string (URL, exception text, breadcrumb).
TOKEN_RE = re.compile(r"\b\d{5,20}:[A-Za-z0-9_-]{30,}\b")
BOT_PATH_RE = re.compile(r"/bot[^/\s]+/")
# Meta's access token rides in the Conversions API query string (and has its own shape: EAA...).
ACCESS_TOKEN_RE = re.compile(r"(access_token=)[^&\s\"']+|\bEAA[A-Za-z0-9]{20,}\b")
SECRET_HEADERS = {
    "authorization",
    "cookie",
    "set-cookie",
    "x-telegram-bot-api-secret-token",
    "x-sandbox-signature",
    "x-signature",
    "x-pushinpay-token",
    "x-webhook-signature",
    "apikey",
    "x-api-key",
}
REDACTED = "[redacted]"

# The id that follows one update from the edge through every actor message it causes: the edge's
# Dramatiq message id, carried on as the `correlation_id` option (actors/middleware.Correlation).
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def scrub_text(text: str) -> str:
    text = ACCESS_TOKEN_RE.sub(lambda m: (m.group(1) or "") + REDACTED, text)
    return TOKEN_RE.sub(REDACTED, BOT_PATH_RE.sub(f"/bot{REDACTED}/", text))


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 12:
        return value
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            lowered = str(key).lower()
            if lowered in SECRET_HEADERS or any(w in lowered for w in ("token", "secret", "password", "signature")):
                out[key] = REDACTED
            else:
                out[key] = _scrub(item, depth + 1)
        return out
    if isinstance(value, list):
        return [_scrub(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_scrub(item, depth + 1) for item in value)
    return value


def scrub_event(event: Any, hint: Any = None) -> Any:
    """Sentry before_send: drop request bodies, cookies and query strings, and the arguments of
    Dramatiq messages (a Telegram update, a buyer's IP); redact secret headers, tokens in any
    string, and local variables whose names say they hold secrets."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        if "query_string" in request:
            request["query_string"] = REDACTED
    message_context = (event.get("contexts") or {}).get("dramatiq")
    if isinstance(message_context, dict):
        message_context.pop("data", None)
    event.pop("user", None)
    return _scrub(event)


def scrub_breadcrumb(crumb: Any, hint: Any = None) -> Any:
    return _scrub(crumb)


def _message_name(value: Any) -> Any:
    """A Dramatiq message as its actor and id only, and an actor's arguments (logged at debug
    level) not at all: they are buyers' data."""
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

    if isinstance(value, (Message, MessageProxy)):
        return f"{value.actor_name}#{value.message_id}"
    if isinstance(value, (tuple, list, dict)):
        return REDACTED
    return value


def protect_logs() -> None:
    """Make every log record that names a Dramatiq message (Dramatiq's own "Failed to process
    message ..." among them) name it by actor and id only, before any handler or Sentry's logging
    integration sees it. Idempotent."""
    import dramatiq

    current = logging.getLogRecordFactory()
    if getattr(current, "_grimbots", False):
        return
    # By where the call is, not the logger's name: an actor's logger is named after its module.
    dramatiq_dir = os.path.dirname(dramatiq.__file__) + os.sep

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        if record.args and isinstance(record.args, tuple) and record.pathname.startswith(dramatiq_dir):
            record.args = tuple(_message_name(arg) for arg in record.args)
        return record

    factory._grimbots = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def init_sentry(dsn: str | None = None, *, transport: Any = None) -> bool:
    """Sentry for this process when a DSN is set. Call it before the Dramatiq broker is built:
    the integration adds its middleware to brokers created after it."""
    protect_logs()
    dsn = dsn or settings.SENTRY_DSN
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration
    from sentry_sdk.integrations.starlette import StarletteIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=settings.SENTRY_ENVIRONMENT,
        max_request_body_size="never",
        include_local_variables=False,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        integrations=[StarletteIntegration(), DramatiqIntegration()],
        traces_sample_rate=0.0,
        transport=transport,
    )
    return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        line = f"{when} {record.levelname.lower()} {record.name} {record.getMessage()}"
        cid = correlation_id.get()
        if cid:
            line += f" cid={cid}"
        if record.exc_info:
            line += f" exc={record.exc_info[0].__name__ if record.exc_info[0] else ''}"
        return scrub_text(line)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid:
            doc["cid"] = cid
        if record.exc_info and record.exc_info[0]:
            doc["exc"] = record.exc_info[0].__name__
        return scrub_text(json.dumps(doc, ensure_ascii=False))


def setup_logging() -> None:
    protect_logs()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if settings.LOG_FORMAT == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.LOG_LEVEL.upper())
    for noisy in ("httpx", "httpcore", "peewee", "dramatiq.worker.ConsumerThread", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
