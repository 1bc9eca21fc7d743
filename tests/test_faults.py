"""Faults, alone and combined: a stalled writer next to a bad frame, vanished peers, resets
in the middle of a frame, slow readers, shutdown with many blocked handlers, senders
racing close() (issue 12). Every test ends with no thread and no descriptor left."""
from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time
import tracemalloc
from typing import Callable, Dict, List

import pytest

import simplews
from simplews.frames import MASK_PIECE, Opcode
from simplews.protocol import DIRECT_MIN, Close, Message, Pong

from support import keepalive_thread_held_at_its_lock, open_fds, scaled, wait_for, waiting_at
from conftest import TIMEOUT, raw_client

BIG = bytes(32 << 20)  # far more than loopback's socket buffers: a send() of it blocks


@pytest.fixture(autouse=True)
def no_leaked_fds():
    """Every socket of the test is closed once its threads are gone (the autouse thread
    check in conftest runs after this fixture's teardown starts, so wait here too)."""
    before = open_fds()
    yield
    deadline = time.monotonic() + TIMEOUT
    while open_fds() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert open_fds() <= before, f"{open_fds() - before} descriptors left open"


def wait_for_data(sock: socket.socket) -> None:
    """Wait until ``sock`` has bytes to read (the server is writing to it)."""
    raw = sock.fileno()
    assert select.select([raw], [], [], TIMEOUT)[0], "no data from the server"


class Handlers:
    """A handler per path, and what each connection ended with."""

    def __init__(self) -> None:
        self.ended: Dict[str, BaseException] = {}
        self.done: Dict[str, threading.Event] = {}
        self.started: Dict[str, threading.Event] = {}

    def expect(self, path: str) -> None:
        self.done[path] = threading.Event()
        self.started[path] = threading.Event()

    def __call__(self, ws: simplews.Connection) -> None:
        path = ws.request.path
        self.started[path].set()
        try:
            if path.startswith("/stalled"):
                ws.send(BIG)  # to a peer that never reads
            for _ in ws:
                pass
        except simplews.WebSocketError as exc:
            self.ended[path] = exc
        finally:
            self.done[path].set()


def test_a_stalled_writer_and_a_bad_frame_do_not_freeze_the_keepalive_thread(start_server):
    # Issue 12, item 1: a handler blocked in send() to a peer that does not read; the
    # peer then sends an invalid frame, which the keepalive thread reads. It must not
    # wait for that connection's writer: the other connection's dead peer is still
    # failed with 1011 by the keepalive ping, on time.
    handlers = Handlers()
    for path in ("/stalled", "/dead"):
        handlers.expect(path)
    server = start_server(handlers, ping_interval=0.2, ping_timeout=0.3, close_timeout=1)
    stalled = raw_client(server.uri + "stalled")
    dead = None
    try:
        assert handlers.started["/stalled"].wait(TIMEOUT)
        wait_for_data(stalled.sock)  # the handler is in send() now, and stays there
        stalled.send(b"\x81\x01a")  # unmasked: the keepalive thread fails it with 1002
        dead = raw_client(server.uri + "dead")  # never reads, never answers a ping
        started = time.monotonic()
        assert handlers.done["/dead"].wait(TIMEOUT), "the keepalive thread is frozen"
        assert time.monotonic() - started < scaled(0.2 + 0.3 + 2)  # ping + timeout + ticks, slack
        assert isinstance(handlers.ended["/dead"], simplews.ConnectionClosedError)
        assert handlers.ended["/dead"].code == 1011
        # The stalled connection ends too, within its close_timeout: its sender sees
        # the code the connection was failed with.
        assert handlers.done["/stalled"].wait(TIMEOUT)
        assert handlers.ended["/stalled"].code == 1002
    finally:
        stalled.close()
        if dead is not None:
            dead.close()


def test_a_blocked_sender_and_a_bad_frame_on_the_client_side(raw_server, connect):
    # The same fault seen from a client: the application's thread is blocked in send()
    # (the server does not read), then the server sends a frame the client must reject.
    # The client's keepalive thread reads it and must not wait for the writer: another
    # client connection's keepalive pings still go out.
    stuck, peer = raw_server.pair(connect, ping_interval=None, close_timeout=1)
    errors: List[BaseException] = []

    def send_big():
        try:
            stuck.send(BIG)
        except simplews.WebSocketError as exc:
            errors.append(exc)

    sender = threading.Thread(target=send_big)
    sender.start()
    try:
        wait_for_data(peer.sock)  # the client is sending, and will block
        peer.send(b"\x89\x7e\x00\x80" + bytes(128))  # a 128-byte ping: 1002
        other, other_peer = raw_server.pair(connect, ping_interval=0.1, ping_timeout=5)
        other_peer.sock.settimeout(TIMEOUT)
        assert other_peer.next_event() is not None  # a keepalive ping arrived (and is answered)
        sender.join(TIMEOUT)
        assert not sender.is_alive()
        assert errors and errors[0].code == 1002
        with pytest.raises(simplews.ProtocolError):
            stuck.recv(timeout=TIMEOUT)
    finally:
        peer.close()
        sender.join(TIMEOUT)


def test_a_ping_a_reader_left_is_parsed_while_a_writer_is_blocked(raw_server, connect):
    # Combined: the reader took a ping in behind the message it returned, the application
    # stops reading and a writer blocks (the peer does not read). The keepalive thread does
    # not read a TLS socket while a writer is busy, but it parses what the reader left: the
    # pong waits for the writer and goes out right behind its message.
    from simplews import keepalive
    ws, peer = raw_server.pair(connect, ping_interval=None)
    sender = threading.Thread(target=ws.send, args=(BIG,))
    try:
        with keepalive._lock:
            assert wait_for(keepalive_thread_held_at_its_lock)
            peer.send(b"".join(peer.protocol.send_data(Opcode.TEXT, b"m"))
                      + peer.protocol.send_ping(b"behind"))
            assert ws.recv(timeout=TIMEOUT) == "m"  # the ping is in its buffer now
            sender.start()
            wait_for_data(peer.sock)  # the writer is sending, and will block
        assert wait_for(lambda: ws.protocol.replies)  # parsed: its pong waits for the writer
        assert peer.next_event() == Message(BIG)
        assert peer.next_event() == Pong(b"behind", (b"behind",))  # nobody called recv()
        sender.join(TIMEOUT)
        assert not sender.is_alive()
    finally:
        peer.close()
        sender.join(TIMEOUT)


def test_vanished_client_is_closed_with_1011(start_server):
    handlers = Handlers()
    handlers.expect("/gone")
    server = start_server(handlers, ping_interval=0.1, ping_timeout=0.2)
    peer = raw_client(server.uri + "gone")  # a client that vanished: never answers
    try:
        assert handlers.done["/gone"].wait(TIMEOUT)
        assert handlers.ended["/gone"].code == 1011
    finally:
        peer.close()


def test_vanished_server_is_closed_with_1011(raw_server, connect):
    ws, peer = raw_server.pair(connect, ping_interval=0.1, ping_timeout=0.2, close_timeout=0.5)
    with pytest.raises(simplews.ConnectionClosedError) as info:
        ws.recv(timeout=TIMEOUT)  # the peer never reads: no pong
    assert info.value.code == 1011


def test_reset_in_the_middle_of_a_frame(start_server, connect):
    handlers = Handlers()
    handlers.expect("/rst")
    handlers.expect("/next")
    server = start_server(handlers)
    peer = raw_client(server.uri + "rst")
    assert handlers.started["/rst"].wait(TIMEOUT)
    frame = b"".join(bytes(b) for b in peer.protocol.send_data(Opcode.BINARY, bytes(1000)))
    peer.send(frame[:500])
    # SO_LINGER 0: close() sends RST
    raw = peer.sock
    socket.socket.setsockopt(raw, socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    assert handlers.done["/rst"].wait(TIMEOUT)
    assert handlers.ended["/rst"].code == 1006
    # the server still serves
    ws = connect(server.uri + "next")
    ws.send("still here")
    ws.close()
    assert handlers.done["/next"].wait(TIMEOUT)


def test_slow_reader_holds_bounded_memory_and_loses_nothing(start_server):
    # The handler does not read while the client pushes 64 KiB messages: the keepalive
    # thread queues max_queue of them, then stops reading (TCP back-pressure). Memory
    # stays bounded; once the handler reads, every message the client sent arrives.
    max_size, max_queue = 64 << 10, 4
    release = threading.Event()
    received: List[int] = []

    def handler(ws):
        release.wait(TIMEOUT)
        for message in ws:
            received.append(message[0])

    server = start_server(handler, max_size=max_size, max_queue=max_queue, ping_interval=None)
    peer = raw_client(server.uri)
    peer.sock.settimeout(0.5)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        sent = 0
        try:
            while sent < 1000:  # ~64 MiB at most; TCP stops it far sooner
                frame = b"".join(bytes(b) for b in peer.protocol.send_data(
                    Opcode.BINARY, bytes([sent % 256]) * max_size))
                peer.sock.sendall(frame)
                sent += 1
        except socket.timeout:
            pass  # the last message went out in part: it is not counted
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert sent > max_queue + 2  # the kernel's buffers took more than the queue holds
    # queued messages + the one being parsed + read buffers, with room for the test's own
    assert grown < (max_queue + 2) * max_size + (4 << 20), grown
    release.set()
    peer.sock.settimeout(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while len(received) < sent - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    # the message cut by the timeout may or may not have been completed
    assert received[:sent - 1] == [i % 256 for i in range(sent - 1)]
    peer.close()


def test_shutdown_with_many_handlers_blocked_in_send_takes_less_than_close_timeout(start_server):
    # Issue 12, item 3: it took 0.1 s per blocked handler, one after another.
    count, close_timeout = 40, scaled(2.0)
    handlers = Handlers()
    paths = [f"/stalled{i}" for i in range(count)]
    for path in paths:
        handlers.expect(path)
    server = start_server(handlers, ping_interval=None, close_timeout=close_timeout)
    peers = []
    try:
        for path in paths:
            peers.append(raw_client(server.uri + path[1:]))
        for path, peer in zip(paths, peers):
            assert handlers.started[path].wait(TIMEOUT)
            wait_for_data(peer.sock)
        started = time.monotonic()
        server.shutdown()
        took = time.monotonic() - started
        assert all(handlers.done[path].is_set() for path in paths)
        assert took < close_timeout, f"shutdown took {took:.2f} s"
    finally:
        for peer in peers:
            peer.close()


def test_slow_reader_and_shutdown(start_server):
    # A client that stopped reading while the handler streams to it, and a server that
    # shuts down meanwhile: the shutdown still ends within close_timeout, and a healthy
    # client next to it gets its 1001.
    handlers = Handlers()
    handlers.expect("/stalled")
    handlers.expect("/healthy")
    close_timeout = scaled(1.0)
    server = start_server(handlers, ping_interval=None, close_timeout=close_timeout)
    stalled = raw_client(server.uri + "stalled")
    healthy = raw_client(server.uri + "healthy")
    try:
        assert handlers.started["/stalled"].wait(TIMEOUT)
        assert handlers.started["/healthy"].wait(TIMEOUT)
        wait_for_data(stalled.sock)
        events: List[object] = []
        reader = threading.Thread(target=lambda: events.append(healthy.next_event()))
        reader.start()  # reads the close and answers it
        started = time.monotonic()
        server.shutdown()
        assert time.monotonic() - started < close_timeout
        reader.join(TIMEOUT)
        assert events == [Close(1001, "server shutting down")]
        assert handlers.done["/healthy"].is_set() and "/healthy" not in handlers.ended  # a clean close
    finally:
        stalled.close()
        healthy.close()


@pytest.mark.parametrize("side", ["client", "server"])
def test_senders_racing_a_clean_close_see_connection_closed_ok(start_server, connect, side):
    # Issue 12, item 5: 8 threads sending while another thread closes with 1000: every
    # sender must end with ConnectionClosedOK (the closing handshake was clean), though
    # before the fix a quarter to a third of the runs gave ConnectionClosedError(1006).
    rounds, threads = 20, 8
    outcomes: List[BaseException] = []
    lock = threading.Lock()

    def race(ws):
        sent = [0]
        some_sent = threading.Event()

        def hammer():
            try:
                while True:
                    ws.send("x" * 100)
                    with lock:
                        sent[0] += 1
                        if sent[0] >= 20 * threads:
                            some_sent.set()
            except BaseException as exc:  # noqa: BLE001 (what is raised is what is checked)
                with lock:
                    outcomes.append(exc)
                some_sent.set()

        senders = [threading.Thread(target=hammer) for _ in range(threads)]
        for sender in senders:
            sender.start()
        assert some_sent.wait(TIMEOUT)
        ws.close()
        for sender in senders:
            sender.join(TIMEOUT)
        assert ws.close_code == 1000

    def drain(ws):
        for _ in ws:
            pass

    if side == "client":
        server = start_server(drain, ping_interval=None)
        for _ in range(rounds):
            race(connect(server.uri, ping_interval=None))
    else:
        done = threading.Semaphore(0)

        def handler(ws):
            try:
                race(ws)
            finally:
                done.release()

        server = start_server(handler, ping_interval=None)
        for _ in range(rounds):
            ws = connect(server.uri, ping_interval=None)
            drain(ws)  # until the server's clean close
            assert done.acquire(timeout=TIMEOUT)
            assert ws.close_code == 1000
    assert len(outcomes) == rounds * threads
    wrong = [exc for exc in outcomes if type(exc) is not simplews.ConnectionClosedOK]
    assert not wrong, f"{len(wrong)} of {len(outcomes)}: {wrong[:3]}"


def test_a_large_send_masked_in_pieces_ends_cleanly_when_the_server_fails_it(start_server, connect):
    # The server fails the message at its header (1009) and closes TCP while the client
    # is still masking and sending pieces (MASK_PIECE): the send (or the next recv) raises a
    # closed connection, nothing hangs, and the server serves the next client.
    server = start_server(max_size=2 * MASK_PIECE)
    ws = connect(server, max_size=None, compression=None)
    with pytest.raises(simplews.ConnectionClosedError) as info:
        ws.send(bytes(16 * 2**20))  # more than the sockets' buffers hold: many pieces
        ws.recv(timeout=TIMEOUT)
    assert info.value.code in (1006, 1009) and ws.close_code in (1006, 1009), info.value
    assert wait_for(lambda: ws.state is simplews.State.CLOSED)
    with connect(server, compression=None) as again:
        again.send(bytes(MASK_PIECE + 4))  # allowed: two pieces
        assert again.recv(timeout=TIMEOUT) == bytes(MASK_PIECE + 4)


def _send_in_pieces(sock: socket.socket, data: bytes, rng: random.Random) -> None:
    view = memoryview(data)
    while view:
        size = rng.choice((1, 3, 5, 1000, 65536, 300_000))
        sock.sendall(view[:size])
        view = view[size:]


@pytest.mark.parametrize("seed", range(2))
def test_large_frames_split_anywhere_then_a_reset_in_one_harm_no_other(start_server, seed):
    # Large frames (read straight into their message's bytes and unmasked as each read
    # arrives) written in pieces of any size, pings between them, to a handler that now
    # and then leaves the reading to the keepalive thread; meanwhile another connection
    # resets TCP in the middle of its own large frame. Every echo comes back whole.
    rng = random.Random(seed)
    ended: Dict[str, BaseException] = {}
    done = {path: threading.Event() for path in ("/echo", "/reset")}

    def handler(ws: simplews.Connection) -> None:
        try:
            for count, message in enumerate(ws):
                if count % 2:
                    time.sleep(0.002)  # a slow handler: the keepalive thread reads ahead
                ws.send(message)
        except simplews.WebSocketError as exc:
            ended[ws.request.path] = exc
        finally:
            done[ws.request.path].set()

    server = start_server(handler, max_size=None)
    peer, doomed = raw_client(server.uri + "echo"), raw_client(server.uri + "reset")
    for sock in (peer.sock, doomed.sock):
        socket.socket.setsockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    half = b"".join(bytes(b) for b in doomed.protocol.send_data(Opcode.BINARY, bytes(3 << 20)))
    sizes = [DIRECT_MIN - 1, DIRECT_MIN, DIRECT_MIN + 3, 1 << 20, 3 << 20]
    for index, size in enumerate(sizes * 2):
        payload = rng.randbytes(size)
        wire = b"".join(bytes(b) for b in peer.protocol.send_data(Opcode.BINARY, payload))
        if rng.random() < 0.5:
            wire += peer.protocol.send_ping(b"%d" % index)
        _send_in_pieces(peer.sock, wire, rng)
        if index == 3:  # the other connection: half a large frame, then a reset
            doomed.send(half[:len(half) // 2])
            linger = struct.pack("ii", 1, 0)  # close() sends RST
            socket.socket.setsockopt(doomed.sock, socket.SOL_SOCKET, socket.SO_LINGER, linger)
            doomed.close()
        event = peer.next_event()
        while isinstance(event, Pong):
            event = peer.next_event()
        assert event == Message(payload), (seed, index, size)
    assert done["/reset"].wait(TIMEOUT)
    assert isinstance(ended["/reset"], simplews.ConnectionClosedError) and ended["/reset"].code == 1006
    peer.send(peer.protocol.send_close(1000))
    assert isinstance(peer.next_event(), Close)
    assert done["/echo"].wait(TIMEOUT) and "/echo" not in ended
    peer.close()


def _recording(ended: Dict[str, BaseException], name: str, call: Callable[[], object]) -> threading.Thread:
    """A thread that runs ``call``; what it raises goes to ``ended[name]``."""
    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 (whatever it is, the test looks at it)
            ended[name] = exc
    return threading.Thread(target=run)


def test_abort_ends_a_reader_inside_a_large_frame_and_a_blocked_sender(connect, raw_server):
    # Combined: one thread is blocked reading a large frame straight into its message's
    # buffer, another is blocked sending to a peer that does not read; a third aborts.
    # Both end at once with the abort's ConnectionClosedError; nothing else is raised.
    ws, peer = raw_server.pair(connect, max_size=None, ping_interval=None, compression=None)
    frame = b"".join(bytes(b) for b in peer.protocol.send_data(Opcode.BINARY, bytes(3 << 20)))
    peer.send(frame[:1 << 20])
    ended: Dict[str, BaseException] = {}
    threads = [_recording(ended, "reader", ws.recv), _recording(ended, "sender", lambda: ws.send(BIG))]
    for thread in threads:
        thread.start()
    assert wait_for(lambda: ws.protocol.direct is not None)  # the reader is in the frame
    assert wait_for(lambda: not select.select([], [ws.socket], [], 0)[1])  # the sender: blocked
    started = time.monotonic()
    ws.abort(1001, "going away")
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert time.monotonic() - started < TIMEOUT
    for name in ("reader", "sender"):
        exc = ended[name]
        assert type(exc) is simplews.ConnectionClosedError, (name, exc)
        assert (exc.code, exc.reason) == (1001, "going away"), (name, exc)
    assert ws.state is simplews.State.CLOSED and ws.close_code == 1001
    peer.close()


def test_abort_ends_a_blocked_fragmented_send_and_the_sends_queued_behind_it(connect, raw_server):
    # Combined: a fragmented message is blocked in its first frame (the peer does not
    # read); a one-frame send() waits behind it (for the writer lock, then for the message
    # lock) and so does a second fragmented message. An abort from a fourth thread ends
    # all three at once with its ConnectionClosedError.
    ws, peer = raw_server.pair(connect, ping_interval=None, compression=None)
    ended: Dict[str, BaseException] = {}
    first = _recording(ended, "fragmented", lambda: ws.send([BIG, b"end"]))
    first.start()
    assert wait_for(lambda: not select.select([], [ws.socket], [], 0)[1])  # blocked in sendall
    one_frame = _recording(ended, "one frame", lambda: ws.send("one"))
    second = _recording(ended, "second", lambda: ws.send([b"a", b"b"]))
    for thread in (one_frame, second):
        thread.start()
    assert wait_for(lambda: waiting_at(one_frame, simplews.Connection.send, "self._write_lock.acquire()")
                    and waiting_at(second, simplews.Connection._message_turn.__wrapped__,
                                   "with self._message_lock:"))
    started = time.monotonic()
    ws.abort(1001, "going away")
    for thread in (first, one_frame, second):
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert time.monotonic() - started < TIMEOUT
    for name in ("fragmented", "one frame", "second"):
        exc = ended[name]
        assert type(exc) is simplews.ConnectionClosedError, (name, exc)
        assert (exc.code, exc.reason) == (1001, "going away"), (name, exc)
    peer.close()
