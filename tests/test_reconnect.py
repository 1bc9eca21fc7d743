"""reconnect() (simplews/reconnect.py): a server process killed and started again on the
same port; the loop reconnects with backoff, and stops on a normal close."""
from __future__ import annotations

import contextlib
import importlib
import socket
import subprocess
import sys
import threading
import time

import pytest

import simplews
from simplews._io import LONGEST_WAIT
from support import free_port, scripted_proxy
from conftest import TIMEOUT, client_ssl_context
from support import ROOT, cli_env

SERVER = """
import sys, simplews
def handler(ws):
    ws.send(sys.argv[2])             # which server generation this is
    for message in ws:
        if message == "bye":
            ws.close(1000, "bye")
            return
        ws.send(message)
server = simplews.serve(handler, "127.0.0.1", int(sys.argv[1]))
print("ready", flush=True)
server.serve_forever()
"""



class ServerProcess:
    def __init__(self, port: int, generation: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), generation],
                                     stdout=subprocess.PIPE, env=cli_env(), cwd=str(ROOT))
        line = self.proc.stdout.readline()  # bounded by the test's own timeout below
        assert line == b"ready\n", line

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no close frame, the client sees 1006
        self.proc.wait(TIMEOUT)
        self.proc.stdout.close()


@pytest.fixture
def processes():
    started = []
    yield started
    for process in started:
        if process.proc.poll() is None:
            process.kill()


def test_reconnects_after_the_server_is_killed_and_restarted(processes):
    port = free_port()
    processes.append(ServerProcess(port, "first"))
    seen = []
    restarted = threading.Event()

    def restart_later() -> None:  # after the kill, the client retries while nobody listens
        processes.append(ServerProcess(port, "second"))
        restarted.set()

    started = time.monotonic()
    for ws in simplews.reconnect(f"ws://127.0.0.1:{port}/", initial_delay=0.05, max_delay=0.2,
                                 open_timeout=TIMEOUT, close_timeout=2):
        with ws:
            generation = ws.recv(timeout=TIMEOUT)
            seen.append(generation)
            if generation == "first":
                processes[0].kill()
                with pytest.raises(simplews.ConnectionClosedError):
                    ws.recv(timeout=TIMEOUT)
                assert ws.close_code == 1006
                threading.Thread(target=restart_later).start()
                continue
            ws.send("bye")
            with pytest.raises(simplews.ConnectionClosedOK):
                ws.recv(timeout=TIMEOUT)
        assert time.monotonic() - started < TIMEOUT
    # the loop ended by itself after the normal close
    assert seen == ["first", "second"]
    assert restarted.wait(TIMEOUT)


def test_gives_up_after_max_attempts():
    port = free_port()
    with pytest.raises(ConnectionRefusedError):
        for _ in simplews.reconnect(f"ws://127.0.0.1:{port}/", initial_delay=0.01,
                                    max_attempts=3, open_timeout=TIMEOUT):
            pytest.fail("nothing listens there")


def test_a_server_closing_during_the_handshake_is_retried():
    """A server that reads the request and closes (a restart, a balancer without a
    backend): retried like a refused connection (it was raised at the first attempt)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    accepted = []

    def close_after_the_request() -> None:
        for _ in range(3):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                accepted.append(head)

    thread = threading.Thread(target=close_after_the_request)
    thread.start()
    try:
        with pytest.raises(simplews.InvalidHandshake) as info:
            for _ in simplews.reconnect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", initial_delay=0.01,
                                        max_attempts=3, open_timeout=TIMEOUT):
                pytest.fail("the server closes during every handshake")
        assert len(accepted) == 3 and isinstance(info.value.__cause__, EOFError)
    finally:
        thread.join(TIMEOUT)
        listener.close()


def tls_for(uri: str) -> dict:
    return {"ssl": client_ssl_context()} if uri.startswith("wss:") else {}


def test_a_refusal_that_will_not_change_is_raised_at_once(start_server):
    server = start_server(process_request=lambda info, request: simplews.Response(403))
    with pytest.raises(simplews.InvalidStatus) as info:
        for _ in simplews.reconnect(server.uri, initial_delay=0.01, **tls_for(server.uri)):
            pytest.fail("the server refuses")
    assert info.value.status == 403


@pytest.mark.parametrize("proxy", ["https://127.0.0.1:3128", "http://127.0.0.1:99999", "407"])
def test_a_proxy_setting_to_fix_is_raised_at_once(proxy):
    """A bad proxy URL (InvalidProxy) and a 407 were retried like a proxy that failed:
    for ever with the default max_attempts."""
    answer = b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"
    with scripted_proxy(answer) as (url, requests), pytest.raises(simplews.ProxyError) as info:
        for _ in simplews.reconnect("ws://127.0.0.1:9/", proxy=url if proxy == "407" else proxy,
                                    initial_delay=0.01, max_attempts=3, open_timeout=TIMEOUT):
            pytest.fail("the proxy refuses")
    assert len(requests) == (1 if proxy == "407" else 0)
    assert isinstance(info.value, simplews.InvalidProxyStatus if proxy == "407" else simplews.InvalidProxy)


@pytest.mark.parametrize("options", [{"max_delay": -1}, {"jitter": 1.5},
                                     {"initial_delay": -1}, {"factor": 0.5}, {"max_attempts": 0},
                                     {"stable_after": float("nan")}])
def test_backoff_settings_no_loop_could_keep_are_refused(options):
    """They were taken: a negative sleep's ValueError came in place of the connection's
    error once an attempt failed."""
    with pytest.raises(ValueError, match="reconnect"):
        next(simplews.reconnect("ws://127.0.0.1:9/", **{"max_attempts": 2, "open_timeout": 1, **options}))


NOT_ALLOWED = b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00"  # RFC 1928 §6: "not allowed by ruleset"


@pytest.mark.parametrize("refusal", [b"\x01\x01",  # RFC 1929: the password is refused
                                     b"\x01\x00" + NOT_ALLOWED])
def test_a_socks_proxy_refusing_our_credentials_or_the_target_is_not_retried(refusal):
    """The SOCKS kin of a 407 or a 403 from an HTTP proxy: retried for ever."""
    pytest.importorskip("python_socks")
    listener = socket.create_server(("127.0.0.1", 0))
    attempts = []

    def socks5() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    attempts.append(conn.recv(16))  # version, methods
                    conn.sendall(b"\x05\x02")  # username and password, please
                    conn.recv(512)
                    conn.sendall(refusal[:2])  # the verdict on them
                    if refusal[1:2] == b"\x00":
                        conn.recv(512)  # the CONNECT request
                        conn.sendall(refusal[2:])

    thread = threading.Thread(target=socks5)
    thread.start()
    try:
        with pytest.raises(simplews.InvalidProxy):
            for _ in simplews.reconnect("ws://127.0.0.1:9/", initial_delay=0.01, max_attempts=3,
                                        proxy=f"socks5://alice:typo@127.0.0.1:{listener.getsockname()[1]}",
                                        open_timeout=TIMEOUT):
                pytest.fail("the proxy refuses")
        assert len(attempts) == 1
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(TIMEOUT)


def test_503_is_retried(start_server):
    answers = [simplews.Response(503), simplews.Response(503), None]
    server = start_server(lambda ws: ws.send("in"), process_request=lambda info, request: answers.pop(0))
    for ws in simplews.reconnect(server.uri, initial_delay=0.01, close_timeout=2, **tls_for(server.uri)):
        with ws:
            assert ws.recv(timeout=TIMEOUT) == "in"
        break
    assert answers == []


class FakeTime:
    """Stands in for the time module inside simplews/reconnect.py: sleep() records the
    wait and returns at once, monotonic() is a clock the test moves by hand."""

    def __init__(self, log: list) -> None:
        self.now = 1000.0
        self.log = log

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.log.append(seconds)


@pytest.fixture
def fake_time(monkeypatch):
    log: list = []
    clock = FakeTime(log)
    monkeypatch.setattr(importlib.import_module("simplews.reconnect"), "time", clock)
    return clock


def close_at_once(ws: simplews.Connection) -> None:
    ws.close(4001, "go away")


def follow(server, fake_time, opens: int, lasting: tuple = (), **options) -> list:
    """Use reconnect() as the README shows against a close_at_once server, for ``opens``
    connections (those numbered in ``lasting`` stay open 10 s by the fake clock); the
    log: "open" for each connection, and the waits between them."""
    for number, ws in enumerate(simplews.reconnect(server.uri, close_timeout=2, **options,
                                                   **tls_for(server.uri)), start=1):
        fake_time.log.append("open")
        with ws:
            with pytest.raises(simplews.ConnectionClosedError):
                ws.recv(timeout=TIMEOUT)
            assert ws.close_code == 4001
        if number in lasting:
            fake_time.now += 10
        if number == opens:
            break
    return fake_time.log


def test_a_server_that_closes_at_once_is_not_hammered(start_server, fake_time):
    # Issue 12, item 7: the backoff was reset as soon as a connection opened, so
    # each connection closed with 4001 was followed by another at once (about 1,700
    # a second). Now every connection shorter than stable_after counts as a failure:
    # the waits between them grow from initial_delay by factor, as after a refusal.
    log = follow(start_server(close_at_once), fake_time, 7,
                 initial_delay=0.01, factor=2, max_delay=0.3, jitter=0)
    assert log == ["open", 0.01, "open", 0.02, "open", 0.04, "open", 0.08, "open", 0.16,
                   "open", 0.3, "open"]


def test_max_delay_alone_bounds_the_first_wait_too(start_server, fake_time):
    """max_delay under the default initial_delay (1 s): no wait is longer."""
    log = follow(start_server(close_at_once), fake_time, 3, max_delay=0.5, jitter=0)
    assert log == ["open", 0.5, "open", 0.5, "open"]


def test_an_endless_max_delay_stays_within_what_a_sleep_takes(start_server, fake_time):
    """max_delay=inf with a large factor made time.sleep() raise OverflowError in place of
    the connection's error."""
    log = follow(start_server(close_at_once), fake_time, 3, initial_delay=0.01, factor=1e12,
                 max_delay=float("inf"), jitter=0)
    assert log == ["open", 0.01, "open", LONGEST_WAIT, "open"]


def test_the_waits_after_short_connections_are_jittered(start_server, fake_time):
    log = follow(start_server(close_at_once), fake_time, 6,
                 initial_delay=1, factor=2, max_delay=8, jitter=0.5)
    waits = [entry for entry in log if entry != "open"]
    assert len(waits) == 5
    for wait, delay in zip(waits, [1, 2, 4, 8, 8]):
        assert delay / 2 <= wait <= delay
    # about one attempt a second at first, then one every 4 to 8 s: far from thousands
    assert sum(waits) >= 11.5


def test_a_connection_that_lasted_reconnects_at_once_and_resets_the_backoff(start_server,
                                                                           fake_time):
    log = follow(start_server(close_at_once), fake_time, 6, lasting=(4,),
                 initial_delay=0.01, factor=2, jitter=0, stable_after=10)
    # no wait after the fourth, and the next short one waits initial_delay again
    assert log == ["open", 0.01, "open", 0.02, "open", 0.04, "open", "open", 0.01, "open"]


def test_a_connection_the_caller_leaves_open_counts_too(start_server, fake_time):
    # Asking for the next connection while this one is open closes it; quick cycles
    # of that kind back off as well.
    server = start_server()  # echo: stays open until the client closes
    for ws in simplews.reconnect(server.uri, initial_delay=0.01, factor=2, jitter=0,
                                 close_timeout=2, **tls_for(server.uri)):
        fake_time.log.append("open")
        if fake_time.log.count("open") == 3:
            ws.close()
            break
    assert fake_time.log == ["open", 0.01, "open", 0.02, "open"]
