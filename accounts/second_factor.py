"""The optional TOTP second factor (RFC 6238, 30-second steps, 6 digits; required for operators) and
its one-use recovery codes.

- A code is accepted for the step before, the current and the one after (a phone's clock a little
  off), and each works once: the account keeps the last used step, moved forward only by an
  atomic update, so the same code replayed (even by two requests at once) is refused.
- Recovery codes (10, shown once) are kept as SHA-256; each is spent by one atomic update."""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
import time

import pyotp
import qrcode
import qrcode.image.svg

from db.database import transaction, utcnow
from db.models import Account, RecoveryCode

STEP_SECONDS = 30
RECOVERY_CODES = 10
ISSUER = "GrimBots"


def new_secret() -> str:
    return pyotp.random_base32()


def uri(secret: str, email: str) -> str:
    """The otpauth:// URI an authenticator app reads (from the QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_svg(text: str) -> str:
    """The QR code of `text` as an inline SVG (drawn on the server: no script, no CDN)."""
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    out = io.BytesIO()
    image.save(out)
    return out.getvalue().decode().split("?>", 1)[-1].strip()


def _step(secret: str, code: str, now: float | None = None) -> int | None:
    """The step whose code `code` is (the one before, now, or after), or None."""
    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit():
        return None
    totp, now = pyotp.TOTP(secret), time.time() if now is None else now
    for offset in (0, -1, 1):
        at = now + offset * STEP_SECONDS
        if hmac.compare_digest(totp.at(int(at)), code):
            return int(at // STEP_SECONDS)
    return None


def check(account: Account, code: str, now: float | None = None) -> bool:
    """Is `code` the account's current code, not used before? Using it spends it (and every earlier one)."""
    if not account.totp_secret:
        return False
    step = _step(account.totp_secret, code, now)
    if step is None:
        return False
    spent = Account.update(totp_step=step).where(
        (Account.id == account.id) & (Account.totp_step.is_null() | (Account.totp_step < step))).execute()  # fmt: skip
    return bool(spent)


def enable(account: Account, secret: str, code: str, now: float | None = None) -> list[str] | None:
    """Turn the second factor on with `secret` once `code` proves the app has it; the new recovery
    codes (to show once), or None when the code is wrong."""
    step = _step(secret, code, now)
    if step is None:
        return None
    with transaction():
        Account.update(totp_secret=secret, totp_step=step, updated_at=utcnow()).where(
            Account.id == account.id).execute()  # fmt: skip
        return _new_codes(account)


def disable(account: Account) -> None:
    with transaction():
        Account.update(totp_secret=None, totp_step=None, updated_at=utcnow()).where(Account.id == account.id).execute()
        RecoveryCode.delete().where(RecoveryCode.account == account.id).execute()


def new_recovery_codes(account: Account) -> list[str]:
    """A fresh set of recovery codes; the old ones stop working."""
    with transaction():
        return _new_codes(account)


def _new_codes(account: Account) -> list[str]:
    RecoveryCode.delete().where(RecoveryCode.account == account.id).execute()
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODES)]
    RecoveryCode.insert_many([{"account": account.id, "code_hash": _hash(c)} for c in codes]).execute()
    return codes


def use_recovery_code(account: Account, code: str) -> bool:
    spent = RecoveryCode.update(used_at=utcnow()).where(
        (RecoveryCode.account == account.id) & (RecoveryCode.code_hash == _hash(code)) & RecoveryCode.used_at.is_null()
    ).execute()  # fmt: skip
    return bool(spent)


def recovery_codes_left(account: Account) -> int:
    return int(RecoveryCode.select().where((RecoveryCode.account == account.id) & RecoveryCode.used_at.is_null())
               .count())  # fmt: skip


def _hash(code: str) -> str:
    normal = "".join(code.lower().split()).replace("-", "")
    return hashlib.sha256(normal.encode()).hexdigest()
