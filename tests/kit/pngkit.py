"""Reading the PNG screenshots the gateway takes (8-bit RGB, no interlace): their size and
pixels, with every chunk's CRC checked."""

from __future__ import annotations

import struct
import zlib


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the RGB rows (each prefixed by its filter byte) of an 8-bit RGB PNG
    (checks the chunk CRCs)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack_from(">IIBB", body)
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + width * 3)
    return width, height, raw


def pixel(width: int, raw: bytes, x: int, y: int) -> tuple[int, ...]:
    """The (r, g, b) of pixel (x, y) in ``png_pixels``'s rows."""
    start = y * (1 + width * 3) + 1 + x * 3
    return tuple(raw[start : start + 3])
