"""connect(): errors a user can act on (issue 3, item 12) and the TLS defaults."""
import socket
import ssl
import threading

import pytest

import simplews
from simplews.handshake import ServerHandshake

from conftest import TIMEOUT, RawServer, client_ssl_context, server_ssl_context


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused():
    with pytest.raises(ConnectionRefusedError):
        simplews.connect(f"ws://127.0.0.1:{free_port()}/", open_timeout=TIMEOUT)


def test_invalid_uri():
    with pytest.raises(simplews.InvalidURI):
        simplews.connect("http://127.0.0.1/")
    with pytest.raises(ValueError):
        simplews.connect("ws://127.0.0.1:1/", ssl=client_ssl_context())


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


def test_default_tls_context_verifies_with_certifi():
    import certifi
    context = simplews.client.default_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0 and certifi.where()


def test_server_hostname_override(start_server, scheme):
    if scheme == "ws":
        pytest.skip("TLS only")
    server = start_server()
    with simplews.connect(f"wss://127.0.0.1:{server.port}/", ssl=client_ssl_context(),
                          server_hostname="localhost") as ws:
        ws.send("sni")
        assert ws.recv(timeout=TIMEOUT) == "sni"


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
