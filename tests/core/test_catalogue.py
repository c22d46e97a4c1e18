"""The message catalogue as plugins use it (virtwire/messages.py, the register_texts hook): a
plugin's error reaches the client in the gateway's locale."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from virtwire import VirtwireError, hookimpl
from virtwire.messages import Catalogue
from virtwire.testing import run_server

TEXTS = {
    "zh-CN": {"error.HELLO_QUOTA": "配额已用完：每人最多 {limit} 次", "hello.done": "完成"},
    "en": {"error.HELLO_QUOTA": "quota used up: at most {limit} per user", "hello.done": "done"},
}


@hookimpl
def register_texts(register: Any) -> None:
    for locale, texts in TEXTS.items():
        register(locale, texts)


@hookimpl
def register_handlers(register: Any, gateway: Any) -> None:
    async def quota(session: Any, data: Any) -> Any:
        raise VirtwireError("HELLO_QUOTA", "quota", params={"limit": 3})

    async def start(session: Any, data: Any) -> Any:
        raise VirtwireError("VM_START_FAILED", "start failed", vm_id="web-1", details="no disk")

    async def other(session: Any, data: Any) -> Any:
        raise VirtwireError("HELLO_OTHER", "a text of the plugin's own")

    async def done(session: Any, data: Any) -> Any:
        return {"text": gateway.catalogue("hello.done")}

    register("hello-quota", quota)
    register("hello-start", start)
    register("hello-other", other)
    register("hello-done", done)


HELLO = SimpleNamespace(register_texts=register_texts, register_handlers=register_handlers)


@pytest.mark.parametrize(
    ("locale", "quota", "start", "done"),
    [
        ("zh-CN", "配额已用完：每人最多 3 次", "虚拟机启动失败", "完成"),
        ("en", "quota used up: at most 3 per user", "failed to start the VM", "done"),
    ],
)
async def test_a_plugin_error_arrives_in_the_gateway_locale(
    locale: str, quota: str, start: str, done: str
) -> None:
    config = {"server": {"locale": locale}}
    async with run_server(plugins=[("hello", HELLO)], config=config) as server:
        async with server.client() as client:
            reply = await client.request("hello-quota")
            assert reply["data"] == {"code": "HELLO_QUOTA", "message": quota}
            reply = await client.request("hello-start")
            assert reply["data"] == {
                "code": "VM_START_FAILED",
                "message": start,
                "vmId": "web-1",
                "details": "no disk",
            }
            # a code without a catalogue entry keeps the message raised
            reply = await client.request("hello-other")
            assert reply["data"]["message"] == "a text of the plugin's own"
            assert (await client.request("hello-done"))["data"] == {"text": done}


def test_catalogue_falls_back_to_en_then_to_the_key_and_keeps_bad_params_safe() -> None:
    catalogue = Catalogue("zh-CN")
    catalogue.add("en", {"x.only_en": "only {what}"})
    assert catalogue("x.only_en", what="english") == "only english"
    assert catalogue("x.missing") == "x.missing"
    assert "vm.not_found" in catalogue and "x.missing" not in catalogue
    assert "error.VM_NOT_FOUND" in set(catalogue.keys())
    # a template whose fields the error does not give: the raised message is kept
    catalogue.add("zh-CN", {"error.X_NEEDS": "需要 {limit}"})
    data = catalogue.error_data(VirtwireError("X_NEEDS", "needs a limit"))
    assert data["message"] == "needs a limit"
    with pytest.raises(TypeError):
        catalogue.add("en", {"x": 1})  # type: ignore[dict-item]


async def test_bad_texts_disable_the_plugin_not_the_gateway() -> None:
    @hookimpl
    def register_texts(register: Any) -> None:
        register("en", {"bad.key": None})

    bad = SimpleNamespace(register_texts=register_texts)
    async with run_server(plugins=[("bad", bad)]) as server:
        info = server.gateway.plugins.infos["bad"]
        assert info.state == "failed" and "register_texts" in (info.error or "")
        assert "bad.key" not in server.gateway.catalogue
