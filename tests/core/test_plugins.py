"""Plugin discovery, selection and isolation (virtwire/plugins.py, gateway.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import virtwire_example
from virtwire import hookimpl
from virtwire.errors import ConfigError
from virtwire.plugins import discover
from virtwire.testing import make_settings, run_server


def test_example_distribution_is_found_by_entry_point() -> None:
    found = discover()
    assert "example" in found
    assert found["example"].distribution == "virtwire-example"
    assert found["example"].version == "0.1.0"


async def test_installed_plugin_adds_message_type_and_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # plugins=None: discovery through entry points, as `virtwire serve` does (only this one
    # of the installed plugins, so that the core's tests do not depend on the others)
    monkeypatch.setenv("VIRTWIRE_LOAD_PLUGINS", "example")
    settings = make_settings({"plugins": {"example": {"greeting": "Salut"}}})
    async with run_server(settings) as server:
        assert server.gateway.plugins.infos["example"].state == "enabled"
        async with server.client() as client:
            reply = await client.request("greet", {"name": "Ana"})
            assert reply["data"]["greeting"] == "Salut, Ana!"
            sub = await client.request("subscribe", {"topic": "ticks", "interval": 20})
            assert sub["data"] == {"topic": "ticks", "interval": 20}
            first = await client.expect("ticks")
            second = await client.expect("ticks")
            assert second["data"]["n"] > first["data"]["n"]
            assert (await client.request("unsubscribe", {"topic": "ticks"}))["data"]["removed"] == 1


async def test_config_can_switch_a_plugin_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIRTWIRE_LOAD_PLUGINS", raising=False)
    settings = make_settings({"plugins": {"enabled": []}})
    async with run_server(settings) as server:
        assert server.gateway.plugins.infos["example"].state == "disabled"
        async with server.client() as client:
            assert (await client.request("greet", {"name": "x"}))["data"]["code"] == "UNKNOWN_TYPE"


async def test_env_selects_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTWIRE_LOAD_PLUGINS", "")
    async with run_server(make_settings()) as server:
        assert {i.state for i in server.gateway.plugins.infos.values() if not i.builtin} == {
            "disabled"
        }
    monkeypatch.setenv("VIRTWIRE_LOAD_PLUGINS", "example")
    async with run_server(make_settings({"plugins": {"enabled": []}})) as server:
        assert server.gateway.plugins.infos["example"].state == "enabled"


def test_enabling_a_missing_plugin_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from virtwire.app import create_app

    monkeypatch.delenv("VIRTWIRE_LOAD_PLUGINS", raising=False)
    with pytest.raises(ConfigError, match=r"nopeplugin.*not installed.*example"):
        create_app(make_settings({"plugins": {"enabled": ["nopeplugin"]}}))


def test_plugin_settings_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from virtwire.app import create_app

    monkeypatch.delenv("VIRTWIRE_LOAD_PLUGINS", raising=False)
    with pytest.raises(ConfigError, match=r"unknown key 'plugins\.example\.greting'"):
        create_app(make_settings({"plugins": {"example": {"greting": "x"}}}))
    with pytest.raises(ConfigError, match=r"\[plugins\.ghost\].*no installed plugin"):
        create_app(make_settings({"plugins": {"ghost": {"a": 1}}}))


class Broken:
    """A plugin whose registration hooks raise."""

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        register("broken-thing", None)
        raise RuntimeError("boom in register_handlers")

    @hookimpl
    def register_topics(self, register: Any) -> None:
        raise RuntimeError("boom in register_topics")


class Raising:
    """A plugin whose handler raises at run time."""

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        async def explode(session: Any, data: Any) -> None:
            raise ValueError("secret internals")

        register("explode", explode)

    @hookimpl
    def startup(self) -> Any:
        async def fail() -> None:
            raise RuntimeError("startup failed")

        return fail()


async def test_failing_plugins_are_isolated_and_reported() -> None:
    plugins = [("broken", Broken()), ("raising", Raising()), ("example", virtwire_example)]
    async with run_server(make_settings(), plugins=plugins) as server:
        infos = server.gateway.plugins.infos
        assert infos["broken"].state == "failed"
        assert "boom in register_handlers" in (infos["broken"].error or "")
        assert infos["raising"].state == "failed"  # its startup raised
        assert "startup failed" in (infos["raising"].error or "")
        assert infos["example"].state == "enabled"
        async with server.client() as client:
            # nothing of the broken plugin was half-registered
            assert (await client.request("broken-thing"))["data"]["code"] == "UNKNOWN_TYPE"
            reply = await client.request("explode")
            assert reply["data"]["code"] == "INTERNAL_ERROR"
            assert "secret internals" not in json.dumps(reply)
            assert (await client.request("greet", {"name": "still"}))["type"] == "greet-response"


def _fake_distribution(root: Path, name: str, module_source: str) -> None:
    """A real installed distribution (dist-info + module) on a path we add to PYTHONPATH."""
    dist = root / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[virtwire]\n{name} = {name}_mod\n")
    (root / f"{name}_mod.py").write_text(module_source)


def test_plugins_command_lists_and_survives_a_broken_plugin(
    tmp_path: Path, cli_env: dict[str, str], virtwire_bin: str
) -> None:
    site = tmp_path / "site"
    _fake_distribution(site, "brokenplug", "raise ImportError('missing dependency foo')\n")
    cli_env["PYTHONPATH"] = str(site)
    # a config file without [plugins] enabled: every installed plugin (the embedded default
    # would load only the product's own)
    listing = tmp_path / "all.toml"
    listing.write_text('[auth]\nsecret = "0123456789abcdef0123456789abcdef"\n')
    cli_env["VIRTWIRE_CONFIG"] = str(listing)
    out = subprocess.run(
        [virtwire_bin, "plugins", "--json"], env=cli_env, capture_output=True, text=True, timeout=60
    )
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["brokenplug"]["state"] == "failed"
    assert "missing dependency foo" in rows["brokenplug"]["error"]
    assert rows["example"]["state"] == "enabled"
    assert rows["example"]["distribution"] == "virtwire-example"
    assert "register_topics" in rows["example"]["hooks"]
    assert rows["virtwire.vms"]["state"] == "builtin"
    assert out.returncode == 1  # a failed plugin is worth a non-zero exit
    # the table form names the same things
    table = subprocess.run(
        [virtwire_bin, "plugins"], env=cli_env, capture_output=True, text=True, timeout=60
    ).stdout
    assert "brokenplug" in table and "failed" in table and "missing dependency foo" in table

    # a plugin the config asks for by name that fails to import stops `serve` with a fix
    config = tmp_path / "c.toml"
    config.write_text(
        '[auth]\nsecret = "0123456789abcdef0123456789abcdef"\n[plugins]\nenabled = ["brokenplug"]\n'
    )
    del cli_env["VIRTWIRE_CONFIG"]
    serve = subprocess.run(
        [virtwire_bin, "serve", "--config", str(config), "--port", "0"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 2
    assert "brokenplug" in serve.stderr and "failed to import" in serve.stderr


class Policy:
    """authorize: only 'ops' users may greet prod-*; shutdown: record that it ran."""

    def __init__(self) -> None:
        self.stopped = False
        self.asked: list[tuple[str, str, str | None]] = []

    @hookimpl
    def authorize(self, principal: Any, action: str, resource: str | None) -> bool | None:
        self.asked.append((principal.user_id, action, resource))
        if action == "vm:control" and resource and resource.startswith("prod-"):
            return "ops" in principal.claims.get("groups", [])
        return None

    @hookimpl
    def shutdown(self, gateway: Any) -> Any:
        async def stop() -> None:
            self.stopped = gateway.started  # still marked started while plugins stop

        return stop()


async def test_authorize_hook_can_deny_and_shutdown_runs() -> None:
    policy = Policy()
    async with run_server(make_settings(), plugins=[("policy", policy)]) as server:
        async with server.client(server.token("eve")) as client:
            reply = await client.request("vm-control", {"vmId": "prod-db", "action": "stop"})
            assert reply["data"]["code"] == "FORBIDDEN"
        async with server.client(server.token("olga", groups=["ops"])) as client:
            reply = await client.request("vm-control", {"vmId": "prod-db", "action": "stop"})
            # allowed by the policy; no backend knows the VM
            assert reply["data"]["code"] == "VM_NOT_FOUND"
        assert ("eve", "vm:control", "prod-db") in policy.asked
    assert policy.stopped


class Consoles:
    """A console transport registration (the gateway collects transports for consoles)."""

    class Transport:
        name = "echo"
        kinds = ("serial",)

        def supports(self, vm_id: str, kind: str) -> bool:
            return kind == "serial"

    @hookimpl
    def register_consoles(self, register: Any, gateway: Any) -> None:
        register(self.Transport())


async def test_console_transports_are_collected() -> None:
    async with run_server(make_settings(), plugins=[("consoles", Consoles())]) as server:
        assert [t.name for t in server.gateway.consoles] == ["echo"]
        assert server.gateway.plugins.infos["consoles"].hooks == ["register_consoles"]


class Greeter:
    """Registers a message type the example plugin already has."""

    @hookimpl
    def register_handlers(self, register: Any) -> None:
        async def greet(session: Any, data: Any) -> None:
            return None

        register("greet", greet)


def test_two_plugins_claiming_one_type_is_a_clear_error() -> None:
    from virtwire.app import create_app

    with pytest.raises(
        ConfigError, match=r"'greet' is registered by both plugin 'example' and 'greeter'"
    ):
        create_app(make_settings(), plugins=[("example", virtwire_example), ("greeter", Greeter())])
