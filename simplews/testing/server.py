"""FakeServer: a WebSocket server that a test steers, for testing WebSocket clients.

    with FakeServer() as fake:
        client = MyClient(fake.uri)
        peer = fake.accept()
        peer.send("welcome")
        assert peer.recv() == "subscribe"
        peer.close(4001, "bye")

Threads: one accept thread per server, and one reader thread per connection (see
wire.py), which runs that connection's opening handshake and then reads it. A client
is thus answered (101) as soon as it connects, whether or not the test has called
``accept()`` yet, and what it sends meanwhile is kept. ``close()`` (or the end of the
``with`` block) stops them all and closes every socket, whatever state they are in.
"""
from __future__ import annotations

import contextlib
import select
import socket
import ssl as ssl_module
import threading
from collections import deque
from time import monotonic
from typing import Any, Deque, List, Optional, Sequence, Tuple, Union

from simplews.exceptions import InvalidHandshake
from simplews.extensions import DeflateConfig, codec_settings, compression_config
from simplews.handshake import ServerHandshake
from simplews.http11 import Headers, HeadersLike, Request, Response, parse_request
from simplews.protocol import Protocol, Side

from .wire import DEFAULT_TIMEOUT, WireEnd, logger, remaining

__all__ = ["FakeServer", "Peer"]


class Peer(WireEnd):
    """One client connection to a FakeServer, from the server's side (what ``accept()``
    returns). ``request`` is the client's handshake request (``request.path``,
    ``request.headers``), ``response`` the 101 answer, ``subprotocol`` the one agreed.
    The verbs (send, recv, expect, ping, close, drop, reset, send_raw, send_frame,
    stop_reading, wait_closed...) are WireEnd's."""

    side = Side.SERVER

    def __init__(self, server: FakeServer, sock: socket.socket, address: Any) -> None:
        super().__init__(sock, name=f"simplews-testing-peer-{address[1]}", max_size=server.max_size)
        self.server = server
        self.remote_address = address
        self.request: Optional[Request] = None
        self.response: Optional[Response] = None
        self.subprotocol: Optional[str] = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self.protocol else "handshake"
        path = self.request.path if self.request else "?"
        return f"<Peer {self.remote_address[0]}:{self.remote_address[1]} {path} {state}>"

    def _open(self) -> Optional[bytes]:
        """The opening handshake, bounded by the server's open_timeout; the bytes after the
        request, or None when no WebSocket connection is made."""
        server = self.server
        deadline = monotonic() + server.open_timeout
        self.sock.setblocking(False)
        try:
            if server.ssl is not None:
                self.sock = server.ssl.wrap_socket(self.sock, server_side=True,
                                                   do_handshake_on_connect=False)
                if not self._tls_handshake(deadline):
                    return None
            head = self._read_request(deadline)
        except (OSError, InvalidHandshake) as exc:  # ssl.SSLError is an OSError
            logger.info("%r: handshake failed: %s", self, exc)
            return None
        if head is None:
            return None
        request, leftover = head
        self.request = request
        self.sock.setblocking(True)
        action = server.next_action(request)
        if action == "stall":
            with self._cond:
                while not self._stopping:
                    self._cond.wait()
            return None
        if isinstance(action, Response):
            self._respond(action)
            return None
        response, accepted = server.handshake.accept(request)
        self.response = response
        if not self._respond(response) or response.status != 101:
            return None
        self.subprotocol = accepted.subprotocol
        self.protocol = Protocol(Side.SERVER, max_size=self.max_size, deflate=accepted.deflate,
                                 **codec_settings(server.compression))
        server.ready(self)
        return leftover

    def _tls_handshake(self, deadline: float) -> bool:
        sock = self.sock
        assert isinstance(sock, ssl_module.SSLSocket)
        while True:
            try:
                sock.do_handshake()
            except ssl_module.SSLWantReadError:
                ready = self._wait_socket(False, deadline)
            except ssl_module.SSLWantWriteError:
                ready = self._wait_socket(True, deadline)
            else:
                return True
            if not ready:
                return False

    def _read_request(self, deadline: float) -> Optional[Tuple[Request, bytes]]:
        buffer = bytearray()
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl_module.SSLWantReadError):
                if not self._wait_socket(False, deadline):
                    return None
                continue
            if not data:
                return None
            buffer += data
            try:
                parsed = parse_request(buffer)
            except InvalidHandshake as exc:
                self.sock.setblocking(True)
                self._respond(self.server.handshake.reject(400, str(exc)))
                return None
            if parsed is not None:
                return parsed[0], bytes(buffer[parsed[1]:])

    def _respond(self, response: Response) -> bool:
        with self._write_lock:
            return self._write_quietly(response.serialize())


Action = Union[Response, str, None]


class FakeServer:
    """A WebSocket server on ``host`` (127.0.0.1) and ``port`` (0: any free one) that a
    test steers: ``accept()`` hands over each client connection as a ``Peer``.

    ``ssl``: an SSLContext for wss://; ``subprotocols``: those it agrees to, in the
    client's order of preference; ``compression``: None (the default: frames are
    recorded as the client wrote them, uncompressed), "deflate" or a DeflateConfig;
    ``max_size``: None (anything is accepted) or the message size that fails with 1009.
    ``open_timeout`` bounds each handshake; ``close_timeout`` bounds the closing
    handshakes that ``close()`` starts with the clients still connected (code 1001).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 ssl: Optional[ssl_module.SSLContext] = None,
                 subprotocols: Optional[Sequence[str]] = None,
                 compression: Union[str, DeflateConfig, None] = None,
                 max_size: Optional[int] = None, open_timeout: float = 10.0,
                 close_timeout: float = 1.0) -> None:
        self.ssl = ssl
        self.compression = compression_config(compression)
        self.max_size = max_size
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.handshake = ServerHandshake(subprotocols=subprotocols, compression=self.compression)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        authority = f"[{host}]" if ":" in host else host
        self.uri = f"{'wss' if ssl else 'ws'}://{authority}:{self.port}/"
        self.peers: List[Peer] = []  # every connection that completed its handshake, in order
        self.requests: List[Request] = []  # every handshake request, accepted or not, in order
        self._cond = threading.Condition()
        self._actions: Deque[Action] = deque()  # what the next handshakes get instead of a 101
        self._ready: Deque[Peer] = deque()  # handshakes done, not accept()ed yet
        self._conns: List[Peer] = []
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"simplews-testing-server-{self.port}")
        self._thread.start()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FakeServer {self.uri}{' closed' if self._closed else ''}>"

    def accept(self, timeout: Optional[float] = DEFAULT_TIMEOUT) -> Peer:
        """The next client connection whose handshake succeeded (in order of arrival), waiting
        for it up to ``timeout``: TimeoutError if none comes."""
        deadline = None if timeout is None else monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._closed:
                    raise RuntimeError(f"{self!r}: accept() on a closed FakeServer")
                left = remaining(deadline)
                if left == 0:
                    raise TimeoutError(f"no WebSocket client connected to {self.uri} within {timeout} s")
                self._cond.wait(left)
            return self._ready.popleft()

    def refuse_next(self, status: int = 503, body: Union[str, bytes] = "",
                    headers: Optional[HeadersLike] = None) -> None:
        """Answer the next handshake with this HTTP status (and body, and headers), then
        close the connection. Calls queue up: one refusal per handshake, in order."""
        if not 200 <= status <= 599:
            raise ValueError(f"refuse_next() needs an HTTP error status, not {status}")
        response = Response(status, "", Headers(headers))
        if isinstance(body, str):
            body = body.encode("utf-8")
            if "Content-Type" not in response.headers:
                response.headers.add("Content-Type", "text/plain; charset=utf-8")
        response.body = body
        with self._cond:
            self._actions.append(response)

    def stall_next(self) -> None:
        """Read the next handshake request and never answer it (until close()): for a
        client's open timeout. Queues up with refuse_next()."""
        with self._cond:
            self._actions.append("stall")

    def wait_requests(self, count: int, timeout: Optional[float] = DEFAULT_TIMEOUT) -> List[Request]:
        """Wait until ``count`` handshake requests have been read; return them all (TimeoutError
        if they do not come in time, RuntimeError once the FakeServer is closed). refuse_next()
        and stall_next() apply in the order requests are read: with clients connecting at
        once, wait for one before the next."""
        deadline = None if timeout is None else monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                if self._closed:
                    raise RuntimeError(f"{self!r}: wait_requests() on a closed FakeServer "
                                       f"({len(self.requests)} of {count} requests came)")
                left = remaining(deadline)
                if left == 0:
                    raise TimeoutError(f"{len(self.requests)} of {count} handshake requests "
                                       f"came to {self.uri} within {timeout} s")
                self._cond.wait(left)
            return list(self.requests)

    def close(self) -> None:
        """Stop accepting, close every connection (those still open get a close frame with
        1001 and ``close_timeout`` to answer it) and join every thread. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._thread.join()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        with self._cond:
            conns = list(self._conns)
        closing = [peer for peer in conns if peer.close_gracefully()]
        deadline = monotonic() + self.close_timeout
        for peer in closing:
            peer.wait_done(max(0.0, deadline - monotonic()))
        for peer in conns:
            peer.signal_stop()
        for peer in conns:
            peer.join()
        logger.debug("%r: closed", self)

    # ------------------------------------------------------------- for the peers

    def next_action(self, request: Request) -> Action:
        """Record a handshake request; what it gets instead of a 101, if anything."""
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
            return self._actions.popleft() if self._actions else None

    def ready(self, peer: Peer) -> None:
        """A handshake is done: ``peer`` is next in line for accept()."""
        with self._cond:
            self.peers.append(peer)
            self._ready.append(peer)
            self._cond.notify_all()

    def _serve(self) -> None:
        while True:
            try:
                readable = select.select([self._listener, self._wake_r], [], [])[0]
            except (OSError, ValueError):
                return
            if self._closed or self._wake_r in readable:
                return
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError:
                logger.exception("%r: accept failed", self)
                return
            with self._cond:
                if self._closed:
                    sock.close()
                    return
                peer = Peer(self, sock, address)
                self._conns.append(peer)
            peer.start_reader()
