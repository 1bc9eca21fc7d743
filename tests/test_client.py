"""connect(): errors a user can act on (issue 3, item 12) and the TLS defaults."""
import base64
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading

import pytest

import simplews
from simplews.uri import parse_uri

from support import CERTS, free_port, running_server
from conftest import TIMEOUT, RawServer, client_ssl_context, server_ssl_context



def test_connection_refused():
    with pytest.raises(ConnectionRefusedError):
        simplews.connect(f"ws://127.0.0.1:{free_port()}/", open_timeout=TIMEOUT)


def test_invalid_uri():
    with pytest.raises(simplews.InvalidURI):
        simplews.connect("http://127.0.0.1/")
    with pytest.raises(ValueError):
        simplews.connect("ws://127.0.0.1:1/", ssl=client_ssl_context())
    with pytest.raises(ValueError):
        simplews.connect("ws://127.0.0.1:1/", max_redirects=-1)


def test_non_101_answer_carries_status_and_headers(start_server, connect):
    server = start_server(process_request=lambda c, r: simplews.Response(
        418, headers={"X-Why": "teapot"}, body=b"short and stout"))
    with pytest.raises(simplews.InvalidStatus) as info:
        connect(server)
    error = info.value
    assert isinstance(error, simplews.InvalidHandshake) and isinstance(error, simplews.WebSocketError)
    assert error.status == 418 and error.response.headers["X-Why"] == "teapot"
    assert error.response.body == b"short and stout" and "418" in str(error)


def test_bad_accept_header(scheme):
    raw = RawServer(scheme)

    def serve_bad_accept():
        def corrupt(response):
            response.headers["Sec-WebSocket-Accept"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
        raw.accept(response_hook=corrupt)

    thread = threading.Thread(target=serve_bad_accept)
    thread.start()
    try:
        with pytest.raises(simplews.InvalidHeader, match="Sec-WebSocket-Accept"):
            simplews.connect(raw.uri, ssl=client_ssl_context() if scheme == "wss" else None)
    finally:
        thread.join(TIMEOUT)
        raw.close()


def test_certificate_that_fails_verification():
    server = simplews.serve(lambda ws: None, "127.0.0.1", 0, ssl=server_ssl_context("untrusted"))
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            simplews.connect(f"wss://127.0.0.1:{server.port}/", ssl=client_ssl_context())
        # the default context (certifi's CAs) does not trust our test CA either
        with pytest.raises(ssl.SSLCertVerificationError):
            simplews.connect(f"wss://localhost:{server.port}/")
    finally:
        server.shutdown()
        thread.join(TIMEOUT)


def test_a_server_refusing_our_certificate_is_reported_by_its_alert_not_a_reset():
    # TLS 1.3: the server checks the client's certificate after the client's side of the
    # handshake is done, sends an alert and closes; the request connect() sends may meet
    # the reset (ConnectionResetError, SSLEOFError: 1 in 5 under Python 3.13). connect()
    # then reads the alert, what a user can act on.
    context = server_ssl_context()
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(CERTS / "untrusted.pem")
    with running_server(lambda ws: None, ssl=context) as server:
        for _ in range(40):
            with pytest.raises(ssl.SSLError) as info:
                simplews.connect(f"wss://localhost:{server.port}/", ssl=client_ssl_context(),
                                 open_timeout=TIMEOUT)
            assert "ALERT" in (info.value.reason or ""), repr(info.value)


def test_default_tls_context_verifies_with_certifi():
    import certifi
    context = simplews.client.default_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0 and certifi.where()


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_default_tls_context_adds_ssl_cert_file_and_dir(monkeypatch, tmp_path, variable):
    if variable == "SSL_CERT_DIR" and shutil.which("openssl") is None:
        pytest.skip("the openssl command (to name the CA by its subject hash) is not installed")
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    server = simplews.serve(lambda ws: ws.send("trusted"), "127.0.0.1", 0, ssl=server_ssl_context())
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        uri = f"wss://localhost:{server.port}/"
        with pytest.raises(ssl.SSLCertVerificationError):  # certifi alone does not trust the test CA
            simplews.connect(uri)
        if variable == "SSL_CERT_FILE":
            monkeypatch.setenv(variable, str(CERTS / "ca.pem"))
        else:  # a directory of CAs named by their subject hash, as c_rehash leaves them
            digest = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(CERTS / "ca.pem")],
                                    capture_output=True, text=True, check=True).stdout.strip()
            shutil.copy(CERTS / "ca.pem", tmp_path / f"{digest}.0")
            monkeypatch.setenv(variable, f"{tmp_path / 'missing'}:{tmp_path}")  # a list, as OpenSSL reads it
        with simplews.connect(uri) as ws:
            assert ws.recv(TIMEOUT) == "trusted"
        assert simplews.client.default_ssl_context().cert_store_stats()["x509_ca"] > 1  # certifi's kept
    finally:
        server.shutdown()
        thread.join(TIMEOUT)


def test_connections_without_ssl_share_one_context_per_ca_settings(monkeypatch, tmp_path):
    # Loading the CA bundles costs tens of ms: connect() makes the default context once
    # per value of SSL_CERT_FILE / SSL_CERT_DIR; default_ssl_context() stays new per call.
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(CERTS / "ca.pem"))
    with running_server(lambda ws: ws.send("hi"), ssl=server_ssl_context()) as server:
        uri = f"wss://localhost:{server.port}/"
        with simplews.connect(uri) as first, simplews.connect(uri) as second:
            assert first.recv(TIMEOUT) == second.recv(TIMEOUT) == "hi"
            shared = first.socket.context
            assert second.socket.context is shared is simplews.client.shared_ssl_context()
        assert simplews.client.default_ssl_context() is not simplews.client.default_ssl_context()
        shutil.copy(CERTS / "ca.pem", tmp_path / "ca.pem")
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # other settings: another context
        with simplews.connect(uri) as third:
            assert third.recv(TIMEOUT) == "hi" and third.socket.context is not shared
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))  # read at once
        with pytest.raises(FileNotFoundError):
            simplews.connect(uri)


def test_server_hostname_override(start_server, scheme):
    if scheme == "ws":
        pytest.skip("TLS only")
    server = start_server()
    with simplews.connect(f"wss://127.0.0.1:{server.port}/", ssl=client_ssl_context(),
                          server_hostname="localhost") as ws:
        ws.send("sni")
        assert ws.recv(timeout=TIMEOUT) == "sni"


def test_a_non_ascii_path_reaches_the_server_percent_encoded(start_server, connect):
    server = start_server()
    with connect(server, "café/ü?q=naïve x") as ws:
        assert ws.request.path == "/caf%C3%A9/%C3%BC?q=na%C3%AFve%20x"
        ws.send("é")
        assert ws.recv(timeout=TIMEOUT) == "é"


def test_open_timeout():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts TCP, never answers
    try:
        with pytest.raises(TimeoutError):
            simplews.connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", open_timeout=0.2)
    finally:
        listener.close()


def test_handshake_details_exposed(start_server, connect):
    server = start_server()
    with connect(server, "chat?x=1", additional_headers=[("X-Trace", "42")]) as ws:
        assert ws.request.path == "/chat?x=1" and ws.request.headers["X-Trace"] == "42"
        assert ws.response.status == 101
        assert ws.local_address[0] == "127.0.0.1" and ws.remote_address[1] == server.port
        assert ws.state is simplews.State.OPEN


# -- redirects (301, 302, 303, 307, 308) --------------------------------------


class Seen:
    """A process_request that records each request's path and Authorization header."""

    def __init__(self, redirect=None):
        self.redirect = redirect  # (status, location) answered to every request, or None
        self.requests = []

    def __call__(self, info, request):
        self.requests.append((request.path, request.headers.get("Authorization")))
        if self.redirect is not None:
            status, location = self.redirect
            return simplews.Response(status, headers=[("Location", location)])
        return None


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_followed(start_server, connect, scheme, status):
    target_log = Seen()
    target = start_server(process_request=target_log)
    source = start_server(process_request=Seen((status, target.uri + "there?x=1")))
    ws = connect(source.uri + "here")
    ws.send("after a redirect")
    assert ws.recv(timeout=TIMEOUT) == "after a redirect"
    assert target_log.requests == [("/there?x=1", None)]
    assert ws.request.path == "/there?x=1"


def test_relative_redirect_keeps_credentials_on_the_same_origin(start_server, connect, scheme):
    log = Seen()

    def process_request(info, request):
        log(info, request)
        if request.path == "/old":
            return simplews.Response(302, headers=[("Location", "/new")])
        return None

    server = start_server(process_request=process_request)
    uri = server.uri.replace("://", "://al:pw@") + "old"
    with connect(uri) as ws:
        assert ws.request.path == "/new"
    basic = "Basic " + base64.b64encode(b"al:pw").decode()
    assert log.requests == [("/old", basic), ("/new", basic)]


def test_credentials_are_dropped_across_origins(start_server, connect, scheme):
    target_log = Seen()
    target = start_server(process_request=target_log)
    source_log = Seen((307, target.uri))
    source = start_server(process_request=source_log)
    uri = source.uri.replace("://", "://al:pw@")
    with connect(uri, additional_headers={"Authorization": "Bearer secret", "X-Other": "kept"}) as ws:
        assert ws.request.headers.get("X-Other") == "kept"
    assert source_log.requests == [("/", "Bearer secret")]
    assert target_log.requests == [("/", None)]


def test_http_location_becomes_ws(start_server, connect):
    target = start_server()
    source = start_server(process_request=Seen((301, target.uri.replace("ws", "http", 1))))
    with connect(source.uri) as ws:
        assert ws.remote_address[1] == target.port


def test_no_redirect_from_wss_to_ws(start_server, connect):
    source = start_server(process_request=Seen((302, "ws://127.0.0.1:9/")),
                          ssl=server_ssl_context())
    with pytest.raises(simplews.InvalidHandshake, match="wss:// to ws://"):
        connect("wss://" + source.uri.split("://", 1)[1])


@pytest.mark.parametrize("scheme", ["ws"])
def test_redirect_loop_stops_after_max_redirects(start_server, connect):
    log = Seen((302, "/again"))
    server = start_server(process_request=log)
    with pytest.raises(simplews.InvalidHandshake, match="more than 10 redirects"):
        connect(server.uri)
    assert len(log.requests) == 11
    with pytest.raises(simplews.InvalidStatus) as info:  # max_redirects=0: the 302 itself
        connect(server.uri, max_redirects=0)
    assert info.value.status == 302


@pytest.mark.parametrize("scheme", ["ws"])
def test_redirect_without_location_is_a_refusal(start_server, connect):
    server = start_server(process_request=lambda info, request: simplews.Response(302))
    with pytest.raises(simplews.InvalidStatus) as info:
        connect(server.uri)
    assert info.value.status == 302


# -- Unix sockets ---------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_unix_socket_client_and_server(tmp_path, scheme):
    path = str(tmp_path / "s.sock")
    kwargs = {"ssl": server_ssl_context()} if scheme == "wss" else {}
    server = simplews.serve(lambda ws: ws.send(ws.request.headers["Host"]), unix_socket=path,
                            close_timeout=2, **kwargs)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        assert server.port is None
        client_kwargs = {"ssl": client_ssl_context()} if scheme == "wss" else {}
        with simplews.connect(f"{scheme}://localhost/", unix_socket=path, open_timeout=TIMEOUT,
                              close_timeout=2, **client_kwargs) as ws:
            assert ws.recv(timeout=TIMEOUT) == "localhost"
            ws.send(b"x" * 100000)
            assert ws.remote_address == path
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
    assert not os.path.exists(path)


def test_unix_socket_nobody_listening(tmp_path):
    with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
        simplews.connect("ws://localhost/", unix_socket=str(tmp_path / "none.sock"),
                         open_timeout=TIMEOUT)


def test_unix_socket_stale_file_is_replaced_but_a_live_one_is_not(tmp_path):
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # bound, never listening: what a crashed server leaves behind
    stale.close()
    server = simplews.serve(lambda ws: None, unix_socket=path)
    try:
        with pytest.raises(OSError):  # a server is listening there now: not stolen
            simplews.serve(lambda ws: None, unix_socket=path)
    finally:
        server.close()
    assert not os.path.exists(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux's")
def test_unix_socket_in_the_abstract_namespace():
    """A name starting with NUL has no file: serve() failed on os.stat() (embedded null
    byte)."""
    name = f"\0simplews-test-{os.getpid()}"
    server = simplews.serve(lambda ws: ws.send("hi"), unix_socket=name)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with simplews.connect("ws://localhost/", unix_socket=name, open_timeout=TIMEOUT) as ws:
            assert ws.recv(timeout=TIMEOUT) == "hi"
    finally:
        server.shutdown()
        thread.join(TIMEOUT)


def test_a_socket_given_to_serve_must_be_listening():
    """Bound but not listening: it logged 'listening on', then 'accept failed' ten times a
    second until shutdown."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="listening"):
            simplews.serve(lambda ws: None, sock=sock)


# -- broken answers (issue 12, item 1): always an InvalidHandshake ------------------------


@contextlib.contextmanager
def answering(answer: bytes):
    """A raw TCP server on 127.0.0.1 that reads one request head, sends ``answer`` and
    closes: what a broken or hostile server does. Yields its ws:// URI."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def serve():
        try:
            sock, _ = listener.accept()
        except OSError:  # nobody came: the test failed before connecting
            return
        with sock:
            sock.settimeout(TIMEOUT)
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(65536)
                if not data:
                    return
                head += data
            sock.sendall(answer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes accept() if nobody came
        thread.join(TIMEOUT)
        listener.close()
        assert not thread.is_alive()


def redirect(location: bytes) -> bytes:
    return b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"


SUPERSCRIPT_LENGTH = b"HTTP/1.1 400 Bad Request\r\nContent-Length: \xb2\r\n\r\n"  # '\xb2': str.isdigit()

BROKEN_ANSWERS = [
    SUPERSCRIPT_LENGTH,
    redirect(b"ws://[::1/x"),  # urljoin: "Invalid IPv6 URL"
    redirect(b"ws://[zz]/"),  # urljoin: "'zz' does not appear to be an IPv4 or IPv6 address"
    redirect(b"ws://a..b/"),  # the host's IDNA encoding fails (an empty label)
    redirect(b"wss://.example/"),
    redirect(b"ws://" + b"x" * 64 + b"/"),  # a label over 63 characters
    redirect(b"ws://127.0.0.1:99999/"),
    redirect(b"ftp://127.0.0.1/"),
]


@pytest.mark.parametrize("answer", BROKEN_ANSWERS, ids=lambda answer: repr(answer[:60]))
def test_broken_answers_raise_invalid_handshake(answer):
    with answering(answer) as uri, pytest.raises(simplews.InvalidHandshake):
        simplews.connect(uri, proxy=None, open_timeout=TIMEOUT)


def test_refusal_with_a_non_ascii_digit_content_length_keeps_its_status():
    with answering(SUPERSCRIPT_LENGTH) as uri, pytest.raises(simplews.InvalidStatus) as info:
        simplews.connect(uri, proxy=None, open_timeout=TIMEOUT)
    assert info.value.status == 400


def test_host_names_are_checked_and_sent_in_their_idna_form():
    for bad in ("ws://a..b/", "ws://.example/", "wss://" + "x" * 64 + "/"):
        with pytest.raises(simplews.InvalidURI, match="invalid host"):
            simplews.connect(bad, proxy=None)
    uri = parse_uri("wss://b\u00fccher.\u4f8b\u3048/x")
    assert uri.host == "xn--bcher-kva.xn--r8jz45g" and uri.url == "wss://xn--bcher-kva.xn--r8jz45g/x"


def test_credentials_in_the_uri_stay_out_of_the_logs(start_server, connect, caplog):
    caplog.set_level("DEBUG", logger="simplews")
    server = start_server()
    uri = server.uri.replace("://", "://alice:s3cret@")
    with connect(uri) as ws:
        ws.send("hi")
        assert ws.recv(timeout=TIMEOUT) == "hi"
    assert "connected to" in caplog.text and "s3cret" not in caplog.text


@pytest.mark.parametrize("options", [{"subprotocols": ["a b"]}, {"origin": "http://x\r\nEvil: 1"},
                                     {"user_agent": "ua\r\nX-Evil: 1"}])
def test_bad_handshake_options_are_refused_before_any_socket_is_opened(options):
    """They raised ValueError after the TCP connection was made, which stayed open until
    the garbage collector found it (a ResourceWarning)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with pytest.raises(ValueError):
            simplews.connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", open_timeout=TIMEOUT, **options)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection came
            listener.accept()
