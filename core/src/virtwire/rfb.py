"""RFB (the VNC protocol, RFC 6143): what the gateway needs to sit between a client and a VM's
VNC server, independent of any backend.

- :func:`client_handshake`: version, security (None or VNC authentication with DES),
  ClientInit, ServerInit, as a client of the VM's server;
- :func:`serve_handshake`: the server side offered to a browser (security "None" only: the
  gateway authenticated to the VM itself), replaying the VM's ServerInit;
- :class:`ClientMessages`: the boundaries of a client→server message stream, so that the
  gateway's own events are injected only between complete messages;
- :func:`key_event`, :func:`pointer_event`: event encoding;
- :class:`Framebuffer` and :func:`read_server_message`: decoding Raw and CopyRect updates
  into pixels, and :func:`png` to encode them.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

from .consoles import ByteStream

VERSION_38 = b"RFB 003.008\n"

SEC_INVALID = 0
SEC_NONE = 1
SEC_VNC_AUTH = 2

# Encodings the gateway's own connection asks for.
ENC_RAW = 0
ENC_COPYRECT = 1
ENC_DESKTOP_SIZE = -223
#: Pseudo-encoding of the 7-byte extended PointerEvent; dropped from clients' SetEncodings
#: so that a PointerEvent is always 6 bytes long.
ENC_EXTENDED_MOUSE_BUTTONS = -316


class RfbError(Exception):
    """The peer broke the protocol or refused us; the message says how."""


class BadClientData(RfbError):
    """Client data that is not an RFB message stream. ``forward`` holds the complete messages
    before the bad one: forward them, drop the rest; the stream stays at a boundary."""

    def __init__(self, message: str, forward: bytes) -> None:
        super().__init__(message)
        self.forward = forward


class AuthFailed(RfbError):
    """The VM's VNC server refused the password (or wants one nobody knows)."""


# -- pixel format and ServerInit -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PixelFormat:
    bits_per_pixel: int
    depth: int
    big_endian: bool
    true_colour: bool
    red_max: int
    green_max: int
    blue_max: int
    red_shift: int
    green_shift: int
    blue_shift: int

    _STRUCT = struct.Struct(">BBBBHHHBBB3x")

    @classmethod
    def unpack(cls, data: bytes) -> PixelFormat:
        bpp, depth, be, tc, rm, gm, bm, rs, gs, bs = cls._STRUCT.unpack(data)
        return cls(bpp, depth, bool(be), bool(tc), rm, gm, bm, rs, gs, bs)

    def pack(self) -> bytes:
        return self._STRUCT.pack(
            self.bits_per_pixel,
            self.depth,
            int(self.big_endian),
            int(self.true_colour),
            self.red_max,
            self.green_max,
            self.blue_max,
            self.red_shift,
            self.green_shift,
            self.blue_shift,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``pixelFormat`` of ``vnc-connect-response``."""
        return {
            "bitsPerPixel": self.bits_per_pixel,
            "depth": self.depth,
            "bigEndian": self.big_endian,
            "trueColour": self.true_colour,
            "redMax": self.red_max,
            "greenMax": self.green_max,
            "blueMax": self.blue_max,
            "redShift": self.red_shift,
            "greenShift": self.green_shift,
            "blueShift": self.blue_shift,
        }


#: 32 bits per pixel, little-endian, 8 bits per channel: B, G, R, X in memory.
BGRX = PixelFormat(32, 24, False, True, 255, 255, 255, 16, 8, 0)


@dataclass(frozen=True, slots=True)
class ServerInit:
    width: int
    height: int
    pixel_format: PixelFormat
    name: str

    def pack(self) -> bytes:
        name = self.name.encode()
        return (
            struct.pack(">HH", self.width, self.height)
            + self.pixel_format.pack()
            + struct.pack(">I", len(name))
            + name
        )


# -- reading ---------------------------------------------------------------------------
class Reader:
    """Exact reads over a :class:`ByteStream`, keeping what was read beyond."""

    __slots__ = ("_buf", "stream")

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self._buf = bytearray()

    async def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = await self.stream.read()
            if not chunk:
                raise RfbError("connection closed by the VNC peer")
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def into(self, target: memoryview) -> None:
        """Fill ``target`` (large payloads, without an intermediate copy when possible)."""
        n = len(target)
        have = min(n, len(self._buf))
        target[:have] = self._buf[:have]
        del self._buf[:have]
        while have < n:
            chunk = await self.stream.read()
            if not chunk:
                raise RfbError("connection closed by the VNC peer")
            take = min(n - have, len(chunk))
            target[have : have + take] = chunk[:take]
            have += take
            if take < len(chunk):
                self._buf += chunk[take:]

    def take_buffered(self) -> bytes:
        """Whatever was read but not consumed (hand it on before reading the stream)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data


async def _reason(reader: Reader) -> str:
    (length,) = struct.unpack(">I", await reader.exactly(4))
    return (await reader.exactly(min(length, 4096))).decode(errors="replace")


def _parse_version(data: bytes) -> tuple[int, int]:
    if len(data) != 12 or not data.startswith(b"RFB ") or data[7:8] != b"." or data[11:] != b"\n":
        raise RfbError(f"not an RFB server (greeting {data[:12]!r})")
    try:
        return int(data[4:7]), int(data[8:11])
    except ValueError:
        raise RfbError(f"bad RFB version {data!r}") from None


# -- VNC authentication ----------------------------------------------------------------
def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """DES-ECB of the 16-byte ``challenge`` keyed by the password (8 bytes, zero padded,
    each byte bit-reversed as RFB's DES expects)."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    if len(challenge) != 16:
        raise RfbError("VNC authentication challenge must be 16 bytes")
    key = bytes(_reverse_bits(b) for b in password.encode("latin-1", "replace")[:8].ljust(8, b"\0"))
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # K,K,K: single DES
    return encryptor.update(challenge) + encryptor.finalize()


# -- handshakes ------------------------------------------------------------------------
async def client_handshake(
    stream: ByteStream, password: str | None, *, shared: bool = True
) -> tuple[ServerInit, Reader]:
    """Connect as a client to the VNC server behind ``stream``: version (3.3, 3.7 or 3.8),
    security None or VNC authentication with ``password``, ClientInit, ServerInit. Returns the
    ServerInit and the reader (it may hold bytes the server sent after ServerInit). Raises
    :class:`AuthFailed` or :class:`RfbError`."""
    reader = Reader(stream)
    major, minor = _parse_version(await reader.exactly(12))
    if major != 3:
        raise RfbError(f"unsupported RFB version {major}.{minor}")
    minor = 8 if minor >= 8 else 7 if minor == 7 else 3
    await stream.write(b"RFB 003.%03d\n" % minor)
    if minor == 3:
        (sec,) = struct.unpack(">I", await reader.exactly(4))
        if sec == SEC_INVALID:
            raise RfbError(f"VNC server refused the connection: {await _reason(reader)}")
        if sec not in (SEC_NONE, SEC_VNC_AUTH):
            raise RfbError(f"unsupported VNC security type {sec}")
    else:
        (count,) = await reader.exactly(1)
        if count == 0:
            raise RfbError(f"VNC server refused the connection: {await _reason(reader)}")
        offered = set(await reader.exactly(count))
        if password is not None and SEC_VNC_AUTH in offered:
            sec = SEC_VNC_AUTH
        elif SEC_NONE in offered:
            sec = SEC_NONE
        elif SEC_VNC_AUTH in offered:
            raise AuthFailed("the VNC server asks for a password and none is known for this VM")
        else:
            raise RfbError(
                f"no supported VNC security type (server offers {sorted(offered)}; "
                "virtwire speaks None and VNC authentication)"
            )
        await stream.write(bytes([sec]))
    if sec == SEC_VNC_AUTH:
        if password is None:
            raise AuthFailed("the VNC server asks for a password and none is known for this VM")
        challenge = await reader.exactly(16)
        await stream.write(vnc_auth_response(password, challenge))
    if sec == SEC_VNC_AUTH or minor == 8:
        (result,) = struct.unpack(">I", await reader.exactly(4))
        if result != 0:
            reason = await _reason(reader) if minor == 8 else "authentication failed"
            raise AuthFailed(f"VNC authentication failed: {reason}")
    await stream.write(bytes([1 if shared else 0]))
    width, height = struct.unpack(">HH", await reader.exactly(4))
    pixel_format = PixelFormat.unpack(await reader.exactly(16))
    (name_len,) = struct.unpack(">I", await reader.exactly(4))
    name = (await reader.exactly(min(name_len, 65536))).decode(errors="replace")
    if name_len > 65536:
        await reader.exactly(name_len - 65536)
    return ServerInit(width, height, pixel_format, name), reader


async def serve_handshake(stream: ByteStream, init: ServerInit) -> Reader:
    """Be the server for a client (a browser's noVNC): RFB 3.8, security "None" only, then
    ``init`` as ServerInit. Returns the reader of the client's stream (it may hold the first
    client messages). Raises :class:`RfbError` if the client does not follow."""
    reader = Reader(stream)
    await stream.write(VERSION_38)
    major, minor = _parse_version(await reader.exactly(12))
    if (major, minor) < (3, 3) or major != 3:
        raise RfbError(f"unsupported RFB version {major}.{minor} from the client")
    if minor >= 7:
        await stream.write(bytes([1, SEC_NONE]))
        (choice,) = await reader.exactly(1)
        if choice != SEC_NONE:
            raise RfbError(f"client chose security type {choice}, only None is offered")
        if minor >= 8:
            await stream.write(struct.pack(">I", 0))
    else:
        await stream.write(struct.pack(">I", SEC_NONE))
    await reader.exactly(1)  # ClientInit: shared flag (the gateway's connection is shared)
    await stream.write(init.pack())
    return reader


# -- client messages -------------------------------------------------------------------
def key_event(keysym: int, down: bool) -> bytes:
    return struct.pack(">BBxxI", 4, 1 if down else 0, keysym & 0xFFFFFFFF)


def pointer_event(mask: int, x: int, y: int) -> bytes:
    return struct.pack(">BBHH", 5, mask & 0x7F, max(0, min(x, 0xFFFF)), max(0, min(y, 0xFFFF)))


def set_encodings(encodings: list[int]) -> bytes:
    return struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings)


def set_pixel_format(pf: PixelFormat) -> bytes:
    return b"\x00\x00\x00\x00" + pf.pack()


def update_request(incremental: bool, x: int, y: int, width: int, height: int) -> bytes:
    return struct.pack(">BBHHHH", 3, int(incremental), x, y, width, height)


#: Largest message buffered whole (SetEncodings with 65535 encodings is 262 144 bytes);
#: ClientCutText payloads stream through instead.
_FIXED = {0: 20, 3: 10, 4: 8, 5: 6, 150: 10, 250: 4}


class ClientMessages:
    """Finds the boundaries of a client→server RFB stream (after ServerInit).

    :meth:`feed` returns the bytes that may be forwarded now: complete messages, and the
    payload of a ClientCutText as it arrives (it can be large). An incomplete message is held
    back, so :attr:`at_boundary` is True whenever everything forwarded so far ends with a
    complete message: that is when an event of the gateway's own may be written. SetEncodings
    is rewritten without ExtendedMouseButtons (a PointerEvent then always has 6 bytes).

    A message of an unknown type raises :class:`BadClientData`; nothing of it (nor of what
    follows it in the same chunk) is forwarded, so the stream stays usable.
    """

    __slots__ = ("_buf", "_passthrough")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._passthrough = 0  # bytes of a ClientCutText payload still to forward

    @property
    def at_boundary(self) -> bool:
        return self._passthrough == 0 and not self._buf

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        view = memoryview(data)
        while view:
            if self._passthrough:
                take = min(self._passthrough, len(view))
                out += view[:take]
                view = view[take:]
                self._passthrough -= take
                continue
            self._buf += view
            view = view[len(view) :]
            try:
                while self._buf and not self._passthrough:
                    size = self._size(self._buf)
                    if size is None or size > len(self._buf):
                        break
                    message = bytes(self._buf[:size])
                    del self._buf[:size]
                    out += self._rewrite(message)
                if self._passthrough:  # bytes after a ClientCutText header are its payload
                    rest = bytes(self._buf)
                    self._buf.clear()
                    view = memoryview(rest)
            except RfbError as exc:
                self._buf.clear()
                raise BadClientData(str(exc), bytes(out)) from None
        return bytes(out)

    def _size(self, buf: bytearray) -> int | None:
        """Total size of the message at the start of ``buf`` (None: not known yet)."""
        kind = buf[0]
        fixed = _FIXED.get(kind)
        if fixed is not None:
            return fixed
        if kind == 2:  # SetEncodings
            return None if len(buf) < 4 else 4 + 4 * struct.unpack_from(">H", buf, 2)[0]
        if kind == 6:  # ClientCutText: header now, payload streamed
            if len(buf) < 8:
                return None
            (length,) = struct.unpack_from(">i", buf, 4)
            self._passthrough = abs(length)
            return 8
        if kind == 248:  # ClientFence
            return None if len(buf) < 9 else 9 + buf[8]
        if kind == 251:  # SetDesktopSize
            return None if len(buf) < 8 else 8 + 16 * buf[6]
        if kind == 255:  # QEMU client messages
            if len(buf) < 2:
                return None
            sub = buf[1]
            if sub == 0:  # ExtendedKeyEvent
                return 12
            if sub == 1:  # audio
                if len(buf) < 4:
                    return None
                (op,) = struct.unpack_from(">H", buf, 2)
                return 10 if op == 2 else 4
            raise RfbError(f"unknown QEMU client message {sub}")
        raise RfbError(f"unknown client message type {kind}")

    @staticmethod
    def _rewrite(message: bytes) -> bytes:
        if message[0] != 2:
            return message
        (count,) = struct.unpack_from(">H", message, 2)
        encodings = struct.unpack_from(f">{count}i", message, 4)
        kept = [e for e in encodings if e != ENC_EXTENDED_MOUSE_BUTTONS]
        return message if len(kept) == count else set_encodings(kept)


# -- framebuffer -----------------------------------------------------------------------
class Framebuffer:
    """The VM's screen in BGRX (the pixel format the gateway asks for)."""

    __slots__ = ("height", "pixels", "resizes", "width")

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(width * height * 4)
        #: How many times the screen changed size (a DesktopSize update clears it).
        self.resizes = 0

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(width * height * 4)
        self.resizes += 1

    async def refresh(self, stream: ByteStream, reader: Reader) -> None:
        """Ask the server behind ``stream``/``reader`` for the whole screen and apply it;
        again if the screen changed size meanwhile (its pixels were cleared)."""
        while True:
            resizes = self.resizes
            await stream.write(update_request(False, 0, 0, self.width, self.height))
            while await read_server_message(reader, self) != 0:
                pass
            if self.resizes == resizes:
                return

    def _check(self, x: int, y: int, w: int, h: int) -> None:
        if x + w > self.width or y + h > self.height:
            raise RfbError(
                f"rectangle {w}x{h}+{x}+{y} outside the {self.width}x{self.height} screen"
            )

    def put(self, x: int, y: int, w: int, h: int, data: bytes | bytearray | memoryview) -> None:
        self._check(x, y, w, h)
        row = w * 4
        stride = self.width * 4
        for r in range(h):
            start = (y + r) * stride + x * 4
            self.pixels[start : start + row] = data[r * row : (r + 1) * row]

    def copy(self, x: int, y: int, w: int, h: int, sx: int, sy: int) -> None:
        self._check(x, y, w, h)
        self._check(sx, sy, w, h)
        row = w * 4
        stride = self.width * 4
        rows = [
            bytes(self.pixels[(sy + r) * stride + sx * 4 : (sy + r) * stride + sx * 4 + row])
            for r in range(h)
        ]
        for r, data in enumerate(rows):
            start = (y + r) * stride + x * 4
            self.pixels[start : start + row] = data

    def rgb(self) -> bytes:
        out = bytearray(self.width * self.height * 3)
        out[0::3] = self.pixels[2::4]
        out[1::3] = self.pixels[1::4]
        out[2::3] = self.pixels[0::4]
        return bytes(out)

    def png(self) -> bytes:
        return png(self.width, self.height, self.rgb())


def png(width: int, height: int, rgb: bytes, *, level: int = 6) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (rows top to bottom, 3 bytes per pixel)."""
    row = width * 3
    raw = b"".join(b"\x00" + rgb[r * row : (r + 1) * row] for r in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, level))
        + chunk(b"IEND", b"")
    )


async def read_server_message(reader: Reader, fb: Framebuffer) -> int:
    """Read one server→client message of a connection that asked for BGRX pixels and the
    Raw, CopyRect and DesktopSize encodings, applying updates to ``fb``. Returns the message
    type (0 FramebufferUpdate, 1 colour map, 2 Bell, 3 ServerCutText)."""
    (kind,) = await reader.exactly(1)
    if kind == 0:
        (count,) = struct.unpack(">xH", await reader.exactly(3))
        for _ in range(count):
            x, y, w, h, enc = struct.unpack(">HHHHi", await reader.exactly(12))
            if enc == ENC_RAW:
                fb._check(x, y, w, h)
                data = bytearray(w * h * 4)
                await reader.into(memoryview(data))
                fb.put(x, y, w, h, data)
            elif enc == ENC_COPYRECT:
                sx, sy = struct.unpack(">HH", await reader.exactly(4))
                fb.copy(x, y, w, h, sx, sy)
            elif enc == ENC_DESKTOP_SIZE:
                fb.resize(w, h)
            else:
                raise RfbError(f"VNC server sent encoding {enc}, which was not asked for")
    elif kind == 1:
        (_, n) = struct.unpack(">xHH", await reader.exactly(5))
        await reader.exactly(6 * n)
    elif kind == 2:
        pass
    elif kind == 3:
        (length,) = struct.unpack(">3xI", await reader.exactly(7))
        while length:
            length -= len(await reader.exactly(min(length, 65536)))
    else:
        raise RfbError(f"unexpected VNC server message type {kind}")
    return int(kind)


__all__ = [
    "BGRX",
    "AuthFailed",
    "BadClientData",
    "ClientMessages",
    "Framebuffer",
    "PixelFormat",
    "Reader",
    "RfbError",
    "ServerInit",
    "client_handshake",
    "key_event",
    "png",
    "pointer_event",
    "read_server_message",
    "serve_handshake",
    "set_encodings",
    "set_pixel_format",
    "update_request",
    "vnc_auth_response",
]
