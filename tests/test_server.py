"""serve() and Server over real sockets (issue 3, item 8 and the idle-thread bound)."""
import gc
import logging
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request

import pytest

import simplews
from simplews.protocol import Close

from support import open_fds, running_server, scaled, wait_for
from conftest import TIMEOUT, client_ssl_context, echo, raw_client


def test_handler_that_returns_closes_1000(start_server, connect):
    server = start_server(lambda ws: ws.send("bye"))
    ws = connect(server)
    assert ws.recv(timeout=TIMEOUT) == "bye"
    with pytest.raises(simplews.ConnectionClosedOK):
        ws.recv(timeout=TIMEOUT)
    assert ws.close_code == 1000


def test_a_handlers_thread_is_named_after_its_peer(start_server, connect, scheme):
    """host:port, formatted without a tuple's repr() (which would give the thread a dict)."""
    server = start_server(lambda ws: ws.send(threading.current_thread().name))
    ws = connect(server)
    assert ws.recv(timeout=TIMEOUT) == f"simplews-127.0.0.1:{ws.local_address[1]}"


@pytest.mark.parametrize("error", [RuntimeError("boom in handler"),
                                   simplews.ConnectionClosedError(1011, "boom in handler"),
                                   simplews.ProtocolError("boom in handler")])
def test_handler_that_raises_closes_1011_and_logs(start_server, connect, caplog, error):
    """Also for a ConnectionClosed or ProtocolError of another connection (a relay's
    upstream): it closed this open one with 1000 and logged no traceback."""
    def broken(ws):
        raise error

    server = start_server(broken)
    with caplog.at_level(logging.ERROR, logger="simplews.server"):
        ws = connect(server)
        with pytest.raises(simplews.ConnectionClosedError) as info:
            ws.recv(timeout=TIMEOUT)
        assert info.value.code == 1011
        server.shutdown()
    record = next(r for r in caplog.records if r.name == "simplews.server" and r.exc_info)
    assert "boom in handler" in str(record.exc_info[1])


def _reset_client_request(port: int) -> socket.socket:
    """A plain TCP client that sends a handshake request; the caller resets it."""
    client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close: RST
    client.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    return client


class _LineSeen(logging.Handler):
    """Sets ``seen`` once a record whose message holds ``text`` is emitted."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text, self.seen, self.lines = text, threading.Event(), []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if self.text in self.lines[-1]:
            self.seen.set()


@pytest.mark.parametrize("scheme", ["ws"])  # a plain-TCP client
def test_refusing_a_client_that_reset_is_logged_as_a_refusal(start_server):
    # getpeername() fails once the peer reset TCP: the refusal's log line must not, and
    # names the peer all the same (its address was read as the connection came in, and
    # process_request sees that one too).
    asked, reset, seen = threading.Event(), threading.Event(), []

    def process_request(info, request):
        asked.set()
        assert reset.wait(TIMEOUT)
        seen.append(info.remote_address)
        return simplews.Response(403)

    log, watcher = logging.getLogger("simplews.server"), _LineSeen("refused")
    log.addHandler(watcher)
    level, log.level = log.level, logging.INFO
    try:
        server = start_server(process_request=process_request)
        client = _reset_client_request(server.port)
        client_address = client.getsockname()
        assert asked.wait(TIMEOUT)
        client.close()  # RST (SO_LINGER 0), delivered before close() returns on loopback
        reset.set()
        assert watcher.seen.wait(TIMEOUT), watcher.lines
    finally:
        log.removeHandler(watcher)
        log.setLevel(level)
    assert f"refused 127.0.0.1:{client_address[1]}: 403 Forbidden" in watcher.lines, watcher.lines
    assert seen == [client_address]
    assert not [line for line in watcher.lines if "failed" in line or "unexpected" in line]


def test_process_request_sees_the_addresses_the_connection_gets(start_server, connect):
    infos, handled = [], queue.Queue()

    def process_request(info, request):
        infos.append(info)

    server = start_server(lambda ws: handled.put(ws) or ws.recv(timeout=TIMEOUT),
                          process_request=process_request)
    with connect(server) as ws:
        conn = handled.get(timeout=TIMEOUT)
        (info,) = infos
        assert info.remote_address == conn.remote_address == ws.local_address
        assert info.local_address == conn.local_address == ws.remote_address
        # read once, as the connection came in: the same objects, no second system call
        assert info.remote_address is conn.remote_address and info.local_address is conn.local_address


def test_process_request_answers_without_upgrading(start_server, connect, scheme):
    def process_request(conn, request):
        if request.path == "/health":
            return simplews.Response(200, body=b"OK\n")
        if request.headers.get("Authorization") != "Bearer good":
            return simplews.Response(401, headers={"WWW-Authenticate": "Bearer"}, body=b"no\n")
        if request.path != "/chat":
            return simplews.Response(404)
        return None

    server = start_server(process_request=process_request)
    with pytest.raises(simplews.InvalidStatus) as info:
        connect(server, "chat")
    assert info.value.status == 401 and info.value.response.headers["WWW-Authenticate"] == "Bearer"
    assert info.value.response.body == b"no\n"
    with pytest.raises(simplews.InvalidStatus) as info:
        connect(server, "nope", additional_headers={"Authorization": "Bearer good"})
    assert info.value.status == 404
    with connect(server, "chat", additional_headers={"Authorization": "Bearer good"}) as ws:
        ws.send("in")
        assert ws.recv(timeout=TIMEOUT) == "in"
    if scheme == "ws":  # a plain HTTP client gets the health check
        with urllib.request.urlopen(server.uri.replace("ws:", "http:") + "health", timeout=TIMEOUT) as r:
            assert r.status == 200 and r.read() == b"OK\n"


def test_origins_refuse_others_with_403(start_server, connect):
    server = start_server(origins=["https://good.example"])
    with pytest.raises(simplews.InvalidStatus) as info:
        connect(server, origin="https://evil.example")
    assert info.value.status == 403
    with connect(server, origin="https://good.example") as ws:
        ws.send("ok")
        assert ws.recv(timeout=TIMEOUT) == "ok"


def test_subprotocol_selection(start_server, connect):
    server = start_server(lambda ws: ws.send(ws.subprotocol or "none"), subprotocols=["chat.v2", "chat.v1"])
    ws = connect(server, subprotocols=["chat.v1", "chat.v2"])
    assert ws.subprotocol == "chat.v1" and ws.recv(timeout=TIMEOUT) == "chat.v1"
    ws = connect(server, subprotocols=["other"])
    assert ws.subprotocol is None and ws.recv(timeout=TIMEOUT) == "none"


def test_max_connections_answers_503(start_server, connect):
    server = start_server(max_connections=2)
    first, second = connect(server), connect(server)
    with pytest.raises(simplews.InvalidStatus) as info:
        connect(server)
    assert info.value.status == 503
    first.close()
    deadline = time.monotonic() + TIMEOUT
    while len(server.connections) >= 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    with connect(server) as third:
        third.send("room again")
        assert third.recv(timeout=TIMEOUT) == "room again"
    second.close()


def test_shutdown_closes_every_connection_with_1001(start_server, connect, scheme):
    server = start_server(close_timeout=1)
    clients = [connect(server) for _ in range(5)]
    idle_peer = raw_client(server.uri)  # a client that never answers the close
    started = time.monotonic()
    server.shutdown()
    elapsed = time.monotonic() - started
    for ws in clients:
        with pytest.raises(simplews.ConnectionClosedOK):
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 1001
    assert elapsed < scaled(1 + 0.5), f"shutdown took {elapsed:.2f}s with close_timeout=1"
    event = idle_peer.next_event()
    assert isinstance(event, Close) and event.code == 1001
    idle_peer.close()


def test_200_idle_connections_use_one_thread_each(start_server, connect):
    server = start_server(ping_interval=None)
    before = threading.active_count()
    clients = [connect(server, ping_interval=None, compression=None) for _ in range(200)]
    deadline = time.monotonic() + TIMEOUT
    while len(server.connections) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.connections) == 200
    added = threading.active_count() - before
    assert added <= 200 + 3, f"{added} threads for 200 idle connections"
    for ws in clients:
        ws.close()


def test_bad_handshakes_do_not_stop_the_server(start_server, connect, scheme):
    import socket
    server = start_server(open_timeout=0.5)
    for garbage in (b"\x16\x03\x01garbage\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 300 + b"\r\n", b""):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        if scheme == "ws" and garbage:
            sock.sendall(garbage)
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 4"), answer[:40]
            if b"X: y" in garbage:
                assert answer.startswith(b"HTTP/1.1 431")
        sock.close()
    with connect(server) as ws:
        ws.send("still serving")
        assert ws.recv(timeout=TIMEOUT) == "still serving"


def test_addresses_in_logs_read_as_host_and_port():
    from simplews._io import format_address
    assert format_address(("127.0.0.1", 8765)) == "127.0.0.1:8765"
    assert format_address(("::1", 8765, 0, 0)) == "[::1]:8765"
    assert format_address("/run/ws.sock") == "/run/ws.sock"


def test_shutdown_ends_connections_still_in_their_opening_handshake(start_server, scheme):
    """A client that connected and sent nothing yet (browsers open such connections ahead
    of time) must not keep shutdown() waiting for open_timeout, nor outlive it."""
    server = start_server(open_timeout=TIMEOUT, close_timeout=1)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    try:
        if scheme == "wss":  # a TLS client that stops after the TLS handshake
            silent = client_ssl_context().wrap_socket(silent, server_hostname="localhost")
        deadline = time.monotonic() + TIMEOUT
        while not server._opening and time.monotonic() < deadline:  # its thread is reading
            time.sleep(0.005)
        assert server._opening
        started = time.monotonic()
        server.shutdown()
        assert time.monotonic() - started < scaled(1 + 0.5)
        assert silent.recv(1) == b""  # the server closed it: EOF, not open_timeout later
        assert server._workers.threads() == []
    finally:
        silent.close()


@pytest.mark.parametrize("failure", ["process_request raises", "process_request returns junk",
                                     "process_request returns an unsendable Response",
                                     "select_subprotocol raises",
                                     "select_subprotocol picks a name not offered"])
def test_failing_handshake_callback_answers_500_logs_and_keeps_serving(start_server, connect,
                                                                      caplog, failure):
    def process_request(conn, request):
        if request.path != "/boom":
            return None
        if failure == "process_request returns junk":
            return "not a Response"
        if failure == "process_request returns an unsendable Response":
            return simplews.Response(403, headers={"X-Why": "\N{SNOWMAN}"})  # not latin-1
        raise RuntimeError("boom in process_request")

    def select_subprotocol(conn, offered):
        if conn.request.path != "/boom":
            return None
        if failure == "select_subprotocol picks a name not offered":
            return "boom"  # RFC 6455 §4.2.2: one of the client's, which every client checks
        raise RuntimeError("boom in select_subprotocol")

    if failure.startswith("select_subprotocol"):
        server = start_server(select_subprotocol=select_subprotocol)
    else:
        server = start_server(process_request=process_request)
    with caplog.at_level(logging.ERROR, logger="simplews.server"), \
            pytest.raises(simplews.InvalidStatus) as info:
        connect(server, "boom")
    assert info.value.status == 500
    assert info.value.response.body == b"internal server error\n"  # no detail for the client
    # Logged (before the answer went out) with its traceback.
    record = next(r for r in caplog.records if r.name == "simplews.server" and r.exc_info)
    assert record.levelno == logging.ERROR
    expected = {"process_request returns junk": "'str'",
                "process_request returns an unsendable Response": "latin-1"}.get(failure, "boom")
    assert expected in str(record.exc_info[1])
    with connect(server, "fine") as ws:
        ws.send("still serving")
        assert ws.recv(timeout=TIMEOUT) == "still serving"


def _raw_handshake(server, scheme, extensions):
    """The head of the server's answer to a handshake offering ``extensions``."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    if scheme == "wss":
        sock = client_ssl_context().wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: "
                     + extensions.encode("latin-1") + b"\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            assert data, f"connection closed without an answer: {answer!r}"
            answer += data
    return answer.partition(b"\r\n\r\n")[0].decode("latin-1")


def test_malformed_extensions_header_gets_400_and_bad_offers_are_declined(start_server, connect,
                                                                          scheme):
    from test_handshake import DECLINED_OFFERS, MALFORMED_EXTENSIONS
    server = start_server()
    for header in MALFORMED_EXTENSIONS:
        head = _raw_handshake(server, scheme, header)
        assert head.startswith("HTTP/1.1 400 "), (header, head)
    for header in DECLINED_OFFERS:
        head = _raw_handshake(server, scheme, header)
        assert head.startswith("HTTP/1.1 101 "), (header, head)
        assert "sec-websocket-extensions" not in head.lower(), (header, head)
    with connect(server) as ws:
        ws.send("still serving")
        assert ws.recv(timeout=TIMEOUT) == "still serving"


def test_switch_interval_is_set_while_serving_and_restored(caplog):
    """Issue 14, item 4: opt-in, logged, and given back when serve_forever() returns."""
    import sys

    caplog.set_level(logging.INFO, logger="simplews")
    before = sys.getswitchinterval()
    seen = []
    server = simplews.serve(lambda ws: seen.append(sys.getswitchinterval()), switch_interval=0.05)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with simplews.connect(f"ws://127.0.0.1:{server.port}/", close_timeout=2) as ws, \
                pytest.raises(simplews.ConnectionClosedOK):
            ws.recv(timeout=TIMEOUT)  # the handler returned
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
    assert seen == [pytest.approx(0.05)] and sys.getswitchinterval() == before
    assert any("switch interval set to 0.05 s" in r.getMessage() for r in caplog.records)


def test_a_handler_may_shut_the_server_down():
    """shutdown() from a handler (a "/quit" command) raised RuntimeError (it joined its
    own thread) and left the listening socket open: new clients timed out."""
    outcome = []

    def quit_on_message(ws):
        ws.recv()
        try:
            server.shutdown()
            outcome.append("returned")
        except BaseException as exc:
            outcome.append(exc)
            raise

    server = simplews.serve(quit_on_message, close_timeout=TIMEOUT)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with simplews.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.send("quit")
            with pytest.raises(simplews.ConnectionClosedOK):
                ws.recv(timeout=TIMEOUT)
        thread.join(TIMEOUT)
        assert not thread.is_alive() and wait_for(lambda: outcome) and outcome == ["returned"]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT).close()
        with pytest.raises(RuntimeError, match="after shutdown"):  # (it failed on EBADF, and
            server.serve_forever()  # the next shutdown() waited out close_timeout)
        started = time.monotonic()
        server.shutdown()
        assert time.monotonic() - started < TIMEOUT / 2
    finally:
        server.shutdown()
        thread.join(TIMEOUT)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_a_switch_interval_python_refuses_is_refused_at_once_and_cannot_hang_shutdown(bad):
    """serve(switch_interval=0) listened, then serve_forever() raised before it could
    say it had stopped: shutdown() waited out close_timeout. Now serve() refuses it; and
    serve_forever() failing there still leaves shutdown() nothing to wait for."""
    import sys

    with pytest.raises(ValueError, match="switch_interval"):
        simplews.serve(lambda ws: None, switch_interval=bad)
    if not bad <= 0:
        return  # (Python takes NaN and infinity: no test sets them for the whole process)
    before = sys.getswitchinterval()
    server = simplews.serve(lambda ws: None, close_timeout=TIMEOUT)
    server.switch_interval = bad  # set past the check: what Python refuses
    with pytest.raises(ValueError):
        server.serve_forever()
    started = time.monotonic()
    server.shutdown()
    assert time.monotonic() - started < TIMEOUT / 2 and sys.getswitchinterval() == before


def test_switch_interval_is_left_alone_by_default(start_server, connect):
    import sys

    before = sys.getswitchinterval()
    seen = []
    server = start_server(lambda ws: seen.append(sys.getswitchinterval()))
    ws = connect(server)
    with pytest.raises(simplews.ConnectionClosedOK):
        ws.recv(timeout=TIMEOUT)
    assert seen == [before]


def test_a_close_that_raises_is_logged_and_frees_the_connections_slot(start_server, connect, caplog):
    """The connection leaves server.connections, and max_connections has room again,
    even when closing it after the handler raises (it used to stay counted for good)."""
    def handler(ws):
        real_close = ws.close

        def failing_close(*args):
            real_close(*args)
            raise RuntimeError("boom in close")

        ws.close = failing_close

    server = start_server(handler, max_connections=1)
    with caplog.at_level(logging.ERROR, logger="simplews.server"):
        ws = connect(server)
        with pytest.raises(simplews.ConnectionClosedOK):
            ws.recv(timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.005)
    assert not server.connections
    assert any("boom in close" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    again = connect(server)  # not refused with 503
    again.close()


def test_a_connection_holds_one_descriptor_on_the_server(start_server, connect):
    """Issue 14: a serving thread gives up its accept waiter's epoll, so 10,000 idle
    connections need 10,000 descriptors, not 20,000. Client and server share this
    process here: two descriptors per connection in all."""
    server = start_server(lambda ws: ws.recv(timeout=TIMEOUT))
    connect(server).close()  # the first worker threads exist
    before = open_fds()
    clients = [connect(server) for _ in range(40)]
    deadline = time.monotonic() + TIMEOUT
    while len(server.connections) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.connections) == 40
    assert open_fds() - before <= 2 * 40 + 4  # (+ a few waiting threads' epolls)
    for ws in clients:
        ws.close()


def test_descriptors_stay_bounded_while_serving_and_are_all_released_at_shutdown():
    """Waiters go from thread to thread (at most max_idle spare): connection after
    connection, and a burst of them, leave no descriptor behind; shutdown() closes the
    listening socket, the wake-up pair and every waiter."""
    def one_after_another(uri: str) -> None:
        for i in range(30):
            with simplews.connect(uri, compression=None) as ws:
                ws.send(str(i))
                assert ws.recv(timeout=TIMEOUT) == str(i)

    before = open_fds()
    with running_server(echo, compression=None) as server:
        uri = f"ws://127.0.0.1:{server.port}/"
        one_after_another(uri)
        steady = open_fds()
        burst = [simplews.connect(uri, compression=None) for _ in range(12)]
        for ws in burst:
            ws.send("x")
            assert ws.recv(timeout=TIMEOUT) == "x"
        for ws in burst:
            ws.close()
        one_after_another(uri)
        # spare waiters and waiting threads' epolls: max_idle of each at the most
        assert open_fds() <= steady + 2 * 8
    assert wait_for(lambda: open_fds() == before)  # (worker threads closing theirs as they exit)


# Python memory of an idle server connection (README: idle row). Python 3.9 and 3.10 spend
# ~5 KB more (a blocked thread's frames are on the heap there). This test, before the header
# strings were shared and the first read buffer shrank: 14,456 (3.9), 9,466 (3.11); after:
# 12,874 and 7,879 (tracemalloc with 300 connections: 3.10 14,774 -> 13,196, 3.13 9,197 -> 7,713).
# After the request's method and version, the address strings and the 101's header tuples
# were shared, and Request and Response got __slots__ (2026-12-07): 3.11 7,866 -> 7,436,
# 3.12 7,325, 3.13 7,318; then 3.11 7,206 once a parsed header block stayed one string
# until its pairs are asked for, 6,962 once a worker's name stopped formatting a tuple (its
# repr() made the thread a dict of its own), 6,872 with the server's local address shared,
# 5,690 once worker threads shared one start event (3.12 5,588, 3.13 5,571, 3.9 10,641),
# 5,252 and one excepthook caller (3.12 5,148, 3.13 5,128, 3.9 10,221).
def _threads_in(function: str) -> int:
    """How many threads are in ``function`` now (a handler blocked in recv() is in
    _read_once): the frames of a blocked thread are part of what it costs."""
    return sum(frame.f_code.co_name == function for frame in sys._current_frames().values())


IDLE_CONNECTION_BYTES = 6500 if sys.version_info >= (3, 11) else 12500


def test_an_idle_connection_costs_the_server_few_python_bytes():
    """Measured with tracemalloc in the server's process, the clients in another one: the
    connection, its Protocol, socket, read buffer, handshake headers and worker thread.
    Headers are interned and the read buffer starts at 256 bytes."""
    count, opened = 200, threading.Semaphore(0)

    def handler(ws):
        opened.release()
        for _ in ws:
            pass

    server = simplews.serve(handler, "127.0.0.1", 0, ping_interval=None)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    code = ("import sys, simplews\n"
            f"c = [simplews.connect('ws://127.0.0.1:{server.port}/') for _ in range(int(sys.argv[1]))]\n"
            "print('open', flush=True)\nsys.stdin.read()\n[x.close() for x in c]\n")
    clients, blocked = [], 0
    tracemalloc.start()
    try:
        for n in (10, count):  # the first ten warm up what is created once
            client = subprocess.Popen([sys.executable, "-c", code, str(n)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
            clients.append(client)
            assert client.stdout.readline() == "open\n"
            for _ in range(n):
                assert opened.acquire(timeout=TIMEOUT)
            blocked += n  # every handler waits in recv(), its frames made
            assert wait_for(lambda want=blocked: _threads_in("_read_once") >= want), blocked
            if n == 10:
                gc.collect()
                before = tracemalloc.take_snapshot()
        gc.collect()
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
        for client in clients:
            client.stdin.close()
            client.wait(TIMEOUT)
        server.shutdown()
        thread.join(TIMEOUT)
    assert grown / count < IDLE_CONNECTION_BYTES, f"{grown / count:.0f} bytes per idle connection"


def _in_a_system_call(native_id: int) -> bool:
    with open(f"/proc/self/task/{native_id}/syscall") as syscall:
        return syscall.read() != "running\n"


def _stack_resident_kib(native_ids):
    """Resident KiB of each thread's stack, each thread blocked in a system call (Linux:
    /proc/self/task/TID/syscall has its stack pointer, /proc/self/smaps each mapping's Rss)."""
    resident, mapping = {}, (0, 0)
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                mapping = tuple(int(x, 16) for x in first.split("-"))
            elif first == "Rss:":
                resident[mapping] = int(line.split()[1])
    kib = []
    for tid in native_ids:
        with open(f"/proc/self/task/{tid}/syscall") as syscall:
            stack_pointer = int(syscall.read().split()[-2], 16)
        kib.append(next(k for (low, high), k in resident.items() if low <= stack_pointer < high))
    return kib


@pytest.mark.skipif(sys.version_info < (3, 11) or not os.path.exists("/proc/self/task"),
                    reason="Linux; Python 3.11 and later (3.9 and 3.10 nest every Python call in C)")
def test_an_idle_connections_thread_keeps_no_more_stack_than_a_thread_blocked_in_recv():
    """A page of C stack that a server thread touches once (getnameinfo() in getsockname(),
    PyArg parsing in Lock.acquire(), nested __init__ calls; on 3.13, a bound method as
    the thread's target) stays resident for as long as its connection: 4 KiB each, a
    fifth of an idle connection's memory. The first connection may go deeper (what is
    done once: caches, first calls)."""
    count, handlers, plain = 20, [], []
    opened = threading.Semaphore(0)

    def handler(ws):
        handlers.append(threading.get_native_id())
        opened.release()
        for _ in ws:
            pass

    def blocked_in_recv(sock):
        plain.append(threading.get_native_id())
        sock.recv(1)

    pairs = [socket.socketpair() for _ in range(4)]
    threads = [threading.Thread(target=blocked_in_recv, args=(a,)) for a, _ in pairs]
    clients = []
    with running_server(handler, ping_interval=None) as server:
        try:
            for thread in threads:
                thread.start()
            clients = [simplews.connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None)
                       for _ in range(count)]
            for _ in range(count):
                assert opened.acquire(timeout=TIMEOUT)
            assert wait_for(lambda: _threads_in("_read_once") >= count
                            and _threads_in("blocked_in_recv") == len(pairs))
            assert wait_for(lambda: all(map(_in_a_system_call, handlers + plain)))
            handler_kib, plain_kib = _stack_resident_kib(handlers), _stack_resident_kib(plain)
        finally:
            for client in clients:
                client.close()
            for _, b in pairs:
                b.send(b"x")
            for thread in threads:
                thread.join(TIMEOUT)
            for a, b in pairs:
                a.close()
                b.close()
    assert sum(kib > max(plain_kib) for kib in handler_kib) <= 1, (handler_kib, plain_kib)


def test_shutdown_racing_a_serve_forever_that_is_starting_ends_one_way_or_the_other():
    """serve_forever() looked at the stop flag, then shutdown() stopped and closed the
    socket, then serve_forever() read its address: OSError (EBADF), 4 runs in 1,000 with
    threads switching every microsecond. Now one of the two comes first: shutdown() waits
    for serve_forever(), or serve_forever() raises the RuntimeError it documents."""
    import sys

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(1000):
            server = simplews.serve(lambda ws: None, close_timeout=TIMEOUT)
            errors = []

            def serve(server: simplews.Server = server, errors: list = errors) -> None:
                try:
                    server.serve_forever()
                except Exception as exc:  # noqa: BLE001 - the test records what came out
                    errors.append(exc)

            thread = threading.Thread(target=serve)
            thread.start()
            server.shutdown()
            thread.join(TIMEOUT)
            assert not thread.is_alive()
            assert all(isinstance(e, RuntimeError) and "after shutdown()" in str(e) for e in errors), errors
    finally:
        sys.setswitchinterval(before)
