"""QR images of BR Codes, rendered here: a third-party QR service would see every code we issue.

The code is one byte-mode segment at error correction level M, with a fixed mask (any of the eight
is valid; scoring them all is most of a QR library's time). Its codewords — bits, padding and the
Reed–Solomon error correction of each block — are computed here with table-driven arithmetic
(the `qrcode` library does it bit by bit and polynomial by polynomial: ~3 ms of a 4 ms symbol);
`qrcode` then places them with its function patterns (its precomputed blanks, format and version
information). The PNG is written here too, one bit per pixel, each module a square of
MODULE_PIXELS. Tests compare every matrix with `qrcode`'s own encoding of the same data."""

from __future__ import annotations

import struct
import zlib
from bisect import bisect_left
from functools import cache

import qrcode
from qrcode import base, util
from qrcode.constants import ERROR_CORRECT_M

MODULE_PIXELS = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BORDER = 4
MASK = 0
BYTE_MODE = 0b0100
PADDING = (0xEC, 0x11)

# GF(256) with the QR polynomial x^8 + x^4 + x^3 + x^2 + 1.
EXP = [0] * 512
LOG = [0] * 256
_x = 1
for _i in range(255):
    EXP[_i] = _x
    LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D
for _i in range(255, 512):
    EXP[_i] = EXP[_i - 255]


@cache
def _generator(degree: int) -> tuple[int, ...]:
    """The Reed–Solomon generator polynomial's coefficients after the leading 1, as logarithms."""
    poly = [1]
    for i in range(degree):  # multiply by (x - a^i)
        poly = [a ^ (EXP[LOG[b] + i] if b else 0) for a, b in zip([*poly, 0], [0, *poly], strict=True)]
    return tuple(LOG[c] for c in poly[1:])


def _error_correction(data: list[int], degree: int) -> list[int]:
    """The remainder of data(x) · x^degree divided by the generator: the block's EC codewords."""
    gen = _generator(degree)
    rest = [0] * degree
    for byte in data:
        factor = byte ^ rest[0]
        del rest[0]
        rest.append(0)
        if factor:
            shift = LOG[factor]
            for j, g in enumerate(gen):
                rest[j] ^= EXP[g + shift]
    return rest


def _version(length: int) -> int:
    """The smallest version whose level-M capacity holds `length` bytes in one byte segment."""
    limits = util.BIT_LIMIT_TABLE[ERROR_CORRECT_M]
    version = bisect_left(limits, 4 + 8 + 8 * length, 1)
    if version >= 10:  # the character count takes 16 bits from version 10 on
        version = bisect_left(limits, 4 + 16 + 8 * length, version)
    if version > 40:
        raise ValueError(f"{length} bytes do not fit in a QR code at level M")
    return version


def codewords(data: bytes, version: int) -> list[int]:
    """Data and error-correction codewords, interleaved as they are placed in the symbol."""
    blocks = base.rs_blocks(version, ERROR_CORRECT_M)
    capacity = sum(b.data_count for b in blocks)
    count_bits = 8 if version < 10 else 16
    value, bits = (BYTE_MODE << count_bits) | len(data), 4 + count_bits
    value, bits = (value << 8 * len(data)) | int.from_bytes(data, "big"), bits + 8 * len(data)
    terminator = min(4, capacity * 8 - bits)
    value, bits = value << terminator, bits + terminator
    value, bits = value << (-bits % 8), bits + (-bits % 8)
    stream = list(value.to_bytes(bits // 8, "big"))
    stream += [PADDING[i % 2] for i in range(capacity - len(stream))]
    data_blocks, ec_blocks, at = [], [], 0
    for block in blocks:
        chunk = stream[at : at + block.data_count]
        at += block.data_count
        data_blocks.append(chunk)
        ec_blocks.append(_error_correction(chunk, block.total_count - block.data_count))
    out = [b[i] for i in range(max(map(len, data_blocks))) for b in data_blocks if i < len(b)]
    return out + [b[i] for i in range(max(map(len, ec_blocks))) for b in ec_blocks if i < len(b)]


def matrix(code: str) -> list[list[bool]]:
    """The QR modules of `code`, quiet zone included (True = dark)."""
    data = code.encode("utf-8")
    qr = qrcode.QRCode(version=_version(len(data)), error_correction=ERROR_CORRECT_M, border=BORDER,
                       mask_pattern=MASK)  # fmt: skip
    qr.data_cache = codewords(data, qr.version)
    qr.makeImpl(False, MASK)
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
