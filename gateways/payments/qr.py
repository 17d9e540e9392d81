"""QR images of BR Codes, rendered here: a third-party QR service would see every code we issue.

qrcode builds the matrix (the mask is fixed: any of the eight is valid, and scoring them all is
three quarters of qrcode's time); the PNG is written here, one bit per pixel, each module a
square of MODULE_PIXELS (~5 ms per image in all, the matrix most of it)."""

from __future__ import annotations

import struct
import zlib

import qrcode
from qrcode.constants import ERROR_CORRECT_M

MODULE_PIXELS = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def matrix(code: str) -> list[list[bool]]:
    """The QR modules of `code`, quiet zone included (True = dark)."""
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=4, mask_pattern=0)
    qr.add_data(code)
    qr.make(fit=True)
    return qr.get_matrix()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(code: str, module_pixels: int = MODULE_PIXELS) -> bytes:
    """A black-on-white 1-bit grayscale PNG of the code's QR symbol."""
    modules = matrix(code)
    side = len(modules) * module_pixels
    scanlines = []
    for row in modules:
        bits = "".join(("0" if dark else "1") * module_pixels for dark in row)  # 0 = black
        bits += "1" * (-len(bits) % 8)
        line = b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")  # filter type 0 (none)
        scanlines.extend([line] * module_pixels)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, grayscale, no interlace
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(scanlines)))
        + _chunk(b"IEND", b"")
    )
