"""The threaded Connection over real loopback sockets, plain and TLS (issue 3)."""
import array
import errno
import gc
import hashlib
import random
import select
import socket
import ssl
import struct
import sys
import threading
import time
import tracemalloc
import weakref

import pytest

import simplews
from simplews._io import LONGEST_WAIT
from simplews.extensions import DeflateConfig
from simplews.frames import Opcode
from simplews.handshake import ClientHandshake
from simplews.http11 import parse_response
from simplews.protocol import Close, Fragment, Message, Ping, Pong, Protocol, Side, State
from simplews.uri import parse_uri

from support import client_ssl_context, open_fds, scaled, unread_bytes, wait_for, waiting_at
from conftest import TIMEOUT, Servers, raw_client
from pair import deflate_bomb

SIZES = [0, 1, 125, 126, 65535, 65536, 16 * 1024 * 1024]


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_echo_sizes(start_server, connect, compression):
    server = start_server(max_size=None, compression=compression)
    with connect(server, max_size=None, compression=compression) as ws:
        assert (ws.protocol.deflate is not None) == (compression is not None)
        for size in SIZES:
            text = ("é" * size)[: size // 2] if size else ""
            binary = bytes(range(256)) * (size // 256) + bytes(size % 256)
            ws.send(binary)
            assert ws.recv(timeout=TIMEOUT) == binary
            ws.send(text)
            assert ws.recv(timeout=TIMEOUT) == text


def test_fragmented_send_and_recv_streaming(start_server, connect, raw_server):
    server = start_server()
    with connect(server) as ws:
        ws.send(["Hel", "lo ", "wörld"])
        assert ws.recv(timeout=TIMEOUT) == "Hello wörld"
        ws.send([b"\x00", bytearray(b"\x01"), memoryview(b"\x02")])
        assert ws.recv(timeout=TIMEOUT) == b"\x00\x01\x02"
        with pytest.raises(TypeError):
            ws.send(["text", b"bytes"])  # mixed: the connection fails
    # recv_streaming: each piece as it arrives (the keepalive thread may read ahead
    # while nobody reads, which must not merge pieces already handed out)
    ws, peer = raw_server.pair(connect)
    pieces = ws.recv_streaming(timeout=TIMEOUT)
    peer.send_frame(Opcode.TEXT, b"ab", fin=False)
    assert next(pieces) == "ab"
    peer.send_frame(Opcode.CONT, b"cd", fin=False)
    assert next(pieces) == "cd"
    peer.send_frame(Opcode.CONT, b"ef")
    assert list(pieces) == ["ef"]
    peer.send_frame(Opcode.BINARY, b"whole")
    assert list(ws.recv_streaming(timeout=TIMEOUT)) == [b"whole"]
    # a message that arrived whole before anyone asked comes out whole
    peer.send_frame(Opcode.TEXT, b"gh", fin=False)
    peer.send_frame(Opcode.CONT, b"ij")
    assert "".join(ws.recv_streaming(timeout=TIMEOUT)) == "ghij"
    # the wire shape of a fragmented send: one frame per item
    ws.send([b"1", b"2", b"3"])
    peer_events = [peer.next_event(streaming=True) for _ in range(3)]
    assert peer_events == [Fragment(b"1", False), Fragment(b"2", False), Fragment(b"3", True)]


def test_send_refuses_none_sends_nothing_for_nothing_and_frames_wide_items_by_bytes(
        connect, raw_server):
    """None first in an iterable is a TypeError (it once ended it: nothing sent, no error);
    an empty iterable sends no message; neither spoils the connection."""
    ws, peer = raw_server.pair(connect)
    with pytest.raises(TypeError):
        ws.send([None, b"x"])
    ws.send([])
    ws.send(iter(()))
    ws.send(b"next")
    assert peer.next_event() == Message(b"next")
    assert ws.state is State.OPEN
    wide = array.array("I", range(100))  # framed by its bytes, not its items
    ws.send(memoryview(wide))
    ws.send([memoryview(wide), b"!"])
    assert [peer.next_event(), peer.next_event()] == [Message(wide.tobytes()), Message(wide.tobytes() + b"!")]


@pytest.mark.parametrize("timeout", [None, TIMEOUT])
def test_recv_in_a_streamed_message_raises_and_loses_nothing(connect, raw_server, timeout):
    """recv() while recv_streaming() is in a message: ConcurrencyError, and the piece it
    met stays for recv_streaming() (it was dropped: the message came out without it)."""
    ws, peer = raw_server.pair(connect)
    pieces = ws.recv_streaming(timeout=TIMEOUT)
    peer.send_frame(Opcode.BINARY, b"A", fin=False)
    assert next(pieces) == b"A"
    for piece in (b"B", b"C"):
        peer.send_frame(Opcode.CONT, piece, fin=False)
        with pytest.raises(simplews.ConcurrencyError):
            ws.recv(timeout=timeout)
    peer.send_frame(Opcode.CONT, b"D")
    assert b"".join(pieces) == b"BCD"
    peer.send_frame(Opcode.TEXT, b"next")
    assert ws.recv(timeout=TIMEOUT) == "next"


def test_recv_in_another_thread_during_a_streamed_message_reorders_nothing(connect, raw_server):
    """While one thread streams a message whose pieces the keepalive thread queued, another
    calls recv() over and over: it gets ConcurrencyError and the stream comes out in order.
    (recv() popped a piece without the lock and put it back: the streaming thread could
    take the next one in between: pieces reordered, or one moved into the next message.)"""
    ws, peer = raw_server.pair(connect, ping_interval=None)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # thread switches everywhere
    try:
        for round_ in range(10):
            pieces = [b"%d:%d," % (round_, k) for k in range(8)]
            stream = ws.recv_streaming(timeout=TIMEOUT)
            peer.send_frame(Opcode.BINARY, pieces[0], fin=False)
            got = [next(stream)]
            for k in range(1, 8):
                peer.send_frame(Opcode.CONT, pieces[k], fin=k == 7)
            assert wait_for(lambda: len(ws._queue) == 7)  # (queued by the keepalive thread)
            done, refused, unexpected = threading.Event(), threading.Event(), []

            def meddle(done: threading.Event = done, refused: threading.Event = refused,
                       unexpected: list = unexpected) -> None:
                while not done.is_set():
                    try:
                        ws.recv(timeout=0)
                    except simplews.ConcurrencyError:
                        refused.set()
                    except TimeoutError:
                        pass
                    except Exception as exc:  # noqa: BLE001 (an IndexError of a race, say)
                        unexpected.append(exc)

            thread = threading.Thread(target=meddle)
            thread.start()
            try:
                assert refused.wait(TIMEOUT)  # (the pieces wait: its first recv() is refused)
                got += list(stream)
            finally:
                done.set()
                thread.join(TIMEOUT)
            assert b"".join(got) == b"".join(pieces) and not unexpected
    finally:
        sys.setswitchinterval(previous)


def test_pings_interleave_with_the_fragments_of_a_large_message(start_server, connect, raw_server):
    """While one thread sends 64 MiB as 1024 fragments, another sends 100 pings: the
    peer sees them between the fragments, and the message arrives intact."""
    ws, peer = raw_server.pair(connect, max_size=None)
    fragment = bytes(range(256)) * 256  # 64 KiB
    fragments = [fragment[i % 256:] + fragment[:i % 256] for i in range(1024)]
    started = threading.Event()

    def fragments_source():
        for index, item in enumerate(fragments):
            if index == 1:
                started.set()
            yield item

    sender = threading.Thread(target=ws.send, args=(fragments_source(),))
    sender.start()
    waiters = []

    def send_pings():  # a third thread: this one must keep reading, or both block
        assert started.wait(TIMEOUT)
        waiters.extend(ws.ping(str(i)) for i in range(100))

    pinger = threading.Thread(target=send_pings)
    pinger.start()
    received, order = [], []
    while True:
        event = peer.next_event(streaming=True)
        order.append(type(event).__name__)
        if isinstance(event, Fragment):
            received.append(event.data)
            if event.last:
                break
    sender.join(TIMEOUT)
    pinger.join(TIMEOUT)
    assert not sender.is_alive() and not pinger.is_alive()
    while order.count("Ping") < 100:
        order.append(type(peer.next_event()).__name__)
    assert b"".join(received) == b"".join(fragments)
    first, last = order.index("Fragment"), len(order) - 1 - order[::-1].index("Fragment")
    assert order[first:last].count("Ping") > 0, "no ping went out between the fragments"
    with pytest.raises(TimeoutError):  # reading handles the pongs
        ws.recv(timeout=0.2)
    assert all(w.is_set() for w in waiters)


@pytest.mark.parametrize("mixed", [False, True], ids=["one-frame", "mixed"])
def test_concurrent_senders_never_interleave_frames(start_server, connect, mixed):
    """8 threads each send 1,000 messages at once on one connection: all 8,000 arrive
    intact, each thread's in order. Mixed: half the threads send fragmented messages
    (a one-frame send waits for a fragmented message between its frames)."""
    received = []
    done = threading.Event()

    def collect(ws):
        for message in ws:
            received.append(message)
            if len(received) == 8000:
                done.set()

    server = start_server(collect)
    with connect(server) as ws:  # (compressed: the default)
        def send_many(thread_id):
            for seq in range(1000):
                body = f"{thread_id}:{seq}:" + "x" * (seq % 300)
                message = body + ":" + hashlib.md5(body.encode()).hexdigest()
                ws.send([message[:5], message[5:], ""] if mixed and thread_id % 2 else message)

        threads = [threading.Thread(target=send_many, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT * 3)
        assert done.wait(TIMEOUT * 3)
    last_seq = {}
    for message in received:
        body, digest = message.rsplit(":", 1)
        assert hashlib.md5(body.encode()).hexdigest() == digest
        thread_id, seq = map(int, body.split(":")[:2])
        assert seq == last_seq.get(thread_id, -1) + 1
        last_seq[thread_id] = seq
    assert len(received) == 8000


MESSAGE_TURN = simplews.Connection._message_turn.__wrapped__  # where a sender waits for a message


def test_a_one_frame_send_waits_for_a_fragmented_message_between_its_frames(connect, raw_server):
    """send() of one frame takes only the writer lock: while another thread's fragmented
    message is between two frames, it waits for the message's end (its frame between
    them would be a protocol error); a ping still goes out between the fragments."""
    ws, peer = raw_server.pair(connect)
    late = []

    def pieces():
        yield "first "
        late.append(threading.Thread(target=ws.send, args=("one frame",)))
        late[0].start()  # held: it may only follow the message
        assert wait_for(lambda: waiting_at(late[0], MESSAGE_TURN, "with self._message_lock:"))
        ws.ping(b"between")
        yield "last"

    ws.send(pieces())
    late[0].join(TIMEOUT)
    assert peer.next_event() == Ping(b"between")
    assert peer.next_event() == Message("first last")
    assert peer.next_event() == Message("one frame")


def test_a_send_from_the_iterable_of_a_fragmented_send_raises_concurrency_error(connect, raw_server):
    """It would wait for its own message forever: ConcurrencyError instead, for a
    one-frame and a fragmented send(); the message in progress still ends whole."""
    ws, peer = raw_server.pair(connect)
    raised = []

    def pieces():
        yield "first "
        for inner in ("one frame", ["frag", "mented"]):
            with pytest.raises(simplews.ConcurrencyError, match="iterable of a fragmented send"):
                ws.send(inner)
            raised.append(inner)
        yield "last"

    done = threading.Thread(target=ws.send, args=(pieces(),))
    done.start()
    done.join(TIMEOUT)
    assert not done.is_alive() and len(raised) == 2
    assert peer.next_event() == Message("first last")
    ws.send("after")
    assert peer.next_event() == Message("after")


def test_recv_timeout_leaves_the_connection_usable(connect, raw_server):
    ws, peer = raw_server.pair(connect)
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    frame = b"".join(peer.protocol.send_data(Opcode.TEXT, b"half and half"))
    peer.send(frame[:7])  # half a frame is on its way when the timeout fires
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    peer.send(frame[7:])
    assert ws.recv(timeout=TIMEOUT) == "half and half"
    ws.send("still usable")
    assert peer.next_event() == Message("still usable")


def test_a_large_frame_read_straight_in_across_timeouts_then_a_ping(connect, raw_server):
    """A large plain frame is read straight into its buffer (Protocol.direct): reads
    that time out in the middle of it, and a ping right behind it, lose nothing."""
    ws, peer = raw_server.pair(connect, max_size=None)
    payload = random.Random(3).randbytes(3 << 20)
    frame = b"".join(peer.protocol.send_data(Opcode.BINARY, payload))
    peer.send(frame[:1 << 20])
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    peer.send(frame[1 << 20:])
    peer.send(peer.protocol.send_ping(b"behind"))
    assert ws.recv(timeout=TIMEOUT) == payload
    assert peer.next_event() == Pong(b"behind", (b"behind",))
    ws.send(payload[:10])
    assert peer.next_event() == Message(payload[:10])


def test_the_keepalive_thread_reads_a_large_frame_to_answer_the_ping_behind_it(start_server, connect):
    """Nobody reads on the server: its keepalive thread reads the large frame (straight
    into its buffer, MSG_DONTWAIT or TLS reads) to reach the ping behind it and pong."""
    go, received = threading.Event(), []

    def handler(ws):
        assert go.wait(TIMEOUT)
        received.append(ws.recv(timeout=TIMEOUT))
        ws.send(received[-1])

    server = start_server(handler, max_size=None)
    payload = random.Random(4).randbytes(3 << 20)
    with connect(server, max_size=None, compression=None) as ws:
        ws.send(payload)
        assert ws.ping(b"behind").wait(TIMEOUT)  # answered while the handler waits
        go.set()
        assert ws.recv(timeout=TIMEOUT) == payload
    assert received == [payload]


class MemoryTLSClient:
    """A TLS client over a plain socket through memory BIOs: it can put half a TLS
    record on the wire, which an ssl.SSLSocket never does."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = client_ssl_context().wrap_bio(self.incoming, self.outgoing,
                                                 server_hostname="127.0.0.1")
        self._retry(self.tls.do_handshake)

    def _retry(self, operation):
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                assert data, "the server closed the connection"
                self.incoming.write(data)
                continue
            self.sock.sendall(self.outgoing.read())
            return result

    def record(self, data: bytes) -> bytes:
        """``data`` encrypted, as the bytes to put on the wire."""
        self.tls.write(data)
        return self.outgoing.read()

    def read(self) -> bytes:
        return self._retry(lambda: self.tls.read(65536))

    def open_handshake(self, uri: str) -> None:
        handshake = ClientHandshake(parse_uri(uri))
        self.tls.write(handshake.request.serialize())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.read()
        handshake.check_response(parse_response(head)[0])


def test_the_keepalive_thread_takes_in_half_a_tls_record():
    """Nobody reads on the server and half a TLS record waits in its kernel: the
    keepalive thread takes it in without waiting for the rest (a peek-and-wait left it
    there, and a peer may not send the rest before the TCP window opens), then answers
    the ping behind the record."""
    handlers, go = [], threading.Event()
    servers = Servers("wss")
    server = servers(lambda ws: handlers.append(ws) or go.wait(TIMEOUT), compression=None)
    client = MemoryTLSClient(server.port)
    try:
        client.open_handshake(server.uri)
        assert wait_for(lambda: handlers)
        protocol = Protocol(Side.CLIENT)
        record = client.record(b"".join(protocol.send_data(Opcode.BINARY, b"m" * 4000)))
        client.sock.sendall(record[:2000])
        unread = handlers[0].socket
        assert wait_for(lambda: unread_bytes(unread) == 0), f"{unread_bytes(unread)} bytes left in the kernel"
        client.sock.sendall(record[2000:] + client.record(protocol.send_ping(b"behind")))
        while True:
            protocol.receive_data(client.read())
            event = protocol.next_event()
            if event is not None:
                break
        assert event == Pong(b"behind", (b"behind",))
        go.set()
    finally:
        go.set()
        client.sock.close()
        servers.stop()


def test_recv_with_a_timeout_is_not_held_by_half_a_tls_record():
    """A handler in recv(timeout) and half a TLS record arrives: the TimeoutError comes at
    the deadline (a blocking read waited for the rest of the record, without a bound
    while no ping was due), the connection stays usable, and the message arrives whole
    once the rest of its record does."""
    outcomes, timed_out = [], threading.Event()

    def handler(ws):
        try:
            ws.recv(timeout=scaled(1.0))
        except TimeoutError:
            outcomes.append("timeout")
        finally:
            timed_out.set()
        outcomes.append(ws.recv(timeout=TIMEOUT))

    servers = Servers("wss")
    server = servers(handler, compression=None, ping_interval=None)
    client = MemoryTLSClient(server.port)
    try:
        client.open_handshake(server.uri)
        assert wait_for(lambda: server.connections)
        ws = next(iter(server.connections))
        assert wait_for(lambda: ws._read_lock.locked())  # the handler is in recv()
        record = client.record(b"".join(Protocol(Side.CLIENT).send_data(Opcode.TEXT, b"whole")))
        client.sock.sendall(record[:3])
        assert timed_out.wait(TIMEOUT) and outcomes == ["timeout"]
        client.sock.sendall(record[3:])
        assert wait_for(lambda: len(outcomes) == 2) and outcomes[1] == "whole"
    finally:
        client.sock.close()
        servers.stop()


def test_close_started_by_the_client(start_server, connect):
    closed = []

    def handler(ws):
        closed.append(ws)
        with pytest.raises(simplews.ConnectionClosedError):  # 4000 is not a normal close
            ws.recv()

    server = start_server(handler)
    ws = connect(server)
    ws.close(4000, "client done")
    assert (ws.close_code, ws.close_reason) == (4000, "")  # the server echoes the code
    assert ws.state is simplews.State.CLOSED
    ws.close()  # harmless twice
    with pytest.raises(simplews.ConnectionClosed):
        ws.send("too late")
    server.shutdown()
    server_ws = closed[0]
    assert (server_ws.close_code, server_ws.close_reason) == (4000, "client done")


def test_close_started_by_the_server_wakes_a_blocked_recv(start_server, connect):
    server = start_server(lambda ws: ws.close(1000, "bye"))
    ws = connect(server)
    outcome = []

    def blocked_recv():
        try:
            ws.recv()
        except Exception as exc:  # noqa: BLE001
            outcome.append(exc)

    reader = threading.Thread(target=blocked_recv)
    reader.start()
    reader.join(TIMEOUT)
    assert isinstance(outcome[0], simplews.ConnectionClosedOK)
    assert (ws.close_code, ws.close_reason) == (1000, "bye")
    with pytest.raises(simplews.ConnectionClosedOK):
        ws.recv()


def test_close_from_another_thread_wakes_a_blocked_recv(start_server, connect):
    server = start_server()
    ws = connect(server)
    outcome = []
    reader = threading.Thread(
        target=lambda: outcome.append(pytest.raises(simplews.ConnectionClosedOK, ws.recv)))
    reader.start()
    while not ws._read_lock.locked():
        time.sleep(0.001)
    ws.close()
    reader.join(TIMEOUT)
    assert not reader.is_alive() and outcome
    assert ws.close_code == 1000


def test_server_closes_tcp_first(start_server, scheme):
    """RFC 6455 §7.1.1: after the closing handshake the server closes TCP, the client waits."""
    server = start_server(lambda ws: None)  # returns at once: close 1000
    peer = raw_client(server.uri)
    assert peer.next_event() == Close(1000, "")
    assert peer.at_eof(), "the server did not close the TCP connection"
    peer.close()


def test_server_closes_at_once_without_waiting_for_the_clients_fin(start_server, scheme):
    """RFC 6455 §7.1.1: "The server MUST close the underlying TCP connection immediately"
    after the closing handshake; its thread is free although the client keeps TCP open."""
    finished = threading.Event()
    server_side = []

    def handler(ws):
        server_side.append(ws)
        for _ in ws:
            pass

    def serve_connection(sock):
        serve(sock)
        finished.set()

    server = start_server(handler, close_timeout=60)  # the old wait for the FIN: 60 s
    serve = server._serve_connection
    server._workers._serve = serve_connection
    peer = raw_client(server.uri)
    peer.send(peer.protocol.send_close(1000))
    # Bytes after the close (a TLS peer may send an alert): read and dropped, they do
    # not hold the close back (over wss they come as a record of their own, which the
    # server's TLS layer leaves in the socket when it reads the close).
    peer.send(b"after the close")
    assert peer.next_event() == Close(1000, "")
    assert peer.at_eof()
    assert finished.wait(TIMEOUT), "the server still waits for the client to close TCP"
    assert server_side[0].state is simplews.State.CLOSED and server_side[0].close_code == 1000
    peer.close()


def test_close_echo_waits_for_a_full_send_buffer(start_server, scheme):
    """The peer's close arrives while the server's send buffer is full and nobody reads:
    the keepalive thread must not shut TCP down before the rest of the message and the
    echo of the close are out (RFC 6455 §5.5.1, §7.1.1)."""
    size = 8 << 20
    opened, done = [], threading.Event()

    def handler(ws):
        opened.append(ws)
        try:
            ws.send(b"x" * size)  # blocks: the client does not read yet
        finally:
            done.set()

    server = start_server(handler, compression=None)
    peer = raw_client(server.uri)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not opened or _writable(opened[0].socket):  # until the buffer is full
            assert time.monotonic() < deadline, "the server's send buffer never filled"
            time.sleep(0.005)
        peer.send(peer.protocol.send_close(1000))
        for ws in opened:  # the keepalive thread reads the close while the buffer is full
            deadline = time.monotonic() + TIMEOUT
            while ws.protocol.close_rcvd is None:
                assert time.monotonic() < deadline, "the close was not read"
                time.sleep(0.005)
        event = peer.next_event()
        assert isinstance(event, Message) and len(event.data) == size
        assert peer.next_event() == Close(1000, "")
        assert peer.at_eof()
        assert done.wait(TIMEOUT)
    finally:
        peer.close()


def _writable(sock) -> bool:
    return bool(select.select([], [sock], [], 0)[1])


def test_a_writer_sends_the_close_echo_the_keepalive_thread_had_to_leave(start_server, connect):
    """The keepalive thread reads a close while the handler is writing: it cannot take
    the writer lock, so the echo waits; the writer sends it as it lets go of the lock,
    not the keepalive thread at its next tick."""
    left_for_the_writer = []
    handler_done = threading.Event()

    def handler(ws):
        ws._write_lock.acquire()  # as if in the middle of a frame
        deadline = time.monotonic() + TIMEOUT
        while ws.protocol.close_rcvd is None and time.monotonic() < deadline:
            time.sleep(0.005)  # the keepalive thread reads it (nobody else reads)
        left_for_the_writer.append(bool(ws.protocol.replies))
        ws._release_writer()
        left_for_the_writer.append(bool(ws.protocol.replies))
        handler_done.set()

    server = start_server(handler)
    ws = connect(server)
    ws.close()  # returns with the echo, maybe before the handler's last line
    assert ws.close_code == 1000
    assert handler_done.wait(TIMEOUT)
    assert left_for_the_writer == [True, False]


def test_client_waits_for_the_server_to_close_tcp(connect, raw_server):
    ws, peer = raw_server.pair(connect)
    closer = threading.Thread(target=ws.close)
    closer.start()
    assert peer.next_event() == Close(1000, "")  # our reply goes out with next_event
    assert not peer.at_eof(timeout=0.1), "the client closed TCP before the server"
    peer.close()
    closer.join(TIMEOUT)
    assert ws.close_code == 1000 and ws.state is simplews.State.CLOSED


def test_message_over_max_size_closes_1009(start_server, connect):
    server = start_server(max_size=None)
    with connect(server, max_size=1000) as ws:
        ws.send(b"x" * 1001)
        with pytest.raises(simplews.PayloadTooBig):
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 1009
        with pytest.raises(simplews.ConnectionClosedError):
            ws.recv()


def test_compressed_bomb_refused_with_bounded_memory(connect, raw_server):
    """A compressed message that would inflate to 1 GiB: 1009 for the peer,
    PayloadTooBig for the caller, and the test process stays far below 1 GiB."""
    ws, peer = raw_server.pair(connect, compression=DeflateConfig(), close_timeout=0.2)
    bomb = deflate_bomb(1 << 30)
    header = bytes([0xC2, 0x7F]) + len(bomb).to_bytes(8, "big")
    tracemalloc.start()
    try:
        peer.send(header + bomb)
        with pytest.raises(simplews.PayloadTooBig):
            ws.recv(timeout=TIMEOUT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak >> 20} MiB while refusing the bomb"
    event = peer.next_event()
    assert isinstance(event, Close) and event.code == 1009


def test_protocol_error_closes_1002_and_raises(connect, raw_server):
    ws, peer = raw_server.pair(connect, close_timeout=0.2)
    peer.send(bytes([0x83, 0x00]))  # reserved opcode
    with pytest.raises(simplews.ProtocolError) as info:
        ws.recv(timeout=TIMEOUT)
    assert info.value.close_code == 1002
    assert peer.next_event() == Close(1002, "reserved data opcode 0x3")
    peer.close()


def test_invalid_utf8_closes_1007(start_server, scheme):
    server = start_server()
    peer = raw_client(server.uri)
    peer.send_frame(Opcode.TEXT, b"ok\xff")
    event = peer.next_event()
    assert isinstance(event, Close) and event.code == 1007
    peer.close()


def test_iteration_ends_on_normal_close(start_server, connect):
    def three_then_close(ws):
        for i in range(3):
            ws.send(str(i))

    server = start_server(three_then_close)
    ws = connect(server)
    assert list(ws) == ["0", "1", "2"]


def test_ipv6_loopback(start_server, connect):
    server = start_server(host="::1")
    assert server.uri.startswith(("ws://[::1]:", "wss://[::1]:"))
    with connect(server) as ws:
        ws.send("over IPv6")
        assert ws.recv(timeout=TIMEOUT) == "over IPv6"
        assert ws.remote_address[0] == "::1"


def test_no_leaks_after_500_cycles(start_server, connect, scheme):
    server = start_server()
    cycles = 500 if scheme == "ws" else 100

    def cycle():
        with simplews.connect(server.uri, ssl=_ssl(scheme), close_timeout=2) as ws:
            ws.send("ping")
            assert ws.recv(timeout=TIMEOUT) == "ping"

    cycle()  # warm up lazily created objects
    threads, fds = threading.active_count(), open_fds()
    for _ in range(cycles):
        cycle()
    deadline = time.monotonic() + TIMEOUT
    while (threading.active_count() > threads or open_fds() > fds) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= threads and open_fds() <= fds


def test_closed_connections_are_freed_without_the_garbage_collector(start_server, scheme):
    """No reference cycle keeps a closed connection alive on either side (a closed
    connection used to raise one stored exception, whose traceback's frames held it)."""
    server_side = []

    def handler(ws):
        server_side.append(weakref.ref(ws))
        for message in ws:  # ends with the ConnectionClosedOK that recv() raises
            ws.send(message)

    server = start_server(handler)
    gc.collect()
    gc.disable()
    try:
        ws = simplews.connect(server.uri, ssl=_ssl(scheme), close_timeout=2)
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
        ws.close()
        with pytest.raises(simplews.ConnectionClosedOK):
            ws.recv()  # raised again, from a closed connection
        client_side = weakref.ref(ws)
        del ws
        deadline = time.monotonic() + TIMEOUT
        # the keepalive thread lets go of its references at its next tick
        while (client_side() is not None or not server_side or server_side[0]() is not None) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client_side() is None and server_side[0]() is None
    finally:
        gc.enable()


def _ssl(scheme):
    from conftest import client_ssl_context
    return client_ssl_context() if scheme == "wss" else None


@pytest.mark.parametrize("error", [RuntimeError, KeyError, TypeError])
def test_an_iterable_failing_after_the_first_fragment_fails_the_connection_with_1011(
        connect, raw_server, error):
    # The peer must not take our next message as the continuation of the cut one.
    ws, peer = raw_server.pair(connect, ping_interval=None)

    def fragments():
        yield b"first"
        yield b"second"  # fetched before "first" goes out (the last one has fin=1)
        raise error("the producer broke")

    with pytest.raises(error):
        ws.send(fragments())
    assert peer.next_event(streaming=True) == Fragment(b"first", False)
    assert peer.next_event(streaming=True) == Close(1011, "incomplete fragmented message")
    with pytest.raises(simplews.ConnectionClosedError):
        ws.send("next")


@pytest.mark.parametrize("when", ["before recv", "while recv waits"])
def test_a_network_error_is_the_cause_of_the_connection_closed_error(connect, raw_server, scheme, when):
    # Over TLS, ssl reads a reset as a plain EOF on Python 3.10+ (SSL_read_ex): the TCP
    # state tells it apart. "while recv waits": recv() reads the RST itself (the
    # keepalive thread, which peeks at the raw socket, sees the error as it is).
    ws, peer = raw_server.pair(connect, ping_interval=None)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def reset_once_recv_waits() -> None:
        wait_for(ws._read_lock.locked)  # no public signal
        peer.close()  # RST

    if when == "before recv":
        peer.close()
        resetter = None
    else:
        resetter = threading.Thread(target=reset_once_recv_waits)
        resetter.start()
    with pytest.raises(simplews.ConnectionClosedError) as info:
        ws.recv(timeout=TIMEOUT)
    if resetter is not None:
        resetter.join(TIMEOUT)
    assert info.value.code == 1006
    cause = info.value.__cause__
    assert isinstance(cause, ConnectionResetError) and cause.errno == errno.ECONNRESET, repr(cause)
    with pytest.raises(simplews.ConnectionClosedError) as again:
        ws.send("x")
    assert isinstance(again.value.__cause__, ConnectionResetError)


def test_oversized_pings_and_unsendable_close_codes_raise_value_error(start_server, connect):
    """RFC 6455 §5.5 (control payloads of 125 bytes at most) and §7.4.1 (1004-1006 and
    1015 are never sent): refused before anything goes out; the connection stays usable."""
    ws = connect(start_server())
    for call in (lambda: ws.ping(b"x" * 126), lambda: ws.pong(b"x" * 126),
                 lambda: ws.close(1006), lambda: ws.close(999), lambda: ws.close(70000),
                 lambda: ws.send_close(1015), lambda: ws.abort(1004)):
        with pytest.raises(ValueError):
            call()
    assert ws.ping(b"x" * 125).wait(TIMEOUT)  # the largest ping is fine
    ws.send("still open")
    assert ws.recv(timeout=TIMEOUT) == "still open"
    ws.close(4000, "done")
    assert ws.close_code == 4000


BAD_OPTIONS = [
    ({"max_size": 1e6}, TypeError),  # was: every message a TypeError (the C reader's int)
    ({"max_size": -1}, ValueError),
    ({"max_queue": 0}, ValueError),  # was: nothing read while idle (pongs neither)
    ({"max_queue": 2.5}, TypeError),
    ({"ping_interval": -1}, ValueError),  # was: a ping storm from the keepalive thread
    ({"ping_interval": "5"}, TypeError),
    ({"ping_timeout": float("nan")}, ValueError),
    ({"close_timeout": -1}, ValueError),  # was: every close abnormal (1006)
    ({"open_timeout": True}, TypeError),
    ({"close_timeout": 1e12}, ValueError),  # was: OverflowError from a wait, once connected
    ({"open_timeout": float("inf")}, ValueError),
]


@pytest.mark.parametrize(("options", "error"), BAD_OPTIONS)
def test_a_limit_no_connection_could_keep_is_refused_by_connect_and_serve(options, error):
    name = next(iter(options))
    with socket.socket() as unused:  # bound, not listening: the check comes first
        unused.bind(("127.0.0.1", 0))
        with pytest.raises(error, match=name):
            simplews.connect(f"ws://127.0.0.1:{unused.getsockname()[1]}/", **options)
    with pytest.raises(error, match=name):
        simplews.serve(lambda ws: None, **options)
    with pytest.raises(ValueError, match="max_connections"):
        simplews.serve(lambda ws: None, max_connections=0)


@pytest.mark.parametrize("seconds", [None, LONGEST_WAIT])
def test_no_timeout_and_the_longest_one_are_taken(start_server, connect, seconds):
    """open_timeout=None made every connect() and every server handshake an OverflowError
    (poll() got now + 1e9 s in ms), as did any timeout past 24.8 days; recv() took no
    timeout over it either. Now timeouts go up to LONGEST_WAIT, and recv()'s past it
    mean no limit."""
    options = dict(open_timeout=seconds, close_timeout=seconds, ping_timeout=seconds)
    server = start_server(lambda ws: [ws.send(m) for m in ws], **options)
    with connect(server, **options) as ws:
        ws.send("x")
        assert ws.recv(timeout=1e12) == "x"
        assert ws.ping().wait(TIMEOUT)
        ws.close()
    assert ws.close_code == 1000


def test_close_timeout_none_waits_for_the_peer_however_long(connect, raw_server):
    """close_timeout=None (no limit) gave the keepalive thread a close deadline of now:
    a peer that took a moment to answer our close frame got 1006."""
    ws, peer = raw_server.pair(connect, close_timeout=None)
    closer = threading.Thread(target=ws.close)
    closer.start()
    try:
        closer.join(scaled(0.3))
        assert closer.is_alive()  # still waiting for the peer's close frame
        assert isinstance(peer.next_event(), Close)  # ours; the peer answers it now
    finally:
        peer.close()
        closer.join(TIMEOUT)
    assert ws.close_code == 1000


def test_the_edges_of_the_limits_are_taken(start_server, connect):
    """0 s timeouts and ping_interval=0 (no pings) are limits too; max_size=0: only
    empty messages."""
    server = start_server(lambda ws: [ws.send(m) for m in ws], max_size=0, ping_interval=0)
    with connect(server, ping_interval=0, ping_timeout=0, max_queue=1) as ws:
        ws.send(b"")
        assert ws.recv(timeout=TIMEOUT) == b""
        ws.send(b"x")
        with pytest.raises(simplews.ConnectionClosedError) as info:
            ws.recv(timeout=TIMEOUT)
        assert info.value.code == 1009
