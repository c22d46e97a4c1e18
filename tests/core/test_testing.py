"""The plugin test kit (virtwire/testing.py): isolated state per server, plugin names from entry
points, the text-frame client."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import virtwire_example
from virtwire import hookimpl
from virtwire.plugins import name_of
from virtwire.testing import make_settings, run_server


def _tree(path: Path) -> set[Path]:
    return set(path.rglob("*")) if path.exists() else set()


async def test_every_server_has_its_own_state_directory() -> None:
    shared = Path(os.environ["VIRTWIRE_STATE_DIR"])  # what the environment would choose
    before = _tree(shared)
    async with run_server(plugins=[]) as one, run_server(plugins=[]) as two:
        assert one.state_dir != two.state_dir
        assert one.gateway.state_dir() == one.state_dir
        mine = one.gateway.state_dir("hello")
        assert mine == one.state_dir / "plugins" / "hello" and mine.is_dir()
        assert mine.stat().st_mode & 0o777 == 0o700
        (mine / "hello.sock").write_text("x")
    assert not one.state_dir.exists() and not two.state_dir.exists()
    assert _tree(shared) == before


async def test_a_chosen_state_directory_is_kept(tmp_path: Path) -> None:
    settings = make_settings()
    async with run_server(settings, plugins=[], state_dir=tmp_path / "st") as server:
        server.gateway.state_dir("hello")
    assert (tmp_path / "st" / "plugins" / "hello").is_dir()
    assert settings.state_dir is None  # the caller's settings are left alone


async def test_a_module_is_named_after_its_entry_point() -> None:
    assert name_of(virtwire_example) == "example"  # entry point example = "virtwire_example"
    assert name_of(SimpleNamespace()) == "SimpleNamespace"
    config = {"plugins": {"example": {"greeting": "Hej"}}}
    async with run_server(plugins=[virtwire_example], config=config) as server:
        assert server.gateway.plugins.infos["example"].state == "enabled"
        async with server.client() as client:
            reply = await client.request("greet", {"name": "Ana"})
            assert reply["data"]["greeting"] == "Hej, Ana!"


@hookimpl
def register_routes(register: Any, gateway: Any) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def lines(websocket: WebSocket) -> None:
        await gateway.authenticate_websocket(websocket, scope="logs:read")
        await websocket.accept()
        name = websocket.query_params.get("file", "?")
        for n in range(3):
            await websocket.send_text(f"{name} line {n}")
        while (text := await websocket.receive_text()) != "bye":
            await websocket.send_text("pong" if text == "ping" else text)
        await websocket.close(1000, "done")

    register(WebSocketRoute("/lines", lines))


async def test_text_client_reads_text_frames_of_a_plugin_endpoint() -> None:
    plugin = SimpleNamespace(register_routes=register_routes)
    async with run_server(plugins=[("lines", plugin)]) as server:
        async with server.text_client("/lines", query={"file": "a b.log"}) as client:
            assert await client.recv() == "a b.log line 0"
            assert await client.expect("line 2") == "a b.log line 2"
            await client.send("ping")
            assert await client.recv() == "pong"
            await client.send("bye")
            assert await client.closed() == (1000, "done")
