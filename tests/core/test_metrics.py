"""``/metrics`` in the Prometheus text format: who may read it, and what it counts."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from virtwire.testing import make_settings, run_server


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_need_the_scope_and_count_traffic() -> None:
    async with run_server() as server, httpx.AsyncClient() as http:
        url = f"{server.http_url}/metrics"
        assert (await http.get(url)).status_code == 401
        reader = server.token("ops", ["vm:read"])
        denied = await http.get(url, headers={"Authorization": f"Bearer {reader}"})
        assert denied.status_code == 403 and denied.json()["code"] == "FORBIDDEN"

        async with server.client() as client:
            for _ in range(3):
                reply = await client.request("ping", {})
                assert reply["type"] == "pong"
            await client.request("no-such-type", {})
            token = server.token("ops", ["metrics:read"])
            reply = await http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")
        got = samples(reply.text)
        assert got[("virtwire_frames_in_total", (("type", "ping"),))] == 3
        assert got[("virtwire_frames_in_total", (("type", "unknown"),))] == 1  # bounded labels
        assert got[("virtwire_frames_out_total", (("type", "pong"),))] == 3
        assert got[("virtwire_connections", (("state", "open"),))] == 1
        assert got[("virtwire_broker_connected", (("broker", "memory"),))] == 1


async def test_metrics_open_or_off() -> None:
    async with run_server(make_settings({"server": {"metrics": "open"}})) as server:
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"{server.http_url}/metrics")
            assert reply.status_code == 200 and "virtwire_fanout_seconds" in reply.text
    async with run_server(make_settings({"server": {"metrics": "off"}})) as server:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{server.http_url}/metrics")).status_code == 404
