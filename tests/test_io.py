"""The handshake's socket helpers (simplews/_io.py), over real socket pairs."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from simplews._io import (open_tcp_socket, read_head, send_head, socket_addresses, wait_readable,
                          wait_writable)
from simplews.http11 import parse_request

from conftest import TIMEOUT
from support import open_fds

REQUEST = b"GET /chat HTTP/1.1\r\nHost: example.com\r\n\r\n"


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_read_head_gathers_a_head_sent_in_pieces_and_returns_what_follows(pair):
    reader, writer = pair

    def trickle():
        for i in range(0, len(REQUEST), 7):
            writer.sendall(REQUEST[i:i + 7])
            time.sleep(0.001)  # separate reads on the other side
        writer.sendall(b"\x81\x00")

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        request, leftover = read_head(reader, parse_request, time.monotonic() + TIMEOUT)
    finally:
        thread.join(TIMEOUT)
    assert request.path == "/chat" and request.headers["Host"] == "example.com"
    rest = leftover + (reader.recv(16) if len(leftover) < 2 else b"")
    assert rest == b"\x81\x00"
    assert reader.gettimeout() is None  # a plain socket is never put in timeout mode


def test_read_head_times_out_and_reports_eof(pair):
    reader, writer = pair
    writer.sendall(REQUEST[:10])
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        read_head(reader, parse_request, time.monotonic() + 0.05)
    assert time.monotonic() - started < TIMEOUT
    writer.close()
    with pytest.raises(EOFError):
        read_head(reader, parse_request, time.monotonic() + TIMEOUT)


def test_read_head_sent_reads_before_waiting_and_waits_when_nothing_is_there(pair, monkeypatch):
    import simplews._io as io_module
    reader, writer = pair
    waits, rest = [], []
    real_wait = io_module.wait_readable

    def wait_readable(sock, timeout):
        waits.append(timeout)
        if rest:  # the rest of the head comes while read_head waits
            writer.sendall(rest.pop())
        return real_wait(sock, timeout)

    monkeypatch.setattr(io_module, "wait_readable", wait_readable)
    writer.sendall(REQUEST)
    request, _ = read_head(reader, parse_request, time.monotonic() + TIMEOUT, sent=True)
    assert request.path == "/chat" and waits == []  # there already: read at once
    writer.sendall(REQUEST[:10])  # half of it: read, then wait for the rest
    rest.append(REQUEST[10:])
    request, _ = read_head(reader, parse_request, time.monotonic() + TIMEOUT, sent=True)
    assert request.headers["Host"] == "example.com" and len(waits) == 1 and not rest
    with pytest.raises(TimeoutError):  # nothing at all: no BlockingIOError, a wait that times out
        read_head(reader, parse_request, time.monotonic() + 0.05, sent=True)
    assert len(waits) >= 2


def test_send_head_waits_for_room_and_times_out_when_none_comes(pair):
    writer, reader = pair
    writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = b"x" * (1 << 20)  # far more than both buffers hold
    received = bytearray()

    def drain():
        while len(received) < len(big):
            data = reader.recv(65536)
            if not data:
                break
            received.extend(data)

    thread = threading.Thread(target=drain)
    thread.start()
    try:
        send_head(writer, big, time.monotonic() + TIMEOUT)  # waits with poll while full
    finally:
        thread.join(TIMEOUT)
    assert bytes(received) == big
    assert writer.gettimeout() is None
    with pytest.raises(TimeoutError):  # nobody reads now
        send_head(writer, big, time.monotonic() + 0.05)


def test_waits_report_readiness(pair):
    a, b = pair
    assert wait_writable(a, 0)
    assert not wait_readable(a, 0)
    b.sendall(b"x")
    assert wait_readable(a, TIMEOUT)


def test_waits_on_a_socket_closed_meanwhile_return_instead_of_raising(pair):
    # The keepalive thread may wait on a socket that another thread has just closed;
    # poll() would raise ValueError for its descriptor -1 (issue 12, item 10: tracebacks
    # logged on normal closes under load). The read or write that follows reports it.
    a, _ = pair
    a.close()
    assert wait_readable(a, 0) and wait_writable(a, 0)
    with pytest.raises(OSError):
        a.recv(1)


@pytest.mark.parametrize("host, listen_on", [("127.0.0.1", "127.0.0.1"), ("::1", "::1"),
                                             ("localhost", "127.0.0.1")])
def test_open_tcp_socket_looks_up_names_but_not_addresses(host, listen_on, monkeypatch):
    family = socket.AF_INET6 if ":" in listen_on else socket.AF_INET
    lookups = []
    lookup = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda name, *args, **kwargs: (
        lookups.append(name), lookup(name, *args, **kwargs))[1])
    with socket.create_server((listen_on, 0), family=family) as listener:
        port = listener.getsockname()[1]
        with open_tcp_socket(host, port, TIMEOUT) as sock:
            accepted, _ = listener.accept()
            with accepted:
                assert sock.getpeername()[:2] == accepted.getsockname()[:2]
                assert sock.gettimeout() == TIMEOUT  # like create_connection(timeout=)
    assert lookups == (["localhost"] if host == "localhost" else [])


def test_open_tcp_socket_refused_raises_and_closes_its_socket():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]  # nobody listens once it is closed
    before = open_fds()
    for _ in range(20):
        with pytest.raises(ConnectionRefusedError):
            open_tcp_socket("127.0.0.1", port, TIMEOUT)
    assert open_fds() == before


def test_socket_addresses_share_their_host_strings():
    """(local, peer), the hosts one object across connections, and a local address equal
    to the last one that object (a server keeps them all)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(2)]
        accepted = [listener.accept()[0] for _ in clients]
        try:
            (local1, peer1), (local2, peer2) = map(socket_addresses, accepted)
            assert local1 == local2 == ("127.0.0.1", port)
            assert peer1 == clients[0].getsockname() and peer2 == clients[1].getsockname()
            assert local1[0] is local2[0] is peer1[0] is peer2[0]
            assert local1 is local2  # the same local address: one tuple
        finally:
            for sock in clients + accepted:
                sock.close()
