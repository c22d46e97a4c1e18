"""Frame decoding, validation and encoding (``{type, data, id}``)."""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import time
from typing import Any, TypeVar

import msgspec
import msgspec.inspect

from .errors import ErrorCode, VirtwireError, invalid_field

T = TypeVar("T")

#: A request id: a string or a number (JSON numbers: integers of any size, fractions).
Id = str | int | float


class Frame(msgspec.Struct, frozen=True):
    """A client message. Unknown top-level fields are ignored."""

    type: str
    data: dict[str, Any] | None = None
    id: Id | None = None


_frame_decoder = msgspec.json.Decoder(Frame)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_PATH = re.compile(r" - at `\$(.*)`$")
_NAMED = re.compile(r"(?:missing required|unknown) field `([^`]+)`")


class UtcClock:
    """RFC 3339 / ISO 8601 times in UTC with milliseconds (``2026-11-27T16:04:05.123Z``), the
    date and seconds formatted once per second. One per thread that uses it."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(self, stamp: float) -> str:
        second = int(stamp)
        if second != self.second:
            self.second = second
            self.prefix = _dt.datetime.fromtimestamp(second, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        return f"{self.prefix}{int((stamp - second) * 1000):03d}Z"


_clock = UtcClock()  # the event loop's


def utc_timestamp() -> str:
    """ISO 8601 UTC with millisecond precision, e.g. ``2024-01-01T12:00:00.000Z``."""
    return _clock(time.time())


def _explain(exc: msgspec.ValidationError | msgspec.DecodeError, root: str) -> tuple[str, str]:
    """Turn msgspec's message into (human text, field path)."""
    text = str(exc)
    match = _PATH.search(text)
    field = root
    if match:
        field = root + match.group(1)
        text = text[: match.start()]
    named = _NAMED.search(text)
    if named:  # "Object missing required field `type`", "... contains unknown field `x`"
        field = f"{field}.{named.group(1)}" if field else named.group(1)
    return text, field


def decode_frame(raw: str | bytes) -> Frame:
    """Decode one client frame or raise ``VirtwireError(INVALID_MESSAGE)``."""
    try:
        return _frame_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text, field = _explain(exc, "")
        raise invalid_field(field.lstrip(".") or "(frame)", text) from None
    except msgspec.DecodeError as exc:
        raise invalid_json(str(exc)) from None
    except RecursionError:
        raise invalid_json("nested too deeply") from None


def invalid_json(reason: str) -> VirtwireError:
    return VirtwireError(
        ErrorCode.INVALID_MESSAGE,
        f"frame is not valid JSON: {reason}",
        details={"reason": reason},
        text_key="message.invalid_json",
        params={"reason": reason},
    )


class _IdOnly(msgspec.Struct):
    id: Any = None


_id_decoder = msgspec.json.Decoder(_IdOnly)


def salvage_id(text: str) -> Id | None:
    """The ``id`` of a frame that could not be decoded or validated, when its JSON has a
    usable one (a string, or a finite number), so that the error can carry it. Tries
    msgspec first, then the standard library's more lenient parser (huge numbers, lone
    surrogates)."""
    try:
        value: Any = _id_decoder.decode(text).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        try:
            parsed = json.loads(text)
        except ValueError:
            return None
        except RecursionError:
            return _usable_id(_top_level_id(text))
        value = parsed.get("id") if isinstance(parsed, dict) else None
    except RecursionError:
        return _usable_id(_top_level_id(text))
    return _usable_id(value)


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]]')
_VALUE = re.compile(r'\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)')


def _top_level_id(text: str) -> Any:
    """The top-level ``id`` of a JSON object nested too deeply to parse: a scan of its
    strings and brackets, without recursion."""
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "{[":
            depth += 1
        elif token in "}]":
            depth -= 1
        elif depth == 1 and token == '"id"':
            value = _VALUE.match(text, match.end())
            if value is not None:
                try:
                    return json.loads(value.group(1))
                except ValueError:
                    return None
    return None


def _usable_id(value: Any) -> Id | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate cannot be sent back
            return None
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def convert_data(data: dict[str, Any] | None, schema: type[T]) -> T:
    """Validate a frame's ``data`` against a msgspec Struct type.

    Raises ``VirtwireError(INVALID_MESSAGE)`` naming the field (``data.vmId``) and what was
    expected.
    """
    try:
        return msgspec.convert(data if data is not None else {}, schema, str_keys=True)
    except msgspec.ValidationError as exc:
        text, field = _explain(exc, "data")
        allowed = _literal_values(schema, field)
        if allowed:
            text += f" (expected one of: {', '.join(map(str, allowed))})"
        raise invalid_field(field, text) from None


def _literal_values(schema: type, field: str) -> tuple[Any, ...] | None:
    """The allowed values of a Literal field ``data.NAME`` of a Struct schema."""
    name = field.rpartition(".")[2]
    try:
        info = msgspec.inspect.type_info(schema)
    except Exception:
        return None
    for f in getattr(info, "fields", ()):
        if f.encode_name == name:
            typ = f.type
            if isinstance(typ, msgspec.inspect.LiteralType):
                return tuple(typ.values)
    return None


def encode(type_: str, data: Any, id_: Id | None = None) -> str:
    """Encode one outgoing frame as JSON text (with ``timestamp``)."""
    frame: dict[str, Any] = {"type": type_, "data": data}
    if id_ is not None:
        frame["id"] = id_
    frame["timestamp"] = utc_timestamp()
    return _encoder.encode(frame).decode()


def encode_error(error: VirtwireError, id_: Id | None = None) -> str:
    return encode("error", error.to_data(), id_)


def to_builtins(obj: Any) -> Any:
    """Structs and dataclasses to plain JSON-compatible values."""
    return msgspec.to_builtins(obj)


def decode_json(raw: str | bytes) -> Any:
    return _any_decoder.decode(raw)
