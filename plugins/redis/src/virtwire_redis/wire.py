"""Names of Redis keys and channels, and the PUB/SUB payload of a frame.

A frame crosses Redis as ``origin\\nsent\\noffset\\nepoch\\nkey-as-JSON\\nframe-text``
(``sent``: Unix time of the publish, for the lag metric): the frame text
is the exact text clients receive (it was encoded once, by the gateway that published it).
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(str | None).decode


class Names:
    """Every Redis name under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def channel(self, name: str) -> str:
        return f"{self.prefix}.ch.{name}"

    def node(self, node: str) -> str:
        return f"{self.prefix}.node.{node}"

    def meta(self, name: str) -> str:
        return f"{self.prefix}.meta.{name}"

    def stream(self, name: str) -> str:
        return f"{self.prefix}.stream.{name}"

    def latest(self, name: str) -> str:
        return f"{self.prefix}.latest.{name}"

    def owner(self, key: str) -> str:
        return f"{self.prefix}.owner.{key}"

    def channel_of(self, redis_channel: str) -> str | None:
        head = f"{self.prefix}.ch."
        return redis_channel[len(head) :] if redis_channel.startswith(head) else None


class Message(NamedTuple):
    origin: str
    sent: float
    offset: int
    epoch: str
    key: str | None
    text: str


def key_json(key: str | None) -> str:
    return _encode(key).decode()


def decode_key(raw: str) -> str | None:
    return _decode(raw)


def parse(payload: str) -> Message:
    origin, sent, offset, epoch, key, text = payload.split("\n", 5)
    return Message(origin, float(sent), int(offset), epoch, decode_key(key), text)
