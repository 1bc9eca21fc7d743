"""simplews.testing.RawClient against a simplews server (ws:// and wss://): well-formed and
broken frames, and the close code the server answers each with."""
from __future__ import annotations

import socket
import threading
import time

import pytest

import simplews
from simplews.frames import Opcode
from simplews.testing import RawClient

from conftest import client_ssl_context

T = 5


@pytest.fixture
def raw(start_server, scheme):
    """A RawClient connected to a simplews echo server."""
    server = start_server()
    context = client_ssl_context() if scheme == "wss" else None
    with RawClient(server.uri + "echo", ssl=context) as client:
        yield client
    assert client.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("simplews-testing")]


def test_echo_and_the_record_of_the_server_frames(raw):
    assert raw.response.status == 101 and raw.request.path == "/echo"
    raw.send("hello")
    raw.send([b"a", b"b"])
    assert raw.expect("hello", timeout=T) == "hello"
    assert raw.recv(timeout=T) == b"ab"
    assert [(f.opcode, f.payload, f.masked) for f in raw.frames] == [
        (Opcode.TEXT, b"hello", False), (Opcode.BINARY, b"ab", False)]


def test_ping(raw):
    assert raw.ping(b"1").wait(T)
    assert raw.wait_frame(Opcode.PONG, timeout=T).payload == b"1"


def test_clean_close(raw):
    raw.close(1000, "bye", timeout=T)
    assert raw.closed and raw.wait_closed(timeout=0) == (1000, "")


@pytest.mark.parametrize("frame, code", [
    (b"\x81\x05hello", 1002),  # unmasked
    (b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"\xc3\x28", b"ab")), 1007),  # invalid UTF-8
    (b"\x83\x80abcd", 1002),  # reserved opcode
])
def test_a_broken_frame_gets_its_close_code(raw, frame, code):
    raw.send_raw(frame)
    assert raw.wait_closed(timeout=T)[0] == code
    with pytest.raises(simplews.ConnectionClosedError):
        raw.recv(timeout=T)


def test_send_frame_masks_by_default(raw):
    raw.send_frame(Opcode.PING, b"x" * 126)  # a control frame over 125 bytes
    code, reason = raw.wait_closed(timeout=T)
    assert code == 1002 and "125" in reason


def test_a_refused_handshake_raises_invalid_status(start_server, scheme):
    server = start_server(process_request=lambda conn, request: simplews.Response(403, body=b"no"))
    context = client_ssl_context() if scheme == "wss" else None
    with pytest.raises(simplews.InvalidStatus) as caught:
        RawClient(server.uri, ssl=context)
    assert caught.value.status == 403


def test_open_timeout_none_waits_as_long_as_it_takes(start_server, scheme):
    """None gave a TypeError once open_timeout became a deadline."""
    server = start_server()
    context = client_ssl_context() if scheme == "wss" else None
    with RawClient(server.uri, ssl=context, open_timeout=None) as client:
        assert client.response.status == 101


def test_open_timeout_bounds_the_whole_handshake():
    """It bounded each read: a server sending its answer a byte at a time held the
    constructor for half a minute."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n":
                if stop.wait(0.05):
                    return
                conn.send(bytes([byte]))

    server = threading.Thread(target=trickle)
    server.start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            RawClient(f"ws://127.0.0.1:{listener.getsockname()[1]}/", open_timeout=0.5)
        assert time.monotonic() - started < T / 2
    finally:
        stop.set()
        server.join(T)
        listener.close()
