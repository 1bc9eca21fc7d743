"""reconnect() (simplews/reconnect.py): a server process killed and started again on the
same port; the loop reconnects with backoff, and stops on a normal close."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

import simplews
from conftest import TIMEOUT, client_ssl_context
from test_cli import ROOT, _env

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, port: int, generation: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), generation],
                                     stdout=subprocess.PIPE, env=_env(), cwd=str(ROOT))
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


def tls_for(uri: str) -> dict:
    return {"ssl": client_ssl_context()} if uri.startswith("wss:") else {}


def test_a_refusal_that_will_not_change_is_raised_at_once(start_server):
    server = start_server(process_request=lambda info, request: simplews.Response(403))
    with pytest.raises(simplews.InvalidStatus) as info:
        for _ in simplews.reconnect(server.uri, initial_delay=0.01, **tls_for(server.uri)):
            pytest.fail("the server refuses")
    assert info.value.status == 403


def test_503_is_retried(start_server):
    answers = [simplews.Response(503), simplews.Response(503), None]
    server = start_server(lambda ws: ws.send("in"), process_request=lambda info, request: answers.pop(0))
    for ws in simplews.reconnect(server.uri, initial_delay=0.01, close_timeout=2, **tls_for(server.uri)):
        with ws:
            assert ws.recv(timeout=TIMEOUT) == "in"
        break
    assert answers == []
