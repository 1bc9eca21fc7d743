"""simplews.wsgi under real WSGI servers: the Flask app of wsgi_app.py on Werkzeug's
development server (in a thread) and on gunicorn's gthread worker (a subprocess)."""
import http.client
import logging
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

import simplews
from simplews.handshake import ClientHandshake
from simplews.http11 import parse_response
from simplews.protocol import Protocol, Side
from simplews.uri import parse_uri
from simplews.wsgi import WebSocketApp, request_from_environ

from conftest import TIMEOUT

pytest.importorskip("flask", reason="flask is not installed (pip install -e '.[test]')")

TESTS = pathlib.Path(__file__).parent
CLOSE_1000 = b"\x88\x02\x03\xe8"  # an unmasked close frame, code 1000 (RFC 6455 §5.5.1)


class ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def werkzeug_server():
    from werkzeug.serving import make_server

    import wsgi_app

    errors = ErrorRecords()
    loggers = [logging.getLogger(name) for name in ("werkzeug", "simplews")]
    for logger in loggers:
        logger.addHandler(errors)
    server = make_server("127.0.0.1", 0, wsgi_app.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-werkzeug")
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)
        for logger in loggers:
            logger.removeHandler(errors)
    assert not errors.records, [errors.format(r) for r in errors.records]


def _gunicorn_has(setting: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(s.name == setting for s in KNOWN_SETTINGS)


@pytest.fixture(scope="module")
def gunicorn_server(tmp_path_factory):
    pytest.importorskip("gunicorn", reason="gunicorn is not installed (pip install -e '.[test]')")
    # gunicorn gets a socket that already listens (fd://): no free-port race, and
    # requests wait in the backlog until the worker is up.
    listener = socket.create_server(("127.0.0.1", 0))
    log_path = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    args = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1",
            "--threads", "4", "--graceful-timeout", "2", "--log-level", "debug",
            "--bind", f"fd://{listener.fileno()}", "--chdir", str(TESTS), "wsgi_app:app"]
    if _gunicorn_has("control_socket"):  # gunicorn >= 25.1
        args.append("--no-control-socket")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, pass_fds=[listener.fileno()], env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        try:
            assert http_get(address, "/hello")[0] == 200
        except (OSError, AssertionError):
            pytest.fail("gunicorn did not start:\n" + log_path.read_text(errors="replace"))
        yield address
    finally:
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)
        listener.close()
    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text and "[ERROR]" not in log_text, log_text


@pytest.fixture(params=["werkzeug", "gunicorn"])
def server(request) -> str:
    """host:port of the Flask app under each server."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def scheme():
    """conftest's ``connect`` over ws:// only: these WSGI servers speak plain HTTP
    (TLS is terminated in front of them)."""
    return "ws"


def http_get(address: str, path: str, headers=None):
    """(status, headers, body) of a plain HTTP GET."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


class RawClient:
    """A WebSocket client over a bare socket, that records every byte after the 101."""

    def __init__(self, address: str, path: str) -> None:
        wsuri = parse_uri(f"ws://{address}{path}")
        self.sock = socket.create_connection((wsuri.host, wsuri.port), timeout=TIMEOUT)
        handshake = ClientHandshake(wsuri)
        self.sock.sendall(handshake.request.serialize())
        buffer = b""
        while parse_response(buffer) is None:
            data = self.sock.recv(65536)
            assert data, f"EOF during the handshake: {buffer!r}"
            buffer += data
        response, size = parse_response(buffer)
        assert response.status == 101, buffer
        handshake.check_response(response)
        self.stream = buffer[size:]
        self.protocol = Protocol(Side.CLIENT, max_size=None)

    def read_until(self, size: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while len(self.stream) < size:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, f"EOF after {self.stream!r}"
            self.stream += data

    def read_to_eof(self) -> None:
        """Read until the server closes TCP; a timeout fails the test."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return
            if not data:
                return
            self.stream += data

    def send_close(self) -> None:
        self.sock.sendall(self.protocol.send_close(1000, ""))

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------------ messages

def test_echo_text_and_binary(server, connect):
    ws = connect(f"ws://{server}/echo")
    ws.send("hello, wsgi")
    assert ws.recv(timeout=TIMEOUT) == "hello, wsgi"
    ws.send(b"\x00\xff" * 1000)
    assert ws.recv(timeout=TIMEOUT) == b"\x00\xff" * 1000
    ws.send(["frag", "mented"])
    assert ws.recv(timeout=TIMEOUT) == "fragmented"


def test_compression_and_subprotocol_negotiated(server, connect):
    ws = connect(f"ws://{server}/echo", subprotocols=["chat.v1", "other"])
    assert ws.subprotocol == "chat.v1"
    assert ws.response.headers["Sec-WebSocket-Protocol"] == "chat.v1"
    assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
    assert ws.protocol.deflate is not None
    text = "compressible " * 5000
    ws.send(text)
    assert ws.recv(timeout=TIMEOUT) == text
    plain = connect(f"ws://{server}/bye")  # this endpoint has compression=None
    assert "Sec-WebSocket-Extensions" not in plain.response.headers and plain.subprotocol is None
    assert plain.recv(timeout=TIMEOUT) == "bye"


# ------------------------------------------------------------------------- closing

def test_clean_close_seen_by_both_ends(server, connect):
    client_id = uuid.uuid4().hex
    ws = connect(f"ws://{server}/echo?id={client_id}")
    ws.send("x")
    assert ws.recv(timeout=TIMEOUT) == "x"
    ws.close()
    assert ws.close_code == 1000 and ws.state is simplews.State.CLOSED
    assert http_get(server, f"/closed/{client_id}")[:3:2] == (200, b"1000")


def test_server_closes_when_the_handler_returns(server, connect):
    ws = connect(f"ws://{server}/bye")
    assert ws.recv(timeout=TIMEOUT) == "bye"
    with pytest.raises(simplews.ConnectionClosedOK):
        ws.recv(timeout=TIMEOUT)
    assert ws.close_code == 1000


def test_nothing_after_the_close_frame_client_closes(server):
    raw = RawClient(server, "/echo")
    try:
        raw.send_close()
        raw.read_to_eof()
        assert raw.stream == CLOSE_1000  # the echo of our close, then EOF: no HTTP/1.1 200
    finally:
        raw.close()


def test_nothing_after_the_close_frame_server_closes(server):
    raw = RawClient(server, "/bye")
    try:
        expected = b"\x81\x03bye" + CLOSE_1000
        raw.read_until(len(expected))
        raw.send_close()  # the echo: the server then closes TCP (RFC 6455 §7.1.1)
        raw.read_to_eof()
        assert raw.stream == expected
    finally:
        raw.close()


# ------------------------------------------------------------------------- refusals

def test_plain_http_request_to_a_websocket_route(server):
    status, _, body = http_get(server, "/echo")  # Flask: the route has websocket=True
    assert status == 400 and b"HTTP/1.1 200" not in body
    status, headers, body = http_get(server, "/plain")  # a plain WSGI WebSocketApp
    assert status == 426 and headers["Upgrade"] == "websocket"
    assert b"Upgrade: websocket expected" in body


def test_bad_handshakes_get_an_http_error(server):
    key = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    status, headers, _ = http_get(server, "/plain", dict(key, **{"Sec-WebSocket-Key": "short"}))
    assert status == 400
    good_key = "dGhlIHNhbXBsZSBub25jZQ=="
    status, headers, _ = http_get(server, "/plain", dict(key, **{
        "Sec-WebSocket-Key": good_key, "Sec-WebSocket-Version": "8"}))
    assert status == 426 and headers["Sec-WebSocket-Version"] == "13"


def test_plain_wsgi_app_echoes(server, connect):
    ws = connect(f"ws://{server}/plain/anything?x=1")
    ws.send("plain")
    assert ws.recv(timeout=TIMEOUT) == "plain"


def test_refusal_past_max_connections(server, connect):
    import wsgi_app

    open_ones = [connect(f"ws://{server}/limited") for _ in range(wsgi_app.LIMIT)]
    for ws in open_ones:
        ws.send("up")
        assert ws.recv(timeout=TIMEOUT) == "up"
    with pytest.raises(simplews.InvalidStatus) as info:
        connect(f"ws://{server}/limited")
    assert info.value.status == 503
    assert http_get(server, "/hello")[0] == 200  # a thread is left for plain requests
    open_ones[0].close()
    # The slot comes free once the server's thread is done with the closed connection,
    # just after the client saw the close: retry (each try is a full round trip).
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            ws = connect(f"ws://{server}/limited")
            break
        except simplews.InvalidStatus as exc:
            assert exc.status == 503 and time.monotonic() < deadline
    ws.send("again")
    assert ws.recv(timeout=TIMEOUT) == "again"


# ---------------------------------------------------------------- without a server

def test_request_from_environ():
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "SCRIPT_NAME": "/app",
               "PATH_INFO": "/caf\xc3\xa9 ws", "QUERY_STRING": "a=1", "HTTP_HOST": "example.com",
               "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "CONTENT_TYPE": "",
               "wsgi.version": (1, 0)}
    request = request_from_environ(environ)
    assert (request.method, request.path, request.version) == ("GET", "/app/caf%C3%A9%20ws?a=1", "HTTP/1.1")
    assert request.headers.items() == [("Host", "example.com"),
                                       ("Sec-Websocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
    assert request_from_environ(dict(environ, RAW_URI="/as/sent?x")).path == "/as/sent?x"


def test_a_server_without_a_socket_gets_500_and_a_log_line(caplog):
    started = []
    app = WebSocketApp(lambda ws: None, logger=logging.getLogger("test_wsgi"))
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/",
               "HTTP_HOST": "h", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade"}
    with caplog.at_level(logging.ERROR, logger="test_wsgi"):
        body = app(environ, lambda status, headers: started.append((status, headers)))
    assert started[0][0] == "500 Internal Server Error" and b"".join(body) == b"WebSocket not available\n"
    assert "does not expose it" in caplog.text


def test_refusing_a_client_that_reset_answers_and_logs(caplog):
    # The WSGI server hands over a socket whose peer has reset TCP: the refusal (no
    # Sec-WebSocket-Key: 400) is still answered, and logged without getpeername().
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
    sock, _ = listener.accept()
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()  # RST
        with pytest.raises(OSError):
            sock.getpeername()
        started = []
        app = WebSocketApp(lambda ws: None, logger=logging.getLogger("test_wsgi"))
        environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/",
                   "HTTP_HOST": "h", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
                   "werkzeug.socket": sock}
        with caplog.at_level(logging.INFO, logger="test_wsgi"):
            app(environ, lambda status, headers: started.append(status))
        assert started and started[0].startswith("400"), started
        assert "refused a peer gone already: 400" in caplog.text, caplog.text
    finally:
        sock.close()
        listener.close()
