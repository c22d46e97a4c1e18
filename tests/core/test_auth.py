"""Authentication over a real server: every way to present a token, and the attacks."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
import virtwire_example
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from virtwire.testing import TEST_SECRET, make_settings, run_server
from websockets.asyncio.client import connect

PLUGINS = [("example", virtwire_example)]


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**extra: object) -> dict:
    return {"sub": "alice", "scope": "vm:read", "exp": int(time.time()) + 600, **extra}


async def assert_refused(server, token: str, code: str) -> None:
    async with server.client(token) as client:
        frame = await client.expect("error")
        assert frame["data"]["code"] == code
        assert token not in json.dumps(frame)  # the token is never echoed
        close_code, _ = await client.closed()
        assert close_code == 4001


async def test_query_token_header_token_and_auth_message() -> None:
    async with run_server(plugins=PLUGINS) as server:
        token = server.token("alice")
        async with server.client(token) as client:
            reply = await client.request("greet", {"name": "q"})
            assert reply["data"]["userId"] == "alice"
        async with connect(
            server.ws_url(), additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await ws.send(json.dumps({"type": "greet", "data": {"name": "h"}, "id": 1}))
            assert json.loads(await ws.recv())["data"]["userId"] == "alice"
        async with server.client(None) as client:
            before = await client.request("greet", {"name": "x"})
            assert before["data"]["code"] == "AUTH_REQUIRED"
            pong = await client.request("ping")  # allowed before auth
            assert pong["type"] == "pong"
            reply = await client.request("auth", {"token": token})
            assert reply["type"] == "auth-response"
            assert reply["data"]["userId"] == "alice"
            after = await client.request("greet", {"name": "x"})
            assert after["type"] == "greet-response"


async def test_attacks_are_refused(tmp_path: Path) -> None:
    async with run_server(plugins=PLUGINS, config={"auth": {"audience": "virtwire"}}) as server:
        good = jwt.encode(claims(aud="virtwire"), TEST_SECRET, algorithm="HS256")
        # alg: none
        none_token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(aud='virtwire'))}."
        await assert_refused(server, none_token, "AUTH_FAILED")
        # wrong key
        await assert_refused(
            server,
            jwt.encode(claims(aud="virtwire"), "another-secret-of-32-bytes-xxxxxxxx"),
            "AUTH_FAILED",
        )
        # expired
        await assert_refused(
            server,
            jwt.encode(claims(aud="virtwire", exp=int(time.time()) - 5), TEST_SECRET),
            "TOKEN_EXPIRED",
        )
        # tampered payload (scope raised) keeps the old signature
        header, _, signature = good.split(".")
        tampered = f"{header}.{b64(claims(aud='virtwire', scope='vm:control'))}.{signature}"
        await assert_refused(server, tampered, "AUTH_FAILED")
        # wrong audience, no audience
        await assert_refused(server, jwt.encode(claims(aud="other"), TEST_SECRET), "AUTH_FAILED")
        await assert_refused(server, jwt.encode(claims(), TEST_SECRET), "AUTH_FAILED")
        # no exp (required by default), no sub
        no_exp = claims(aud="virtwire")
        del no_exp["exp"]
        await assert_refused(server, jwt.encode(no_exp, TEST_SECRET), "AUTH_FAILED")
        no_sub = claims(aud="virtwire")
        del no_sub["sub"]
        await assert_refused(server, jwt.encode(no_sub, TEST_SECRET), "AUTH_FAILED")
        # garbage
        await assert_refused(server, "not.a.jwt", "AUTH_FAILED")
        # and the good one works
        async with server.client(good) as client:
            assert (await client.request("greet", {"name": "x"}))["type"] == "greet-response"


async def test_missing_token_times_out() -> None:
    settings = make_settings({"auth": {"auth_timeout": 0.3}})
    async with run_server(settings, plugins=PLUGINS) as server:
        async with server.client(None) as client:
            frame = await client.expect("error")
            assert frame["data"]["code"] == "AUTH_REQUIRED"
            assert (await client.closed())[0] == 4001


async def test_failed_auth_message_closes() -> None:
    async with run_server(plugins=PLUGINS) as server:
        async with server.client(None) as client:
            reply = await client.request("auth", {"token": "bad"})
            assert reply["type"] == "error" and reply["data"]["code"] == "AUTH_FAILED"
            assert (await client.closed())[0] == 4001


async def test_expiry_on_live_connection_and_refresh() -> None:
    async with run_server(plugins=PLUGINS, config={"auth": {"leeway": 0}}) as server:
        async with server.client(server.token("alice", ttl=2)) as client:
            # refresh before expiry with a longer token for the same user
            reply = await client.request("auth", {"token": server.token("alice", ttl=600)})
            assert reply["type"] == "auth-response"
            # another user cannot take over the connection
            other = await client.request("auth", {"token": server.token("mallory")})
            assert other["data"]["code"] == "AUTH_FAILED"
            assert (await client.request("greet", {"name": "x"}))["data"]["userId"] == "alice"
        async with server.client(server.token("alice", ttl=1)) as client:
            frame = await client.expect("error", timeout=5)
            assert frame["data"]["code"] == "TOKEN_EXPIRED"
            assert (await client.closed())[0] == 4001


def _pem_pair(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    key = (
        rsa.generate_private_key(65537, 2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private = tmp_path / f"{kind}.key"
    public = tmp_path / f"{kind}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.mark.parametrize(("kind", "alg"), [("rsa", "RS256"), ("ec", "ES256")])
async def test_public_key_and_algorithm_confusion(tmp_path: Path, kind: str, alg: str) -> None:
    private, public = _pem_pair(tmp_path, kind)
    settings = make_settings(
        {
            "auth": {
                "algorithms": [alg],
                "public_key_file": str(public),
                "private_key_file": str(private),
            }
        }
    )
    async with run_server(settings, plugins=PLUGINS) as server:
        async with server.client(server.token("alice")) as client:
            assert (await client.request("greet", {"name": "k"}))["type"] == "greet-response"
        # HS256 signed with the public key's PEM as the HMAC secret: the classic confusion
        forged = (
            jwt.api_jws.PyJWS()
            ._algorithms["HS256"]
            .sign(
                f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims())}".encode(),
                public.read_bytes(),
            )
        )
        token = (
            f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims())}."
            + base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
        )
        await assert_refused(server, token, "AUTH_FAILED")


async def test_scopes_and_vms_claim_enforced() -> None:
    async with run_server(plugins=PLUGINS) as server:
        token = server.token("bob", ["vm:read"], vms=["web-*"])
        async with server.client(token) as client:
            reply = await client.request("vm-control", {"vmId": "web-1", "action": "start"})
            assert reply["data"]["code"] == "FORBIDDEN"
            assert "vm:control" in reply["data"]["message"]
        token = server.token("bob", ["vm:read", "vm:control"], vms=["web-*"])
        async with server.client(token) as client:
            reply = await client.request("vm-control", {"vmId": "db-1", "action": "start"})
            assert reply["data"]["code"] == "FORBIDDEN"
            assert reply["data"]["vmId"] == "db-1"
            reply = await client.request("subscribe", {"topic": "vm-status", "vmId": "db-1"})
            assert reply["data"]["code"] == "FORBIDDEN"


async def test_tokens_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    async with run_server(plugins=PLUGINS, access_log=True) as server:
        token = server.token("alice")
        async with server.client(token) as client:
            assert (await client.request("greet", {"name": "x"}))["type"] == "greet-response"
        async with server.client("bad." + token) as client:
            await client.closed()
    server_logs = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith(("uvicorn", "virtwire"))
    )
    assert "token=[REDACTED]" in server_logs  # uvicorn's request line, redacted
    assert token not in server_logs


def test_credentials_and_tickets_are_redacted_in_log_events() -> None:
    from virtwire.log import redact, redact_text

    event = redact(
        None,
        "info",
        {
            "event": "x",
            "credentials": {"username": "root", "password": "hunter2"},
            "privateKey": "-----BEGIN OPENSSH PRIVATE KEY-----",
            "passphrase": "p",
            "ticket": "t",
        },
    )
    assert event == {
        "event": "x",
        "credentials": "[REDACTED]",
        "privateKey": "[REDACTED]",
        "passphrase": "[REDACTED]",
        "ticket": "[REDACTED]",
    }
    line = '127.0.0.1:5 - "GET /ws/terminal/Zm9v_bar-1?cols=80 HTTP/1.1" 101'
    assert redact_text(line) == '127.0.0.1:5 - "GET /ws/terminal/[REDACTED]?cols=80 HTTP/1.1" 101'
