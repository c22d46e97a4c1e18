"""Property-based fuzzing of the log endpoint's query over a real server: whatever the query
(odd names, traversal, NULs, duplicate keys, junk tokens), the handshake is answered, nothing
outside the allow list is served, and a refusal is a text then a close with a documented
code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import virtwire_logs
import websocket
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from virtwire.testing import RunningServer, serve_in_thread

ALLOWED = {"ds_update.log": "allowed line\n"}
SECRET = "secret line, not on the allow list\n"

names = st.text(max_size=40) | st.sampled_from(
    [
        "ds_update.log",
        "../secret.log",
        "secret.log",
        "/etc/passwd",
        "ds_update.log\x00",
        "ds_update.log/..",
        "./ds_update.log",
        "DS_UPDATE.LOG",
        "%2e%2e/secret.log",
        "",
    ]
)
keys = st.sampled_from(["file", "token", "lines", "x"])
queries = st.lists(st.tuples(keys, names), max_size=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    root = tmp_path_factory.mktemp("fuzzlogs")
    logs = root / "logs"
    logs.mkdir()
    for name, text in ALLOWED.items():
        (logs / name).write_text(text)
    (root / "secret.log").write_text(SECRET)
    (logs / "secret.log").write_text(SECRET)  # in the directory, but not on the list
    config: dict[str, Any] = {
        "plugins": {
            "logs": {"directory": str(logs), "files": {n: n for n in ALLOWED}, "gateway_log": ""}
        }
    }
    with serve_in_thread(plugins=[("logs", virtwire_logs)], config=config) as server:
        yield server, server.token(scopes=["logs:read"])


def _exchange(url: str) -> tuple[list[str], int | None]:
    ws = websocket.create_connection(url, timeout=10)
    texts: list[str] = []
    code = None
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                texts.append(data.decode())
                if texts[-1] == "allowed line":  # an allowed file is being served
                    break
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                break
    finally:
        ws.close()
        ws.shutdown()  # the socket too, when the server closed first
    return texts, code


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(query=queries, with_token=st.booleans())
@example(query=[("file", "../secret.log")], with_token=True)
@example(query=[("file", "ds_update.log"), ("file", "secret.log")], with_token=True)
@example(query=[("token", ""), ("file", "ds_update.log")], with_token=True)
def test_any_query_is_answered_and_nothing_outside_the_list_is_served(
    served: tuple[RunningServer, str], query: list[tuple[str, str]], with_token: bool
) -> None:
    server, token = served
    parts = [f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query]
    if with_token:
        parts.append(f"token={token}")
    url = server.ws_url("/api/v1/ws/logs") + ("?" + "&".join(parts) if parts else "")
    texts, code = _exchange(url)
    assert not any("secret line" in t for t in texts)
    if texts and texts[-1] == "allowed line":
        return  # served an allowed file
    assert len(texts) == 1, texts  # one text that says why
    assert code in (1008, 4001, 4029), (code, texts)


def test_fuzz_files_exist(served: tuple[RunningServer, str], tmp_path: Path) -> None:
    server, token = served
    texts, _ = _exchange(server.ws_url("/api/v1/ws/logs", token) + "&file=ds_update.log")
    assert texts == ["allowed line"]
