"""Terminal output as text: incremental UTF-8 decoding, frame-sized pieces, a scrollback ring."""

from __future__ import annotations

import codecs


class OutputDecoder:
    """Decodes a terminal's byte stream as UTF-8 across reads: a character split between two
    reads comes out whole with the second; invalid bytes become U+FFFD."""

    __slots__ = ("_decode",)

    def __init__(self) -> None:
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode

    def feed(self, data: bytes) -> str:
        return self._decode(data)

    def flush(self) -> str:
        """What is left at the end of the stream (an incomplete character becomes U+FFFD)."""
        return self._decode(b"", True)


def pieces(text: str, size: int) -> list[str]:
    """``text`` cut into pieces of at most ``size`` characters (one piece when it fits);
    never between the two halves of a surrogate pair."""
    if len(text) <= size:
        return [text]
    return [text[i : i + size] for i in range(0, len(text), size)]


class Scrollback:
    """The last ``capacity`` bytes of a terminal's output, replayed to a viewer that attaches.

    Kept as raw bytes so that the bound is exact; :meth:`text` decodes them, dropping a
    character cut at the front by the ring."""

    __slots__ = ("_buf", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def add(self, data: bytes) -> None:
        cap = self.capacity
        if cap <= 0:
            return
        if len(data) >= cap:
            self._buf[:] = data[-cap:]
            return
        self._buf += data
        excess = len(self._buf) - cap
        if excess > 0:
            del self._buf[:excess]

    def text(self) -> str:
        buf = self._buf
        start = 0
        # skip UTF-8 continuation bytes left from a character the ring cut in two
        while start < len(buf) and start < 3 and 0x80 <= buf[start] <= 0xBF:
            start += 1
        # an incomplete character at the end is held back: live output completes it
        decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        return decode(bytes(buf[start:]), False)


__all__ = ["OutputDecoder", "Scrollback", "pieces"]
