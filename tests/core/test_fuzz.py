"""Property-based fuzzing of ``/ws`` over a real server: every message type, with data of any
shape and odd ids, plus text that is not a frame at all. Whatever arrives, the server answers
a frame with an ``id`` exactly once, never with ``INTERNAL_ERROR``, and the connection stays
usable. Bounded: a fixed number of examples, no shrinking deadline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import virtwire_example
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from virtwire.testing import RunningServer, make_settings, serve_in_thread

TYPES = [
    "auth",
    "ping",
    "subscribe",
    "unsubscribe",
    "vm-control",
    "greet",
    "vnc-connect",
    "terminal-input",
    "no-such-type",
]
TOPICS = ["vm-status", "vm-status-all", "ticks", "logs", "system-monitor", "nope"]
FIELDS = ["topic", "vmId", "action", "force", "interval", "name", "token", "file", "lines"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from([*TOPICS, "start", "pause", "resume", "test", "a\x00b", ""])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
datas = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), values, max_size=5)
ids = (
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**63)
    | (st.floats(allow_nan=False, allow_infinity=False))
)
frames = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | st.text(max_size=12), "id": ids},
    optional={"data": datas | values, "extra": values},
)
#: Known attack classes, always tried: out-of-range numbers, lone surrogates, deep nesting
#: (in data, in an unknown field, unclosed), bare words and literals.
KNOWN_JUNK = [
    '{"type": "greet", "data": {"n": 1e309}}',
    '{"type": "greet", "data": {"s": "\\ud800"}}',
    '{"type": "greet", "data": {"a": ' + "[" * 3000 + "]" * 3000 + "}}",
    '{"type": "greet", "x": ' + "{" * 3000 + "}" * 3000 + "}",
    '{"type": "greet", "data": ' + '{"a":' * 3000,
    "[" * 3000 + "]" * 3000,
    "ping",
    "null",
    "{}",
    '{"type": null}',
]
#: Raw texts that are not frames: random text and bytes, or spliced known junk.
junk = (
    st.text(max_size=200)
    | st.sampled_from(KNOWN_JUNK)
    | st.binary(max_size=60).map(lambda b: b.decode("latin-1"))
    | st.tuples(st.sampled_from(KNOWN_JUNK), st.text(max_size=20)).map("".join)
)


class Wire:
    """A blocking client on one server; reconnects when the server closed it (only an
    oversized frame may do that here)."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.ws = self._connect()

    def _connect(self) -> websocket.WebSocket:
        ws = websocket.create_connection(self.server.ws_url(token=self.server.token()), timeout=10)
        return ws

    def reply_to(self, text: str, id_: Any, *, expect: bool = True) -> list[dict[str, Any]]:
        """Send ``text``; with ``expect``, wait for a frame carrying ``id_`` (10 s at most);
        then every further frame carrying it until a ping sent after that is answered."""
        self.ws.send(text)
        got: list[dict[str, Any]] = []
        fenced = False
        if not expect:
            self.ws.send(json.dumps({"type": "ping", "id": "__fence__"}))
            fenced = True
        while True:
            raw = self.ws.recv()
            if raw == "pong":
                continue
            frame = json.loads(raw)
            if frame.get("id") == "__fence__":
                return got
            if "id" in frame and frame["id"] == id_:
                got.append(frame)
                if not fenced:
                    self.ws.send(json.dumps({"type": "ping", "id": "__fence__"}))
                    fenced = True
            if frame.get("type") == "error":
                assert frame["data"]["code"] != "INTERNAL_ERROR", (text[:200], frame)


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    config = make_settings(
        {"server": {"rate_limit": 100000, "rate_burst": 100000, "max_message_bytes": 65536}}
    )
    with serve_in_thread(config, plugins=[("example", virtwire_example)]) as server:
        client = Wire(server)
        yield client
        client.ws.close()


FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@FUZZ
@given(frame=frames)
def test_every_frame_with_an_id_is_answered_exactly_once(wire: Wire, frame: dict[str, Any]) -> None:
    if frame["type"] == "auth":  # keep the connection's user: only refreshes that fail
        frame["data"] = {"token": "not-a-token"}
    if frame["id"] == "__fence__":
        frame["id"] = "x"
    text = json.dumps(frame)
    expected = json.loads(text)["id"]  # as the server reads it back
    replies = wire.reply_to(text, expected)
    assert len(replies) == 1, (text, replies)
    assert replies[0]["type"] in ("error", f"{frame['type']}-response", "pong"), replies


def test_known_junk_never_breaks_the_connection(wire: Wire) -> None:
    for text in KNOWN_JUNK:
        wire.reply_to(text, object(), expect=False)


@FUZZ
@given(text=junk)
def test_junk_never_breaks_the_connection(wire: Wire, text: str) -> None:
    # returns once a later ping is answered: the connection is still usable
    wire.reply_to(text, object(), expect=False)
