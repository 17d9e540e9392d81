"""PIX BR Codes ("copia e cola"): the EMV merchant-presented payload of the Banco Central manual.

TLV fields are a two-digit id, a two-digit decimal length and the value; the payload ends with
field 63, a CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection) over everything up to and
including "6304", as four uppercase hex digits."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

TXID = re.compile(r"^[A-Za-z0-9]{1,25}$")


class BRCodeError(ValueError):
    pass


def crc16_ccitt_false(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def tlv(field_id: str, value: str) -> str:
    if len(value) > 99:
        raise BRCodeError(f"field {field_id} is longer than 99 characters")
    return f"{field_id}{len(value):02d}{value}"


def _plain(text: str, limit: int) -> str:
    """Names and cities in BR Codes are plain ASCII, upper-cased by convention, within a limit."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return ascii_text.strip()[:limit]


def with_crc(payload_without_crc: str) -> str:
    body = payload_without_crc + "6304"
    return body + f"{crc16_ccitt_false(body.encode()):04X}"


def static_pix(*, pix_key: str, amount: Decimal, merchant_name: str, merchant_city: str, txid: str) -> str:
    """A static BR Code for `amount` BRL to `pix_key`, carrying `txid` in field 62/05."""
    if not TXID.match(txid):
        raise BRCodeError("txid must be 1-25 letters or digits")
    if amount <= 0:
        raise BRCodeError("amount must be positive")
    account = tlv("00", "br.gov.bcb.pix") + tlv("01", pix_key)
    payload = (
        tlv("00", "01")
        + tlv("26", account)
        + tlv("52", "0000")
        + tlv("53", "986")
        + tlv("54", f"{amount.quantize(Decimal('0.01'))}")
        + tlv("58", "BR")
        + tlv("59", _plain(merchant_name, 25))
        + tlv("60", _plain(merchant_city, 15))
        + tlv("62", tlv("05", txid))
    )
    return with_crc(payload)


def parse(code: str) -> dict[str, str]:
    """The top-level fields of a BR Code, after checking its CRC; nested fields stay raw."""
    if len(code) < 8 or code[-8:-4] != "6304":
        raise BRCodeError("no CRC field at the end")
    expected = f"{crc16_ccitt_false(code[:-4].encode()):04X}"
    if code[-4:].upper() != expected:
        raise BRCodeError("CRC does not match")
    return parse_fields(code[:-8])


def parse_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    i = 0
    while i < len(text):
        if i + 4 > len(text) or not text[i + 2 : i + 4].isdigit():
            raise BRCodeError(f"malformed field at position {i}")
        field_id, length = text[i : i + 2], int(text[i + 2 : i + 4])
        value = text[i + 4 : i + 4 + length]
        if len(value) != length:
            raise BRCodeError(f"field {field_id} is shorter than its length")
        fields[field_id] = value
        i += 4 + length
    return fields
