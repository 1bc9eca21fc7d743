"""Fixtures: simplews servers and clients over real loopback sockets, plain and TLS,
and a raw peer that speaks frames through the sans-I/O core for wire-level checks."""
from __future__ import annotations

import pathlib
import socket
import sys
import threading
import time
from typing import List, Optional

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import simplews  # noqa: E402
from simplews.extensions import DeflateConfig  # noqa: E402
from simplews.handshake import ClientHandshake, ServerHandshake  # noqa: E402
from simplews.http11 import parse_request, parse_response  # noqa: E402
from simplews.protocol import Event, Protocol, Side  # noqa: E402
from simplews.uri import parse_uri  # noqa: E402

from support import CERTS, TIMEOUT, client_ssl_context, serve_in_thread, server_ssl_context  # noqa: E402,F401


def echo(ws: simplews.Connection) -> None:
    for message in ws:
        ws.send(message)


@pytest.fixture(params=["ws", "wss"])
def scheme(request) -> str:
    return request.param


class Servers:
    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.running: List[tuple] = []

    def __call__(self, handler=echo, host: str = "127.0.0.1", **kwargs) -> simplews.Server:
        if self.scheme == "wss":
            kwargs.setdefault("ssl", server_ssl_context())
        kwargs.setdefault("close_timeout", 2)
        server = simplews.serve(handler, host, 0, **kwargs)
        thread = serve_in_thread(server)
        authority = f"[{host}]" if ":" in host else host
        server.uri = f"{self.scheme}://{authority}:{server.port}/"  # type: ignore[attr-defined]
        self.running.append((server, thread))
        return server

    def stop(self) -> None:
        for server, thread in self.running:
            server.shutdown()
            thread.join(TIMEOUT)


@pytest.fixture
def start_server(scheme):
    servers = Servers(scheme)
    yield servers
    servers.stop()


@pytest.fixture
def connect(scheme):
    opened: List[simplews.Connection] = []

    def _connect(target, path: str = "", **kwargs) -> simplews.Connection:
        uri = target if isinstance(target, str) else target.uri + path
        if uri.startswith("wss:"):
            kwargs.setdefault("ssl", client_ssl_context())
        kwargs.setdefault("close_timeout", 2)
        ws = simplews.connect(uri, **kwargs)
        opened.append(ws)
        return ws

    yield _connect
    for ws in opened:
        ws.close()


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Every connection thread and the keepalive thread are gone after each test."""
    yield
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = [t.name for t in threading.enumerate() if t.name.startswith("simplews")]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not left, f"threads left running: {left}"


class RawPeer:
    """One end of a WebSocket connection driven by hand, frame by frame."""

    def __init__(self, sock: socket.socket, protocol: Protocol) -> None:
        self.sock = sock
        self.protocol = protocol
        self.log: List[Event] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, data: bytes, fin: bool = True) -> None:
        for buffer in self.protocol.send_data(opcode, data, fin):
            self.sock.sendall(buffer)

    def next_event(self, timeout: float = TIMEOUT, streaming: bool = False) -> Optional[Event]:
        """The next event; None at EOF. Control frames are logged and answered."""
        deadline = time.monotonic() + timeout
        while True:
            self.protocol.streaming = streaming
            event = self.protocol.next_event()
            if event is not None:
                self.log.append(event)
                reply = self.protocol.next_reply()
                while reply:
                    self.sock.sendall(reply)
                    reply = self.protocol.next_reply()
                return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("raw peer: no event")
            self.sock.settimeout(remaining)
            data = self.sock.recv(1 << 20)
            if not data:
                return None
            self.protocol.receive_data(data)

    def at_eof(self, timeout: float = TIMEOUT) -> bool:
        """Does the other end close TCP within ``timeout``?"""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


class RawServer:
    """A listening socket whose connections are RawPeers (the server side)."""

    def __init__(self, scheme: str = "ws", host: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((host, 0))
        self.scheme = scheme
        self.uri = f"{scheme}://{host}:{self.listener.getsockname()[1]}/"
        self.peers: List[RawPeer] = []

    def accept(self, compression: Optional[DeflateConfig] = None, response_hook=None) -> RawPeer:
        self.listener.settimeout(TIMEOUT)
        sock, _ = self.listener.accept()
        sock.settimeout(TIMEOUT)
        if self.scheme == "wss":
            sock = server_ssl_context().wrap_socket(sock, server_side=True)
        buffer = b""
        while parse_request(buffer) is None:
            buffer += sock.recv(65536)
        request, size = parse_request(buffer)
        response, accepted = ServerHandshake(compression=compression).accept(request)
        if response_hook is not None:
            response_hook(response)
        sock.sendall(response.serialize())
        protocol = Protocol(Side.SERVER, max_size=None, deflate=accepted.deflate)
        protocol.receive_data(buffer[size:])
        peer = RawPeer(sock, protocol)
        self.peers.append(peer)
        return peer

    def pair(self, connect, compression: Optional[DeflateConfig] = None, **kwargs):
        """Connect a simplews client (with ``connect``) to this server: (ws, peer)."""
        accepted: List[RawPeer] = []
        thread = threading.Thread(target=lambda: accepted.append(self.accept(compression)))
        thread.start()
        try:
            ws = connect(self.uri, compression="deflate" if compression else None, **kwargs)
        finally:
            thread.join(TIMEOUT)
        return ws, accepted[0]

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        self.listener.close()


def raw_client(uri: str, compression: Optional[DeflateConfig] = None, **kwargs) -> RawPeer:
    """A RawPeer connected as a client to ``uri``."""
    wsuri = parse_uri(uri)
    sock = socket.create_connection((wsuri.host, wsuri.port), timeout=TIMEOUT)
    if wsuri.secure:
        sock = client_ssl_context().wrap_socket(sock, server_hostname=wsuri.host)
    handshake = ClientHandshake(wsuri, compression=compression, **kwargs)
    sock.sendall(handshake.request.serialize())
    buffer = b""
    while parse_response(buffer) is None:
        buffer += sock.recv(65536)
    response, size = parse_response(buffer)
    accepted = handshake.check_response(response)
    protocol = Protocol(Side.CLIENT, max_size=None, deflate=accepted.deflate)
    protocol.receive_data(buffer[size:])
    return RawPeer(sock, protocol)


@pytest.fixture
def raw_server(scheme):
    server = RawServer(scheme)
    yield server
    server.close()
