"""QR images of BR Codes, rendered here: a third-party QR service would see every code we issue.

qrcode builds the matrix; the mask is fixed (any of the eight is valid, and scoring them all is
three quarters of qrcode's time); Pillow scales it and writes the PNG (~8 ms per image)."""

from __future__ import annotations

import io

import qrcode
from PIL import Image
from qrcode.constants import ERROR_CORRECT_M

MODULE_PIXELS = 8


def matrix(code: str) -> list[list[bool]]:
    """The QR modules of `code`, quiet zone included (True = dark)."""
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=4, mask_pattern=0)
    qr.add_data(code)
    qr.make(fit=True)
    return qr.get_matrix()


def png(code: str, module_pixels: int = MODULE_PIXELS) -> bytes:
    modules = matrix(code)
    size = len(modules)
    raw = bytes(0 if dark else 255 for row in modules for dark in row)
    image = Image.frombytes("L", (size, size), raw)
    image = image.resize((size * module_pixels, size * module_pixels), Image.Resampling.NEAREST).convert("1")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
