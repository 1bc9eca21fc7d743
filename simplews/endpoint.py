"""What serve()'s Server and the WSGI takeover share: the options, the open connections,
max_connections, the upgrade and the handler's run."""
from __future__ import annotations

import functools
import logging
import socket
import threading
from typing import Any, Callable, Optional, Sequence, Set, Tuple, Union

from ._io import format_address, peer_address, send_head
from .connection import Connection, check_options
from .exceptions import ConnectionClosed, ProtocolError
from .extensions import DeflateConfig, codec_settings, compression_config
from .frames import CloseCode
from .handshake import USER_AGENT, Accepted, SelectSubprotocol, ServerHandshake
from .http11 import Request, Response
from .protocol import Protocol, Side, State

__all__ = ["Endpoint", "Handler", "HandshakeInfo"]

logger = logging.getLogger("simplews.server")

Handler = Callable[[Connection], Any]


class HandshakeInfo:
    """What ``process_request`` and ``select_subprotocol`` get as their connection:
    the request and the addresses, before the upgrade."""

    def __init__(self, server: Any, sock: socket.socket, request: Optional[Request] = None,
                 addresses: Optional[Tuple[Any, Any]] = None) -> None:
        self.server = server
        self.request = request
        self._socket = sock
        if addresses is not None:  # read already (socket_addresses): no system call again
            self.local_address, self.remote_address = addresses

    @functools.cached_property  # looked up when first read: most servers never ask
    def local_address(self) -> Any:
        return self._socket.getsockname()

    @functools.cached_property
    def remote_address(self) -> Any:
        """None when the client has reset the connection already."""
        return peer_address(self._socket)


class Endpoint:
    """The server side of WebSocket connections, whatever accepts the TCP connections.
    Options: see serve()."""

    def __init__(self, handler: Handler, *,
                 subprotocols: Optional[Sequence[str]] = None,
                 select_subprotocol: Optional[SelectSubprotocol] = None,
                 origins: Optional[Sequence[Optional[str]]] = None,
                 compression: Union[str, DeflateConfig, None] = "deflate",
                 open_timeout: Optional[float] = 10, close_timeout: Optional[float] = 10,
                 ping_interval: Optional[float] = 20, ping_timeout: Optional[float] = 20,
                 max_size: Optional[int] = 2 ** 20, max_queue: Optional[int] = 16,
                 max_connections: Optional[int] = None,
                 server_header: Optional[str] = USER_AGENT,
                 logger: logging.Logger = logger) -> None:
        check_options(open_timeout=open_timeout, close_timeout=close_timeout, ping_interval=ping_interval,
                      ping_timeout=ping_timeout, max_size=max_size, max_queue=max_queue,
                      max_connections=max_connections)
        self.handler = handler
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_size = max_size
        self.max_queue = max_queue
        self.max_connections = max_connections
        self.logger = logger
        self._compression = compression_config(compression)
        self._handshake = ServerHandshake(subprotocols=subprotocols,
                                          select_subprotocol=select_subprotocol, origins=origins,
                                          compression=self._compression, server_header=server_header)
        self._lock = threading.Lock()
        self._active: Set[Connection] = set()
        self._reserved = 0  # accepted handshakes whose connection is not in _active yet

    @property
    def connections(self) -> Set[Connection]:
        """The connections whose handler is running (open, or closing as it returns): a
        new set at each read, a snapshot safe to iterate while connections come and go."""
        with self._lock:
            return set(self._active)

    def _accept(self, request: Request, info: HandshakeInfo) -> Tuple[Response, Optional[Accepted]]:
        """The handshake's answer to ``request``; with a 101, what was agreed and a slot
        for _upgrade(), counted from before the 101 leaves (a client never sees room that
        isn't): past max_connections, 503. A refusal comes with None."""
        response, accepted = self._handshake.accept(request, info)
        if response.status != 101:
            return response, None
        with self._lock:
            limit = self.max_connections
            if limit is None or len(self._active) + self._reserved < limit:
                self._reserved += 1
                return response, accepted
        return self._handshake.reject(503, "too many connections, try again later"), None

    def _release_slot(self) -> None:
        """Give back a slot from _accept() that no connection took."""
        with self._lock:
            self._reserved -= 1

    def _upgrade(self, sock: socket.socket, request: Request, response: Response,
                 accepted: Accepted, deadline: Optional[float], leftover: bytes = b"",
                 addresses: Optional[Tuple[Any, Any]] = None) -> Connection:
        """On a slot from _accept(): write the 101 (RFC 6455 §4.2.2) before ``deadline``
        and make the server-side Connection, now counted as open; on failure, close ``sock``.
        ``addresses``: the socket's (local, peer), if the caller has them (socket_addresses)."""
        try:
            send_head(sock, response.serialize(), deadline)
            if sock.gettimeout() is not None:
                sock.settimeout(None)  # Connection waits with poll, never with a timeout
            protocol = Protocol(Side.SERVER, max_size=self.max_size, deflate=accepted.deflate,
                                **codec_settings(self._compression))
            connection = Connection(sock, protocol, request=request, response=response,
                                    subprotocol=accepted.subprotocol, close_timeout=self.close_timeout,
                                    ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
                                    max_queue=self.max_queue, logger=self.logger, leftover=leftover,
                                    addresses=addresses)
        except BaseException:
            self._release_slot()
            sock.close()
            raise
        with self._lock:
            self._reserved -= 1
            self._active.add(connection)
        if self.logger.isEnabledFor(logging.INFO):  # formatting costs on every handshake
            self.logger.info("connection open from %s", format_address(connection.remote_address))
        return connection

    def _run_handler(self, connection: Connection) -> None:
        """Run the handler, then close: 1000 when it returns, 1011 (and the traceback
        logged) when it raises (DESIGN §3); the connection no longer counts as open."""
        code, reason = CloseCode.NORMAL_CLOSURE, ""
        try:
            self.handler(connection)
        except Exception as exc:  # (a closed or failed connection: this one's, or another's?)
            if isinstance(exc, (ConnectionClosed, ProtocolError)) and connection.state is not State.OPEN:
                self.logger.info("connection ended in the handler: %s", exc)
            else:
                self.logger.exception("handler failed")
                code, reason = CloseCode.INTERNAL_ERROR, "internal error"
        finally:
            try:
                connection.close(code, reason)
            except Exception:  # never a traceback on stderr or through a WSGI server
                self.logger.exception("unexpected error")
            with self._lock:
                self._active.discard(connection)
