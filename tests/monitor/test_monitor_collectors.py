"""Collectors as plugins: extra fields, failures reported by name, sampling off the loop."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from virtwire import hookimpl

FRAME = "system-monitor"


class FileSensor:
    """A collector reading a number from a file (as a hardware sensor in sysfs would)."""

    def __init__(self, path: Path) -> None:
        self.name = "file-sensor"
        self.path = path
        self.threads: set[int] = set()

    def create_sampler(self) -> FileSensor:
        return self

    def sample(self) -> dict[str, Any]:
        self.threads.add(threading.get_ident())
        value = float(self.path.read_text())
        # adds a field inside the document's ``cpu`` and tries to change ``memory.total``
        return {"sensor": {"value": value}, "cpu": {"sensor": value}, "memory": {"total": -1}}


class Unstartable:
    name = "unstartable"

    def create_sampler(self) -> Any:
        raise PermissionError("no access to the sensor bus")


class SensorPlugin:
    """A third-party plugin contributing collectors through the hook."""

    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    @hookimpl
    def register_collectors(self, register: Any) -> None:
        for collector in self.collectors:
            register(collector)


async def test_collector_plugin_adds_fields_and_failures_are_reported_by_name(
    monitor_server: Any, tmp_path: Path
) -> None:
    sensor = FileSensor(tmp_path / "temp1_input")
    sensor.path.write_text("41.5\n")
    plugin = SensorPlugin(sensor, Unstartable())
    async with monitor_server(plugins=[("sensors", plugin)]) as server:
        async with server.client() as client:
            await client.request("subscribe", {"topic": FRAME, "interval": 500})
            data = (await client.expect(FRAME, timeout=5))["data"]
            assert data["sensor"] == {"value": 41.5}
            assert data["cpu"]["sensor"] == 41.5  # added next to the document's fields
            assert data["memory"]["total"] > 0  # but never replacing them
            assert data["errors"] == {
                "unstartable": "create_sampler: PermissionError: no access to the sensor bus"
            }

            sensor.path.unlink()  # the sensor goes away: reported, the rest keeps coming
            data = (await client.expect(FRAME, where=lambda f: "sensor" not in f["data"]))["data"]
            assert data["errors"]["file-sensor"].startswith("FileNotFoundError:")
            assert "unstartable" in data["errors"]
            assert 0 <= data["cpu"]["usage"] <= 100 and data["memory"]["used"] > 0
            assert "load" in data

            sensor.path.write_text("43\n")  # and comes back
            data = (await client.expect(FRAME, where=lambda f: "sensor" in f["data"]))["data"]
            assert data["sensor"] == {"value": 43.0}
            assert set(data["errors"]) == {"unstartable"}
        # samples run in worker threads, never on the event loop's thread
        assert sensor.threads and threading.get_ident() not in sensor.threads


async def test_collectors_setting_selects_collectors(monitor_server: Any, tmp_path: Path) -> None:
    sensor = FileSensor(tmp_path / "value")
    sensor.path.write_text("1")
    plugins = [("sensors", SensorPlugin(sensor))]
    async with (
        monitor_server(plugins=plugins, collectors=["psutil"]) as server,
        server.client() as client,
    ):
        await client.request("subscribe", {"topic": FRAME, "interval": 500})
        data = (await client.expect(FRAME, timeout=5))["data"]
    assert set(data) == {"cpu", "memory", "disk", "network", "interval"}
    assert not sensor.threads


async def test_filesystems_collector_reports_each_mount_point(
    monitor_server: Any, tmp_path: Path
) -> None:
    missing = str(tmp_path / "not-mounted")
    async with (
        monitor_server(filesystems=["/", missing]) as server,
        server.client() as client,
    ):
        await client.request("subscribe", {"topic": FRAME, "interval": 500})
        data = (await client.expect(FRAME, timeout=5))["data"]
    root, gone = data["filesystems"]
    assert root["path"] == "/"
    assert root["used"] + root["free"] == root["total"]
    assert 0 <= root["usage"] <= 100
    assert gone["path"] == missing and gone["error"].startswith("FileNotFoundError")
    assert "errors" not in data
