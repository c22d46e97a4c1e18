"""Framing: decode/validate client frames, encode replies (virtwire/protocol.py)."""

from __future__ import annotations

import msgspec
import pytest
from virtwire.errors import VirtwireError
from virtwire.protocol import convert_data, decode_frame, encode


class Control(msgspec.Struct, forbid_unknown_fields=True):
    vmId: str
    action: str
    force: bool = False


def test_decode_valid_frame_keeps_id_type() -> None:
    frame = decode_frame('{"type": "vm-control", "data": {"vmId": "a"}, "id": 7}')
    assert frame.type == "vm-control"
    assert frame.data == {"vmId": "a"}
    assert frame.id == 7


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"data": {}}', "type"),
        ('{"type": 5}', "type"),
        ('{"type": "x", "data": [1]}', "data"),
        ('{"type": "x", "id": {"a": 1}}', "id"),
    ],
)
def test_invalid_frame_names_the_field(raw: str, field: str) -> None:
    with pytest.raises(VirtwireError) as info:
        decode_frame(raw)
    assert info.value.code == "INVALID_MESSAGE"
    assert info.value.details["field"] == field
    assert field in info.value.message


def test_not_json() -> None:
    with pytest.raises(VirtwireError) as info:
        decode_frame("{nope")
    assert info.value.code == "INVALID_MESSAGE"
    assert "JSON" in info.value.message


def test_convert_data_names_nested_field() -> None:
    with pytest.raises(VirtwireError) as info:
        convert_data({"vmId": 3, "action": "start"}, Control)
    assert info.value.details["field"] == "data.vmId"
    assert "Expected `str`" in info.value.message
    with pytest.raises(VirtwireError) as info:
        convert_data({"action": "start"}, Control)
    assert "vmId" in info.value.message
    with pytest.raises(VirtwireError) as info:
        convert_data({"vmId": "a", "action": "start", "bogus": 1}, Control)
    assert "bogus" in info.value.message


def test_encode_has_timestamp_and_id() -> None:
    frame = msgspec.json.decode(encode("vm-status", {"vmId": "a"}, "req-1"))
    assert frame["type"] == "vm-status"
    assert frame["id"] == "req-1"
    assert frame["timestamp"].endswith("Z") and "T" in frame["timestamp"]
    assert "id" not in msgspec.json.decode(encode("x", {}))
