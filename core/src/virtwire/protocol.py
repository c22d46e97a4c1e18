"""Frame decoding, validation and encoding (``{type, data, id}``)."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, TypeVar

import msgspec
import msgspec.inspect

from .errors import ErrorCode, VirtwireError

T = TypeVar("T")

Id = str | int


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


def utc_timestamp() -> str:
    """ISO 8601 UTC with millisecond precision, e.g. ``2024-01-01T12:00:00.000Z``."""
    now = _dt.datetime.now(_dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


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
        field = field.lstrip(".") or "(frame)"
        raise VirtwireError(
            ErrorCode.INVALID_MESSAGE,
            f"invalid frame: {text} (field {field!r})",
            details={"field": field, "reason": text},
        ) from None
    except msgspec.DecodeError as exc:
        raise VirtwireError(
            ErrorCode.INVALID_MESSAGE,
            f"frame is not valid JSON: {exc}",
            details={"reason": str(exc)},
        ) from None


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
        raise VirtwireError(
            ErrorCode.INVALID_MESSAGE,
            f"invalid {field}: {text}",
            details={"field": field, "reason": text},
        ) from None


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
