"""simplews.testing.FakeServer over real sockets (127.0.0.1), ws:// and wss://, with simplews
clients: every verb, what the client sees of each fault, the record of frames, refusals,
and that nothing is left behind (threads, descriptors) whatever state it is closed in."""
from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections import Counter

import pytest

import simplews
from simplews.frames import Opcode
from simplews.testing import FakeServer, RecordedFrame

from conftest import client_ssl_context, server_ssl_context
from support import wait_for

T = 5  # the bound on anything these tests wait for


@pytest.fixture
def fake(scheme):
    with FakeServer(ssl=server_ssl_context() if scheme == "wss" else None) as server:
        yield server


@pytest.fixture
def pair(fake, connect):
    """A simplews client connected to ``fake`` and its peer: (ws, peer)."""
    ws = connect(fake.uri, compression=None)
    return ws, fake.accept(timeout=T)


def fake_server_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("simplews-testing")]


def test_uri_and_port(fake, scheme):
    assert fake.port > 0
    assert fake.uri == f"{scheme}://127.0.0.1:{fake.port}/"


def test_accept_gives_the_request_and_the_messages_sent_before_it(fake, connect):
    ws = connect(fake.uri + "feed?symbol=X", additional_headers={"Authorization": "Bearer t"})
    ws.send("subscribe")
    ws.send(b"\x00\x01")
    peer = fake.accept(timeout=T)
    assert peer.request.path == "/feed?symbol=X"
    assert peer.request.headers["Authorization"] == "Bearer t"
    assert peer.recv(timeout=T) == "subscribe"
    assert peer.recv(timeout=T) == b"\x00\x01"
    assert fake.peers == [peer] and fake.requests == [peer.request]


def test_accept_times_out(fake):
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        fake.accept(timeout=0.1)
    assert time.monotonic() - started < 2


def test_send_text_binary_and_fragments(pair):
    ws, peer = pair
    peer.send("hello")
    peer.send(b"\xff" * 70000)
    peer.send(["frag", "ments"])
    assert ws.recv(timeout=T) == "hello"
    assert ws.recv(timeout=T) == b"\xff" * 70000
    assert ws.recv(timeout=T) == "fragments"


def test_a_timeout_past_what_a_wait_takes_means_no_limit(fake, connect):
    """accept(), recv(), wait_frame() and wait_requests() raised OverflowError for 1e12."""
    ws = connect(fake.uri, compression=None)
    peer = fake.accept(timeout=1e12)
    ws.send("x")
    assert peer.recv(timeout=1e12) == "x"
    assert peer.wait_frame(Opcode.TEXT, timeout=1e12).payload == b"x"
    assert len(fake.wait_requests(1, timeout=1e12)) == 1


def test_recv_timeout_leaves_the_peer_usable(pair):
    ws, peer = pair
    with pytest.raises(TimeoutError):
        peer.recv(timeout=0.05)
    ws.send("late")
    assert peer.expect("late", timeout=T) == "late"


def test_expect_says_what_came(pair):
    ws, peer = pair
    ws.send("unsubscribe")
    with pytest.raises(AssertionError, match="expected 'subscribe', received 'unsubscribe'"):
        peer.expect("subscribe", timeout=T)


def test_ping_is_answered_and_recorded(pair):
    ws, peer = pair
    assert peer.ping(b"are you there").wait(T)
    pong = peer.wait_frame(Opcode.PONG, timeout=T)
    assert pong.payload == b"are you there" and pong.masked


def test_frames_record_what_the_client_sent(pair):
    ws, peer = pair
    ws.send(["ab", "cd"])
    ws.ping(b"p")
    assert peer.recv(timeout=T) == "abcd"
    peer.wait_frame(Opcode.PING, timeout=T)
    first, second, ping = peer.frames[:3]
    assert isinstance(first, RecordedFrame)
    assert (first.opcode, first.fin, first.rsv1, first.payload, first.masked) == (Opcode.TEXT, False, False,
                                                                                 b"ab", True)
    assert (second.opcode, second.fin, second.payload) == (Opcode.CONT, True, b"cd")
    assert ping.opcode == Opcode.PING and ping.text == "p"
    assert first.time <= second.time <= ping.time <= time.monotonic()


def test_close_with_a_code_and_reason(pair):
    ws, peer = pair
    peer.close(4001, "bye", timeout=T)
    with pytest.raises(simplews.ConnectionClosedError) as caught:
        ws.recv(timeout=T)
    assert (caught.value.code, caught.value.reason) == (4001, "bye")
    assert peer.closed
    assert peer.wait_closed(timeout=T)[0] == 4001  # the client's echo
    with pytest.raises(simplews.ConnectionClosed):
        peer.send("too late")


def test_a_client_close_is_answered_and_reported(pair):
    ws, peer = pair
    ws.send("last")
    ws.close(1000, "done")
    assert peer.wait_closed(timeout=T) == (1000, "done")
    assert peer.recv(timeout=T) == "last"
    with pytest.raises(simplews.ConnectionClosedOK):
        peer.recv(timeout=T)


def test_drop_leaves_the_client_with_1006_and_no_close_frame(pair):
    ws, peer = pair
    peer.drop()
    with pytest.raises(simplews.ConnectionClosedError) as caught:
        ws.recv(timeout=T)
    assert caught.value.code == 1006
    assert caught.value.__cause__ is None  # a clean EOF, not a network error
    assert peer.wait_closed(timeout=T) == (1006, "")  # the client closed TCP without a close frame
    assert not [f for f in peer.frames if f.opcode == Opcode.CLOSE]


def test_reset_leaves_the_client_with_econnreset(pair):
    ws, peer = pair
    peer.reset()
    with pytest.raises(simplews.ConnectionClosedError) as caught:
        ws.recv(timeout=T)
    assert caught.value.code == 1006
    cause = caught.value.__cause__
    assert isinstance(cause, ConnectionResetError) and cause.errno == errno.ECONNRESET
    assert peer.closed


@pytest.mark.parametrize("message", [["abc", b"def"], [b"ab", 3], [4]])
def test_send_refuses_a_message_it_cannot_send_before_any_frame_goes_out(pair, message):
    """A mixed message sent its first fragment before the TypeError: the client then took
    the next message for its continuation (1002); ints went out as bytes(n) zeros."""
    ws, peer = pair
    with pytest.raises(TypeError):
        peer.send(message)
    peer.send("hello")
    assert ws.recv(timeout=T) == "hello"


HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.mark.parametrize("verb", ["close", "drop", "reset"])
def test_close_drop_and_reset_end_a_send_that_is_stuck(verb):
    """A thread in peer.send() of 64 MiB to a client that reads nothing: close(timeout=...)
    and drop() waited for that writer for as long as it was stuck (for ever); reset() left
    the sender stuck for good, about half the time."""
    raised = []
    with FakeServer() as fake, socket.create_connection(("127.0.0.1", fake.port), timeout=T) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(HANDSHAKE)  # then reads nothing
        peer = fake.accept(timeout=T)

        def send():
            try:
                peer.send(b"x" * (64 << 20))
            except simplews.ConnectionClosed as exc:
                raised.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        assert wait_for(lambda: not select.select([], [peer.sock], [], 0)[1])  # stuck: the buffer is full
        ender = threading.Thread(target={"close": lambda: peer.close(4000, "bye", timeout=0.5),
                                         "drop": peer.drop, "reset": peer.reset}[verb])
        started = time.monotonic()
        ender.start()
        ender.join(T)
        sender.join(T)
        assert not ender.is_alive() and not sender.is_alive()
        assert time.monotonic() - started < T / 2
        assert len(raised) == 1
        if verb == "reset":  # an RST after what was sent (half the time nothing, or a FIN)
            with pytest.raises(ConnectionResetError):
                while client.recv(1 << 20):
                    pass


def test_send_raw_sends_partial_frames(pair):
    ws, peer = pair
    peer.send_raw(b"\x81\x05hel")
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.1)
    peer.send_raw(b"lo")
    assert ws.recv(timeout=T) == "hello"


def test_send_raw_broken_frame_fails_the_client_with_1002(pair):
    ws, peer = pair
    peer.send_raw(b"\x83\x00")  # opcode 3 is reserved
    with pytest.raises(simplews.ProtocolError):  # simplews raises the violation once,
        ws.recv(timeout=T)
    with pytest.raises(simplews.ConnectionClosedError) as caught:  # then the close it caused
        ws.recv(timeout=T)
    assert caught.value.code == 1002
    assert peer.wait_closed(timeout=T) == (1002, "reserved data opcode 0x3")


def test_send_frame_builds_frames_the_protocol_would_refuse(pair):
    ws, peer = pair
    peer.send_frame(Opcode.TEXT, b"a", fin=False)
    peer.send_frame(Opcode.CONT, b"b")
    assert ws.recv(timeout=T) == "ab"
    peer.send_frame(Opcode.TEXT, b"masked", masked=True)  # a server must not mask
    with pytest.raises(simplews.ProtocolError, match="masked frame from the server"):
        ws.recv(timeout=T)
    assert peer.wait_closed(timeout=T)[0] == 1002


def test_stop_reading_times_out_the_client_keepalive_with_1011(fake, connect):
    ws = connect(fake.uri, ping_interval=0.1, ping_timeout=0.2)
    peer = fake.accept(timeout=T)
    peer.stop_reading()
    started = time.monotonic()
    with pytest.raises(simplews.ConnectionClosedError) as caught:
        ws.recv(timeout=T)
    assert caught.value.code == 1011
    assert time.monotonic() - started < 2
    assert not [f for f in peer.frames if f.opcode == Opcode.PING]  # nothing was read


def test_resume_reading_delivers_what_was_held_back(pair):
    ws, peer = pair
    peer.stop_reading()
    ws.send("held")
    with pytest.raises(TimeoutError):
        peer.recv(timeout=0.1)
    assert peer.frames == []
    peer.resume_reading()
    assert peer.recv(timeout=T) == "held"


def test_answer_pings_false_leaves_pings_unanswered(fake, connect):
    ws = connect(fake.uri, ping_interval=None)
    peer = fake.accept(timeout=T)
    peer.answer_pings = False
    waiter = ws.ping(b"x")
    assert peer.wait_frame(Opcode.PING, timeout=T).payload == b"x"
    assert not waiter.wait(0.2)
    ws.send("still reading")
    assert peer.recv(timeout=T) == "still reading"


def test_refuse_next_then_the_client_reconnects(fake, connect):
    fake.refuse_next(503, body="maintenance")
    with pytest.raises(simplews.InvalidStatus) as caught:
        connect(fake.uri)
    assert caught.value.status == 503
    assert caught.value.response.body == b"maintenance"
    ws = connect(fake.uri)
    peer = fake.accept(timeout=T)
    assert len(fake.requests) == 2 and fake.peers == [peer]
    peer.send("back")
    assert ws.recv(timeout=T) == "back"


def test_refusals_queue_up_with_headers(fake, connect):
    fake.refuse_next(401, headers={"WWW-Authenticate": 'Basic realm="x"'})
    fake.refuse_next(429, body=b"slow down")
    for status in (401, 429):
        with pytest.raises(simplews.InvalidStatus) as caught:
            connect(fake.uri)
        assert caught.value.status == status
    assert caught.value.response.body == b"slow down"
    connect(fake.uri)
    fake.accept(timeout=T)


def test_stall_next_times_out_the_client_handshake(fake, connect):
    fake.stall_next()
    with pytest.raises(TimeoutError):
        connect(fake.uri, open_timeout=0.2)
    connect(fake.uri)
    assert fake.accept(timeout=T).request.path == "/"


def raw_client(fake, scheme) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=T)
    if scheme == "wss":
        sock = client_ssl_context().wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


HANDSHAKE = (b"GET /%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_refusals_go_to_requests_in_the_order_they_are_read(fake, scheme):
    """Not the order of connection: the client that connected first but sent its request
    last gets the 101; wait_requests() tells when a request is in."""
    with raw_client(fake, scheme) as first, raw_client(fake, scheme) as second:
        fake.refuse_next(503)
        second.sendall(HANDSHAKE % b"second")
        assert [r.path for r in fake.wait_requests(1, timeout=T)] == ["/second"]
        first.sendall(HANDSHAKE % b"first")
        assert [r.path for r in fake.wait_requests(2, timeout=T)] == ["/second", "/first"]
        assert second.recv(100).startswith(b"HTTP/1.1 503 ")
        assert first.recv(100).startswith(b"HTTP/1.1 101 ")
        assert fake.accept(timeout=T).request.path == "/first"


def test_wait_requests_ends_when_the_server_closes():
    """A wait_requests() in another thread stayed blocked for good (timeout=None) after
    close(); on a closed server it waited out its timeout."""
    fake = FakeServer()
    outcome = []

    def wait():
        try:
            fake.wait_requests(1, timeout=None)
        except RuntimeError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)  # (blocked for good if this fails)
    waiter.start()
    fake.close()
    waiter.join(T)
    assert not waiter.is_alive() and len(outcome) == 1
    with pytest.raises(RuntimeError, match="closed"):
        fake.wait_requests(1, timeout=T)


def test_wait_requests_times_out(fake, connect):
    connect(fake.uri)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="1 of 2 handshake requests"):
        fake.wait_requests(2, timeout=0.05)
    assert time.monotonic() - started < T
    assert len(fake.wait_requests(1, timeout=0)) == 1


def test_a_request_that_is_not_a_websocket_handshake_is_answered_426(fake, scheme):
    with raw_client(fake, scheme) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 426 ")
    with pytest.raises(TimeoutError):
        fake.accept(timeout=0.05)


def test_subprotocols(scheme, connect):
    context = server_ssl_context() if scheme == "wss" else None
    with FakeServer(ssl=context, subprotocols=["chat.v2", "chat.v1"]) as fake:
        ws = connect(fake.uri, subprotocols=["chat.v1"])
        peer = fake.accept(timeout=T)
        assert ws.subprotocol == peer.subprotocol == "chat.v1"


def test_compression_is_negotiated_on_request_and_frames_stay_compressed(scheme, connect):
    context = server_ssl_context() if scheme == "wss" else None
    with FakeServer(ssl=context, compression="deflate") as fake:
        ws = connect(fake.uri, compression="deflate")
        peer = fake.accept(timeout=T)
        ws.send("compressible " * 20)
        assert peer.recv(timeout=T) == "compressible " * 20
        assert peer.frames[0].rsv1 and len(peer.frames[0].payload) < 100
        peer.send("back " * 20)
        assert ws.recv(timeout=T) == "back " * 20


@pytest.mark.parametrize("paused", [False, True])
def test_close_sends_1001_to_clients_still_connected(scheme, connect, paused):
    """Also to one whose peer stopped reading (it got no close frame: 1006)."""
    context = server_ssl_context() if scheme == "wss" else None
    with FakeServer(ssl=context) as fake:
        ws = connect(fake.uri)
        peer = fake.accept(timeout=T)
        if paused:
            peer.stop_reading()
    with pytest.raises(simplews.ConnectionClosedOK) as caught:
        ws.recv(timeout=T)
    assert caught.value.code == 1001
    with pytest.raises(RuntimeError):
        fake.accept(timeout=0)


# ------------------------------------------------------------------ nothing leaks


def socket_ports() -> dict:
    """inode -> local port of this machine's TCP sockets (from /proc/net/tcp and tcp6)."""
    ports = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                ports[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    return ports


def descriptors() -> Counter:
    """What this process's file descriptors are: "tcp:PORT" (the local port), "socket" (any
    other, such as a socket pair), "anon_inode:[eventpoll]"..."""
    ports = socket_ports()
    kinds: Counter = Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir used
            continue
        if target.startswith("socket:["):
            inode = target[8:-1]
            target = f"tcp:{ports[inode]}" if inode in ports else "socket"
        kinds[target] += 1
    return kinds


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_nothing_is_left_after_a_failed_test_with_clients_in_every_state(scheme):
    """Closed midway by an exception, with: a simplews client connected, a TCP client that
    never sent its request, a stalled handshake, a peer that stopped reading, a dropped
    peer and one never accepted. Only the clients' own descriptors are left."""
    context = server_ssl_context() if scheme == "wss" else None
    client_context = client_ssl_context() if scheme == "wss" else None
    before = descriptors()
    threads_before = set(threading.enumerate())
    held = []
    with pytest.raises(RuntimeError, match="midway"), FakeServer(ssl=context) as fake:
        ws = simplews.connect(fake.uri, ssl=client_context, close_timeout=0.5)
        held.append(ws)
        fake.accept(timeout=T).send("hi")
        silent = socket.create_connection(("127.0.0.1", fake.port))
        held.append(silent)
        fake.stall_next()
        stalled = socket.create_connection(("127.0.0.1", fake.port))
        if client_context is not None:
            stalled = client_context.wrap_socket(stalled, server_hostname="127.0.0.1")
        stalled.sendall(HANDSHAKE % b"")
        held.append(stalled)
        fake.wait_requests(2, timeout=T)  # the stall goes to this one, not to a client below
        for _ in range(3):
            held.append(simplews.connect(fake.uri, ssl=client_context, ping_interval=None,
                                         close_timeout=0.5))
        fake.accept(timeout=T).stop_reading()
        fake.accept(timeout=T).drop()
        fake.wait_requests(5, timeout=T)
        raise RuntimeError("the test failed midway")
    assert fake_server_threads() == []
    assert set(threading.enumerate()) - threads_before <= {t for t in threading.enumerate()
                                                           if t.name == "simplews-keepalive"}
    left = descriptors() - before
    assert left[f"tcp:{fake.port}"] == 0  # neither the listener nor a connection
    assert left["socket"] == 0  # nor a wake-up socket pair
    # what is left is the clients' (their TCP sockets, simplews' keepalive selector)
    assert all(kind.startswith("tcp:") or kind == "anon_inode:[eventpoll]" for kind in left), left
    assert sum(n for kind, n in left.items() if kind.startswith("tcp:")) <= len(held)
    for client in held:
        client.close()
    deadline = time.monotonic() + T
    while descriptors() != before and time.monotonic() < deadline:  # the keepalive thread ends
        time.sleep(0.01)
    assert descriptors() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_close_is_idempotent_and_bounded_by_close_timeout():
    with FakeServer(close_timeout=0.2) as fake:
        client = socket.create_connection(("127.0.0.1", fake.port))
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        fake.accept(timeout=T)  # a client that will never answer the 1001 close
        started = time.monotonic()
        fake.close()
        assert time.monotonic() - started < 1.5
        fake.close()
    assert fake_server_threads() == []
    assert descriptors()[f"tcp:{fake.port}"] == 0
    client.close()
