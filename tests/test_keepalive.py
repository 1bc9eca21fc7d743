"""The process-wide keepalive thread (DESIGN §2; issue 3, items 4 and 5)."""
import contextlib
import random
import select
import selectors
import socket
import sys
import threading
import time

import pytest

import simplews
from simplews.extensions import DeflateConfig
from simplews.frames import Opcode
from simplews.protocol import Message, Pong

from support import (fuzz_seed, keepalive_thread_held_at_its_lock, scaled, send_tls_key_update,
                     unread_bytes, wait_for)
from conftest import TIMEOUT, Servers, raw_client


def pong_delays(peer, count=5):
    delays = []
    for i in range(count):
        payload = f"p{i}".encode()
        started = time.monotonic()
        peer.send(peer.protocol.send_ping(payload))
        event = peer.next_event(timeout=TIMEOUT)
        assert event == Pong(payload, (payload,))
        delays.append(time.monotonic() - started)
    return delays


def test_client_answers_pings_while_the_application_is_not_reading(connect, raw_server):
    ws, peer = raw_server.pair(connect, ping_interval=None)
    assert max(pong_delays(peer)) < scaled(0.1)  # the application never calls recv()
    peer.close()
    with pytest.raises(simplews.ConnectionClosedError):
        ws.recv(timeout=TIMEOUT)


def test_server_answers_pings_while_the_handler_sleeps(start_server, scheme):
    release = threading.Event()
    server = start_server(lambda ws: release.wait(TIMEOUT), ping_interval=None)
    peer = raw_client(server.uri)
    try:
        assert max(pong_delays(peer)) < scaled(0.1)
    finally:
        release.set()
        peer.close()


@pytest.mark.parametrize("reading", ["nobody", "recv(timeout)"])
def test_a_tls_record_without_data_blocks_neither_the_keepalive_thread_nor_a_timeout(reading):
    """A TLS 1.3 KeyUpdate is a whole record with no data: a blocking read of it went on
    to wait for the next record. The keepalive thread (nobody reading) stalled there,
    and every connection's pongs with it; recv(timeout=1) stayed blocked."""
    outcomes, release = [], threading.Event()

    def handler(ws):
        if reading == "recv(timeout)":
            try:
                ws.recv(timeout=scaled(1.0))
            except TimeoutError:
                outcomes.append("timeout")
        release.wait(TIMEOUT)

    servers = [Servers("wss"), Servers("ws")]
    secure = servers[0](handler, ping_interval=None)
    plain = servers[1](lambda ws: release.wait(TIMEOUT), ping_interval=None)
    silent, healthy = raw_client(secure.uri), raw_client(plain.uri)
    try:
        assert wait_for(lambda: secure.connections)
        if not send_tls_key_update(silent.sock):
            pytest.skip("no TLS 1.3 KeyUpdate from this Python (ctypes, OpenSSL)")
        if reading == "nobody":  # the keepalive thread takes the record in, then answers
            server_socket = next(iter(secure.connections)).socket  # other pings at once
            assert wait_for(lambda: not unread_bytes(server_socket))
            assert max(pong_delays(healthy, 3)) < scaled(0.5)
        else:
            assert wait_for(lambda: outcomes, scaled(3.0)) and outcomes == ["timeout"]
    finally:
        release.set()
        silent.close()
        healthy.close()
        for each in servers:
            each.stop()


def test_data_read_by_the_keepalive_thread_reaches_recv(connect, raw_server):
    ws, peer = raw_server.pair(connect, ping_interval=None)
    for i in range(3):
        peer.send_frame(Opcode.TEXT, str(i).encode())
    peer.send(peer.protocol.send_ping(b"x"))
    assert peer.next_event() == Pong(b"x", (b"x",))  # the keepalive thread read all of it
    assert [ws.recv(timeout=TIMEOUT) for _ in range(3)] == ["0", "1", "2"]


def test_queue_bound_stops_reading(connect, raw_server):
    ws, peer = raw_server.pair(connect, ping_interval=None, max_queue=2)
    for i in range(10):
        peer.send_frame(Opcode.TEXT, str(i).encode())
    deadline = time.monotonic() + TIMEOUT
    while len(ws._queue) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # a few keepalive ticks: it must not queue more
    assert len(ws._queue) == 2
    assert [ws.recv(timeout=TIMEOUT) for _ in range(10)] == [str(i) for i in range(10)]


def test_unanswered_pings_close_with_1011(connect, raw_server):
    ws, peer = raw_server.pair(connect, ping_interval=0.2, ping_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(simplews.ConnectionClosedError) as info:
        ws.recv(timeout=TIMEOUT)  # in progress when the timeout strikes
    elapsed = time.monotonic() - started
    assert info.value.code == 1011 and ws.close_code == 1011
    assert elapsed < scaled(1.0), f"closed after {elapsed:.2f}s"


def test_answering_peer_stays_open_and_latency_is_set(start_server, connect):
    server = start_server(ping_interval=None)
    ws = connect(server, ping_interval=0.1, ping_timeout=0.5)
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.6)  # several pings go out and come back meanwhile
    assert ws.state is simplews.State.OPEN and ws.latency > 0
    ws.send("alive")
    assert ws.recv(timeout=TIMEOUT) == "alive"


def test_keepalive_thread_is_one_per_process(start_server, connect):
    server = start_server()
    clients = [connect(server) for _ in range(20)]
    names = [t.name for t in threading.enumerate() if t.name == "simplews-keepalive"]
    assert names == ["simplews-keepalive"]
    for ws in clients:
        ws.close()


def test_watch_skips_a_socket_closed_since_its_fileno_was_read():
    """A connection may close its socket between fileno() and the registration: the
    keepalive thread must skip it quietly (it used to log EBADF with a traceback)."""
    from simplews import keepalive

    class ClosedMeanwhile:
        fileno_calls = 0

        def keepalive_fileno(self):
            self.fileno_calls += 1
            return 999_999  # no such descriptor: epoll_ctl fails with EBADF

        @staticmethod
        def wants_idle_reads():
            return True

    selector = selectors.DefaultSelector()
    watched = {}
    connection = ClosedMeanwhile()
    keepalive._schedules[connection] = None  # registered, without starting the thread
    try:
        keepalive._watch(selector, watched, connection)
    finally:
        del keepalive._schedules[connection]
        selector.close()
    assert connection.fileno_calls == 1 and watched == {}


def test_normal_closes_racing_keepalive_pings_log_no_error(start_server, connect, caplog):
    # Issue 12, item 10: a ping racing a close is not an error (tracebacks were logged
    # under load when a socket closed between the keepalive's check and its write).
    caplog.set_level("WARNING", logger="simplews")
    server = start_server(ping_interval=0.001, ping_timeout=5)
    for _ in range(4):
        clients = [connect(server.uri, ping_interval=0.001, ping_timeout=5) for _ in range(25)]
        closers = [threading.Thread(target=ws.close) for ws in clients]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join(TIMEOUT)
        assert all(ws.close_code == 1000 for ws in clients)
    assert not [r for r in caplog.records if r.levelno >= 30], caplog.text


def test_a_reader_that_stops_reading_hands_the_socket_back(connect, raw_server):
    """While recv() holds the read lock the keepalive thread does not watch the socket;
    once the application stops calling recv(), pings are answered again within a tick."""
    ws, peer = raw_server.pair(connect, ping_interval=None)
    for i in range(3):
        peer.send_frame(Opcode.TEXT, str(i).encode())
        assert ws.recv(timeout=TIMEOUT) == str(i)  # the application reads for a while
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)  # ... and then stops
    assert max(pong_delays(peer)) < scaled(0.2)


def test_a_drained_queue_lets_the_keepalive_thread_read_again(connect, raw_server):
    """A full read-ahead queue stops the reading (back-pressure); recv() draining it
    hands the socket back to the keepalive thread, which answers the ping behind."""
    ws, peer = raw_server.pair(connect, ping_interval=None, max_queue=2)
    for i in range(2):
        peer.send_frame(Opcode.TEXT, str(i).encode())
    peer.send(peer.protocol.send_ping(b"behind"))
    assert wait_for(lambda: len(ws._queue) == 2)
    assert [ws.recv(timeout=TIMEOUT) for _ in range(2)] == ["0", "1"]
    assert peer.next_event(timeout=TIMEOUT) == Pong(b"behind", (b"behind",))
    assert max(pong_delays(peer)) < scaled(0.2)  # nobody calls recv(): the thread reads


def test_the_keepalive_thread_does_not_visit_connections_with_nothing_due(start_server, connect,
                                                                           monkeypatch):
    """Issue 14: its cost grows with what happens, not with the number of connections.
    200 connections whose handlers wait in recv(), pings every 20 s: over 10 ticks the
    thread looks at none of them (it used to visit each one every tick)."""
    from simplews._transport import Transport
    from simplews import keepalive

    visits = []
    for name in ("keepalive_tick", "wants_idle_reads", "read_idle"):
        original = getattr(Transport, name)
        monkeypatch.setattr(Transport, name, lambda self, *a, _f=original, _n=name: (
            visits.append(_n), _f(self, *a))[1])
    server = start_server(lambda ws: ws.recv(timeout=TIMEOUT))
    clients = [connect(server, ping_interval=None) for _ in range(100)]
    try:
        assert wait_for(lambda: len(server.connections) == 100)
        time.sleep(2 * keepalive.TICK)  # the registrations settle
        visits.clear()
        time.sleep(10 * keepalive.TICK)
        assert len(visits) < 10, visits[:20]
    finally:
        for ws in clients:
            ws.close()


def test_pings_falling_due_close_together_share_one_wake_up():
    """Issue 14 (idle CPU): 10,000 connections pinged every 20 s make 500 pings a second,
    each its own wake-up of the thread if it sleeps until the next one is due exactly.
    It sleeps BATCH at least: here 500 pings/s, at most one wake-up per BATCH."""
    from simplews import keepalive
    from simplews._io import Flag

    class Idle:
        """A connection with nothing to do but its pings, each answered at once."""
        ping_timeout = 1.0

        def __init__(self, interval, seen):
            self.ping_interval, self.seen, self.pings = interval, seen, 0

        def keepalive_fileno(self):
            return -1

        def keepalive_tick(self, now):
            self.seen.add(now)  # one value of ``now`` per turn of the thread
            return None

        def keepalive_ping(self):
            self.pings += 1
            flag = Flag()
            flag.set()
            return flag

        def keepalive_timeout(self):
            raise AssertionError("pong late")

        def wants_idle_reads(self):
            return False

        def read_idle(self):
            return False

    seen, window = set(), 0.5
    fakes = []
    try:
        for _ in range(50):  # pings 2 ms apart: 500 a second
            fakes.append(Idle(0.1, seen))
            keepalive.register(fakes[-1])
            time.sleep(0.002)
        time.sleep(0.2)  # every one has pinged once
        seen.clear()
        start = sum(f.pings for f in fakes)
        time.sleep(window)
        turns, pings = len(seen), sum(f.pings for f in fakes) - start
    finally:
        for fake in fakes:
            keepalive.unregister(fake)
    assert pings >= 100, pings  # the pings went out (250 on time)
    assert turns <= window / keepalive.BATCH * 1.5 + 2, (turns, pings)


@pytest.mark.parametrize("max_queue", [3, 16, None])
def test_recv_reads_a_burst_ahead_in_order_and_a_ping_behind_it_is_answered(connect, raw_server, max_queue):
    # recv() takes the whole small messages behind the one it returns into the queue (up
    # to max_queue) in one call; the ping behind them is answered while the application
    # does not read (if the queue has room for what is before it; else as it drains).
    ws, peer = raw_server.pair(connect, ping_interval=None, max_queue=max_queue)
    messages = [f"m{i}" for i in range(6)]
    peer.send(b"".join(b"".join(peer.protocol.send_data(Opcode.TEXT, m.encode())) for m in messages)
              + peer.protocol.send_ping(b"behind"))
    assert ws.recv(timeout=TIMEOUT) == "m0"
    if max_queue is None or max_queue > len(messages):
        assert peer.next_event() == Pong(b"behind", (b"behind",))  # nobody reads meanwhile
    assert [ws.recv(timeout=TIMEOUT) for _ in messages[1:]] == messages[1:]
    if max_queue is not None and max_queue <= len(messages):
        assert peer.next_event() == Pong(b"behind", (b"behind",))
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    ws.send("after")
    assert peer.next_event() == Message("after")


@pytest.mark.parametrize("behind", ["ping", "messages and a ping", "ping in TLS's buffer"])
def test_a_ping_a_reader_left_in_the_buffer_is_answered_while_nobody_reads(connect, raw_server, behind):
    # The race: the keepalive thread watches the socket, but the reader takes the data in
    # before it looks; the ping behind the message returned then waits in the Protocol's
    # buffer (or, TLS, decrypted in the ssl module's: a first read takes 256 bytes, here
    # the message exactly) and the socket is not readable. Holding the keepalive thread at
    # its lock makes the race go that way every time; the reader must hand it back.
    from simplews import keepalive
    ws, peer = raw_server.pair(connect, ping_interval=None, max_queue=4, compression=(
        DeflateConfig() if behind == "messages and a ping" else None))  # deflate: no read-ahead
    first = "m" * 252 if behind == "ping in TLS's buffer" else "m"  # a 256-byte frame
    after = ["a", "b"] if behind == "messages and a ping" else []
    assert pong_delays(peer, 1)  # the keepalive thread watches the socket (it answered)
    with keepalive._lock:
        assert wait_for(keepalive_thread_held_at_its_lock)
        peer.send(b"".join(b"".join(peer.protocol.send_data(Opcode.TEXT, m.encode()))
                           for m in [first, *after]) + peer.protocol.send_ping(b"behind"))
        assert ws.recv(timeout=TIMEOUT) == first
        if raw_server.scheme == "wss" or first == "m":  # (ws: 256 bytes read, the ping left)
            assert not select.select([ws.socket], [], [], 0)[0]  # all of it was read
    assert peer.next_event() == Pong(b"behind", (b"behind",))  # nobody reads meanwhile
    assert [ws.recv(timeout=TIMEOUT) for _ in after] == after
    ws.send("after")
    assert peer.next_event() == Message("after")


@pytest.mark.parametrize("seed", [1, 2, 3] if fuzz_seed() is None else [fuzz_seed()])
def test_fuzz_pings_among_messages_are_answered_while_nobody_reads(connect, raw_server, seed):
    # Seeded: bursts of messages (some fragmented) and pings (some between fragments),
    # each burst cut at a random byte into two writes; the application reads a random
    # number of messages, then stops. Every ping with fewer than max_queue unread
    # messages before it is answered meanwhile (the rest as reading resumes); every
    # message arrives whole and in order; deflate or not, any max_queue, ws and wss.
    rng = random.Random(seed)
    max_queue = rng.choice([1, 2, 5, 16, None])
    compression = DeflateConfig() if rng.random() < 0.5 else None
    context = f"seed {seed} max_queue {max_queue} deflate {compression is not None}"
    ws, peer = raw_server.pair(connect, compression, ping_interval=None, max_queue=max_queue)
    sent: list = []
    pings: list = []  # (payload, how many messages were sent before it)
    acknowledged: set = set()
    received = 0

    def await_pongs(payloads: set) -> None:  # (pongs may acknowledge earlier pings too)
        while not payloads <= acknowledged:
            event = peer.next_event()
            assert isinstance(event, Pong), (context, event)
            acknowledged.update(event.acknowledged)

    def ping(wire: list) -> None:
        payload = b"p%d" % len(pings)
        pings.append((payload, len(sent)))
        wire.append(peer.protocol.send_ping(payload))

    for _ in range(25):
        wire: list = []
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 0.3:
                ping(wire)
                continue
            text = rng.random() < 0.5
            data = "é" * rng.randint(0, 150) if text else rng.randbytes(rng.randint(0, 400))
            raw = data.encode() if text else data
            pieces = rng.randint(1, 3)
            cuts = sorted(rng.randint(0, len(raw)) for _ in range(pieces - 1))
            parts = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
            for i, part in enumerate(parts):
                opcode = Opcode.CONT if i else (Opcode.TEXT if text else Opcode.BINARY)
                wire.extend(peer.protocol.send_data(opcode, part, fin=i == len(parts) - 1))
                if i < len(parts) - 1 and rng.random() < 0.3:
                    ping(wire)  # §5.4: control frames may come between fragments
            sent.append(data)
        data = b"".join(wire)
        cut = rng.randint(0, len(data))
        peer.send(data[:cut])
        peer.send(data[cut:])
        for _ in range(rng.randint(0, len(sent) - received)):
            assert ws.recv(timeout=TIMEOUT) == sent[received], context
            received += 1
        await_pongs({payload for payload, before in pings  # while nobody reads
                     if max_queue is None or before - received < max_queue})
    while received < len(sent):
        assert ws.recv(timeout=TIMEOUT) == sent[received], context
        received += 1
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)  # (what is left to parse: pings)
    await_pongs({payload for payload, _ in pings})


def _flood(peer, frame: bytes, stop: threading.Event) -> threading.Thread:
    """Send ``frame`` over and over until ``stop`` (or the connection ends), reading nothing."""
    def run() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                peer.sock.sendall(frame * 64)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _small_buffers(ws, peer) -> None:
    ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def test_a_ping_flood_costs_the_keepalive_thread_one_pong_a_turn(connect, raw_server):
    """Each ping was answered as it was parsed (a poll and a sendall each), and a turn
    parsed all one read held: a flood from one peer held the process's keepalive thread
    ~400 ms a turn. Now a turn handles IDLE_CONTROLS frames at most, with one pong for
    them (RFC 6455 §5.5.3: the latest ping's)."""
    ws, peer = raw_server.pair(connect, ping_interval=None)  # nobody reads: the keepalive thread does
    count = 5000
    peer.send(peer.protocol.send_ping(b"") * count + peer.protocol.send_ping(b"end"))
    answered = 0
    while True:
        event = peer.next_event()
        assert isinstance(event, Pong)
        if event.data == b"end":
            break
        answered += 1
    assert answered <= count // 16, answered  # was: one pong each (5000)
    ws.send("still open")
    assert peer.next_event() == Message("still open")
    peer.close()


def test_recv_timeout_holds_while_pongs_cannot_be_written(connect, raw_server):
    """A peer that floods pings and reads nothing: recv(timeout) waited for ever in the
    pong's sendall (and, with room, a flood kept it reading past its deadline)."""
    ws, peer = raw_server.pair(connect, ping_interval=None)
    _small_buffers(ws, peer)
    stop, outcomes = threading.Event(), []

    def receive() -> None:
        for _ in range(3):
            started = time.monotonic()
            try:
                ws.recv(timeout=0.2)
            except TimeoutError:
                outcomes.append(time.monotonic() - started)

    flood = _flood(peer, peer.protocol.send_ping(b"x" * 125), stop)
    receiver = threading.Thread(target=receive)
    receiver.start()
    try:
        receiver.join(TIMEOUT)
        assert len(outcomes) == 3 and max(outcomes) < scaled(2), outcomes
    finally:
        stop.set()
        peer.sock.shutdown(socket.SHUT_RDWR)  # (before the fix: what ended the sendall)
        peer.close()
        receiver.join(TIMEOUT)
        flood.join(TIMEOUT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs TCP_INFO's bytes_acked")
def test_a_ping_that_finds_no_room_for_ping_timeout_fails_the_connection_1011(connect, raw_server):
    """Our pongs fill the socket of a peer that reads nothing, then it falls silent: the
    keepalive ping never went out, so ping_timeout never struck, and the connection stayed
    open for ever."""
    ws, peer = raw_server.pair(connect, ping_interval=0.2, ping_timeout=0.5)
    _small_buffers(ws, peer)
    peer.send(peer.protocol.send_ping(b"x" * 125) * 20_000)
    assert ws._closed.wait(scaled(5))
    assert ws.close_code == 1011
    peer.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs TCP_INFO's bytes_acked")
def test_a_sender_blocked_on_a_silent_peer_ends_with_1011_though_a_pong_waits(connect, raw_server):
    """A pong that could not go out made every keepalive turn end at the replies, before
    the ping schedule: with our writer stuck on a peer that reads nothing and one ping
    from it, the connection stayed open (and the sender blocked) for ever."""
    ws, peer = raw_server.pair(connect, ping_interval=0.2, ping_timeout=0.5)
    _small_buffers(ws, peer)
    ended = []

    def send() -> None:
        with contextlib.suppress(simplews.ConnectionClosed):
            while True:
                ws.send(b"x" * 65536)
        ended.append(True)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert wait_for(lambda: not select.select([], [ws.socket], [], 0)[1])  # the socket is full
        peer.send(peer.protocol.send_ping(b"p"))
        assert ws._closed.wait(scaled(5))
        assert ws.close_code == 1011
        sender.join(TIMEOUT)
        assert ended == [True]
    finally:
        peer.sock.shutdown(socket.SHUT_RDWR)
        peer.close()
        sender.join(TIMEOUT)


def test_a_tls_record_without_data_while_our_writer_is_stuck_leaves_the_keepalive_thread_free():
    """Our writer blocked on a TLS peer that reads nothing, then that peer sends a
    KeyUpdate: the keepalive thread read the whole record blocking, as it must not
    while a writer holds the lock non-blocking, and waited there for a next record that
    never came: no connection of the process got its pongs. Now that read is made in a
    thread of its own."""
    def push(ws):
        ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with contextlib.suppress(simplews.ConnectionClosed):
            while True:
                ws.send(b"x" * 65536)

    release = threading.Event()
    servers = [Servers("wss"), Servers("ws")]
    secure = servers[0](push, ping_interval=None, compression=None)
    plain = servers[1](lambda ws: release.wait(TIMEOUT), ping_interval=None)  # the keepalive thread answers
    silent, healthy = raw_client(secure.uri), raw_client(plain.uri)
    try:
        assert wait_for(lambda: secure.connections)
        server_socket = next(iter(secure.connections)).socket
        assert wait_for(lambda: not select.select([], [server_socket], [], 0)[1])  # the writer is stuck
        if not send_tls_key_update(silent.sock):
            pytest.skip("no TLS 1.3 KeyUpdate from this Python (ctypes, OpenSSL)")
        assert wait_for(lambda: not unread_bytes(server_socket))  # the record was taken in
        assert max(pong_delays(healthy, 3)) < scaled(0.5)
    finally:
        release.set()
        silent.sock.shutdown(socket.SHUT_RDWR)
        silent.close()
        healthy.close()
        for each in servers:
            each.stop()


def test_a_writer_busy_compressing_is_not_taken_for_a_stuck_peer(start_server, connect):
    """The stuck-ping rule looks for a full socket: while send() compresses a large
    message under the writer lock, nothing is written and TCP acknowledges nothing, yet
    the peer is fine (a first version failed such a connection with 1011)."""
    server = start_server(lambda ws: ws.send(str(len(ws.recv()))), max_size=None)
    message = random.Random(7).randbytes(24 << 20)  # ~0.9 s of compression, at level 9
    config = DeflateConfig(compress_level=9)
    with connect(server, compression=config, ping_interval=0.1, ping_timeout=0.4) as ws:
        ws.send(message)
        assert ws.recv(timeout=TIMEOUT) == str(len(message))
