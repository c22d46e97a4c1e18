"""virtwire.rfb against a real QEMU VNC server (with and without a password), and the client
stream framing that makes input injection safe."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pngkit import png_pixels
from qemu_vnc import VncServer, qemu_vnc
from virtwire import rfb
from virtwire.consoles import SocketStream
from virtwire.keysyms import SHIFT, key_keysym, text_keys


@pytest.fixture(scope="module")
def open_server() -> Iterator[VncServer]:
    with qemu_vnc() as server:
        yield server


@pytest.fixture(scope="module")
def locked_server() -> Iterator[VncServer]:
    with qemu_vnc(password="s3cret") as server:
        yield server


async def screenshot(
    server: VncServer, password: str | None = None
) -> tuple[rfb.ServerInit, bytes]:
    """The gateway's way of taking a picture: its own connection asking for Raw/CopyRect."""
    stream = await SocketStream.connect("127.0.0.1", server.port)
    try:
        init, reader = await rfb.client_handshake(stream, password)
        fb = rfb.Framebuffer(init.width, init.height)
        await stream.write(rfb.set_pixel_format(rfb.BGRX))
        await stream.write(rfb.set_encodings([rfb.ENC_RAW, rfb.ENC_COPYRECT, rfb.ENC_DESKTOP_SIZE]))
        async with asyncio.timeout(20):
            while True:  # until SeaBIOS switched to text mode (DesktopSize) and drew text
                await fb.refresh(stream, reader)
                if (fb.width, fb.height) == (720, 400) and len(set(fb.pixels[0::4])) > 1:
                    return init, fb.png()
    finally:
        await stream.close()


async def test_handshake_and_screenshot_without_password(open_server: VncServer) -> None:
    init, image = await screenshot(open_server)
    assert init.name == "QEMU"
    assert init.width > 0 and init.height > 0 and init.pixel_format.true_colour
    width, height, raw = png_pixels(image)
    assert (width, height) == (720, 400)
    assert len(set(raw[1 : 1 + width * 3 * 50])) > 1  # text on the screen, not one colour


async def test_vnc_authentication_with_the_right_password(locked_server: VncServer) -> None:
    init, image = await screenshot(locked_server, "s3cret")
    assert init.name == "QEMU" and png_pixels(image)[:2] == (720, 400)


@pytest.mark.parametrize("password", ["wrong", None])
async def test_wrong_or_missing_password_is_refused(
    locked_server: VncServer, password: str | None
) -> None:
    stream = await SocketStream.connect("127.0.0.1", locked_server.port)
    try:
        with pytest.raises(rfb.AuthFailed) as exc:
            await rfb.client_handshake(stream, password)
        assert ("failed" in str(exc.value)) if password else ("password" in str(exc.value))
    finally:
        await stream.close()


async def test_a_password_is_not_used_when_the_server_wants_none(open_server: VncServer) -> None:
    stream = await SocketStream.connect("127.0.0.1", open_server.port)
    try:
        init, _ = await rfb.client_handshake(stream, "unused")
        assert init.name == "QEMU"
    finally:
        await stream.close()


async def test_server_side_handshake_offers_none_and_replays_server_init() -> None:
    a, b = socket.socketpair()
    gateway_side = await SocketStream.from_socket(a)
    browser_side = await SocketStream.from_socket(b)
    init = rfb.ServerInit(640, 480, rfb.BGRX, "vm-1 ✓")
    try:
        served = asyncio.create_task(rfb.serve_handshake(gateway_side, init))
        got, reader = await rfb.client_handshake(browser_side, None)
        client_reader = await served
        assert got == init
        await browser_side.write(rfb.key_event(0xFF0D, True))
        assert await client_reader.exactly(8) == rfb.key_event(0xFF0D, True)
        assert reader.take_buffered() == b""
    finally:
        await gateway_side.close()
        await browser_side.close()


# -- client stream framing -------------------------------------------------------------
MESSAGES = [
    rfb.set_pixel_format(rfb.BGRX),
    rfb.set_encodings([7, 1, 0, -223, -258]),
    rfb.update_request(True, 0, 0, 720, 400),
    rfb.key_event(0x61, True),
    rfb.pointer_event(1, 10, 20),
    struct.pack(">BxxxI", 6, 5) + b"hello",  # ClientCutText
    struct.pack(">BxxxI", 6, 0),
    struct.pack(">BBHII", 255, 0, 1, 0x61, 0x1E),  # QEMU extended key event
    struct.pack(">BBH", 255, 1, 0),  # QEMU audio enable
    struct.pack(">BBHBBI", 255, 1, 2, 3, 2, 44100),  # QEMU audio set format
    struct.pack(">BBHHH", 150, 1, 0, 0, 10) + b"\x00\x0a",  # EnableContinuousUpdates
    struct.pack(">BxxxIB", 248, 0, 3) + b"abc",  # ClientFence
    struct.pack(">BBBB", 250, 0, 1, 2),  # xvp
    struct.pack(">BxHHBx", 251, 800, 600, 1) + bytes(16),  # SetDesktopSize
]


@settings(max_examples=200, deadline=None)
@given(
    order=st.permutations(list(range(len(MESSAGES)))),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_boundaries_survive_any_split(order: list[int], cuts: list[int]) -> None:
    stream = b"".join(MESSAGES[i] for i in order)
    ends = set()
    pos = 0
    for i in order:
        pos += len(MESSAGES[i])
        ends.add(pos)
    tracker = rfb.ClientMessages()
    out = b""
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    for start, stop in itertools.pairwise(points):
        out += tracker.feed(stream[start:stop])
        if tracker.at_boundary:
            assert len(out) in ends | {0}  # an injected event would land between messages
    assert out == stream and tracker.at_boundary


def test_extended_mouse_buttons_is_removed_from_set_encodings() -> None:
    tracker = rfb.ClientMessages()
    out = tracker.feed(rfb.set_encodings([0, rfb.ENC_EXTENDED_MOUSE_BUTTONS, 1]))
    assert out == rfb.set_encodings([0, 1])


def test_unknown_message_type_forwards_what_came_before_and_stays_usable() -> None:
    tracker = rfb.ClientMessages()
    with pytest.raises(rfb.BadClientData) as exc:
        tracker.feed(rfb.key_event(0x61, True) + b"\x07garbage")
    assert exc.value.forward == rfb.key_event(0x61, True)
    assert "unknown client message type 7" in str(exc.value)
    assert tracker.at_boundary
    assert tracker.feed(rfb.pointer_event(0, 1, 1)) == rfb.pointer_event(0, 1, 1)


def test_vnc_auth_response_reverses_key_bits() -> None:
    # RFB's DES reads each key byte lowest bit first: a password of b"\x01" keys DES with
    # 0x80; the same challenge under two passwords that differ only in bit order differs.
    challenge = bytes(range(16))
    assert rfb.vnc_auth_response("\x01", challenge) != rfb.vnc_auth_response("\x80", challenge)
    assert len(rfb.vnc_auth_response("a-long-password", challenge)) == 16
    assert rfb.vnc_auth_response("a-long-p", challenge) == rfb.vnc_auth_response(
        "a-long-password", challenge
    )


def test_key_names_and_text() -> None:
    assert key_keysym("Enter") == 0xFF0D
    assert key_keysym("ArrowLeft") == 0xFF51
    assert key_keysym("F12") == 0xFFC9
    assert key_keysym("a") == 0x61
    assert key_keysym("é") == 0xE9
    assert key_keysym("€") == 0x010020AC
    with pytest.raises(ValueError):
        key_keysym("NoSuchKey")
    assert text_keys("a!") == [
        (0x61, True),
        (0x61, False),
        (SHIFT, True),
        (0x21, True),
        (0x21, False),
        (SHIFT, False),
    ]
