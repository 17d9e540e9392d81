"""E-mail to sellers (a password reset link) through the SMTP server of SMTP_URL:
`smtp://[user:password@]host[:port]` (plain; STARTTLS when the server offers it), or
`smtps://...` (TLS from the start, port 465 by default). Without SMTP_URL the platform sends no
mail, and links are made by the operator (`ops accounts reset-link`)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import settings

TIMEOUT_SECONDS = 10


class MailError(RuntimeError):
    """The mail could not be handed to the SMTP server (what it said, never the credentials)."""


def enabled() -> bool:
    return bool(settings.SMTP_URL)


def send(to: str, subject: str, body: str) -> None:
    url = urlsplit(settings.SMTP_URL or "")
    if url.scheme not in ("smtp", "smtps") or not url.hostname:
        raise MailError("SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = settings.SMTP_FROM, to, subject
    message.set_content(body)
    port = url.port or (465 if url.scheme == "smtps" else 25)
    try:
        if url.scheme == "smtps":
            server: smtplib.SMTP = smtplib.SMTP_SSL(url.hostname, port, timeout=TIMEOUT_SECONDS,
                                                    context=ssl.create_default_context())  # fmt: skip
        else:
            server = smtplib.SMTP(url.hostname, port, timeout=TIMEOUT_SECONDS)
        with server:
            server.ehlo()
            if url.scheme == "smtp" and server.has_extn("starttls"):
                server.starttls(context=ssl.create_default_context())
                server.ehlo()
            if url.username:
                server.login(unquote(url.username), unquote(url.password or ""))
            server.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"the SMTP server at {url.hostname}:{port} refused or did not answer "
                        f"({type(exc).__name__})") from None  # fmt: skip
