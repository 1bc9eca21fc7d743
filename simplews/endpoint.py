"""What serve()'s Server and the WSGI takeover share: the handler, the handshake and
connection options, the open connections, max_connections, and the upgrade itself."""
from __future__ import annotations

import functools
import logging
import socket
import threading
from typing import Any, Callable, Optional, Sequence, Set, Union

from ._io import send_head
from .connection import Connection
from .exceptions import ConnectionClosed, ProtocolError
from .extensions import DeflateConfig, codec_settings, compression_config
from .frames import CloseCode
from .handshake import USER_AGENT, Accepted, SelectSubprotocol, ServerHandshake
from .http11 import Request, Response
from .protocol import Protocol, Side

__all__ = ["Endpoint", "Handler", "HandshakeInfo"]

logger = logging.getLogger("simplews.server")

Handler = Callable[[Connection], Any]


class HandshakeInfo:
    """What ``process_request`` and ``select_subprotocol`` get as their connection:
    the request and the addresses, before the upgrade."""

    def __init__(self, server: Any, sock: socket.socket, request: Optional[Request] = None) -> None:
        self.server = server
        self.request = request
        self._socket = sock

    # Looked up when first read, during the handshake: most servers never ask.
    @functools.cached_property
    def local_address(self) -> Any:
        return self._socket.getsockname()

    @functools.cached_property
    def remote_address(self) -> Any:
        return self._socket.getpeername()


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
        """The open connections (a copy)."""
        with self._lock:
            return set(self._active)

    def _reserve_slot(self) -> bool:
        """Count one more connection unless max_connections is reached. The slot counts
        from before the 101 leaves: a client never sees room that isn't."""
        with self._lock:
            if self.max_connections is not None and \
                    len(self._active) + self._reserved >= self.max_connections:
                return False
            self._reserved += 1
            return True

    def _upgrade(self, sock: socket.socket, request: Request, response: Response,
                 accepted: Accepted, leftover: bytes = b"",
                 deadline: Optional[float] = None) -> Connection:
        """On a slot from _reserve_slot(): write the 101 (RFC 6455 §4.2.2) before
        ``deadline`` if given, and make the server-side Connection, now counted as open."""
        try:
            send_head(sock, response.serialize(), deadline)
            if sock.gettimeout() is not None:
                sock.settimeout(None)  # Connection waits with poll, never with a timeout
            protocol = Protocol(Side.SERVER, max_size=self.max_size, deflate=accepted.deflate,
                                **codec_settings(self._compression))
            connection = Connection(sock, protocol, request=request, response=response,
                                    subprotocol=accepted.subprotocol, close_timeout=self.close_timeout,
                                    ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
                                    max_queue=self.max_queue, logger=self.logger, leftover=leftover)
        except BaseException:
            self._release_slot()
            raise
        with self._lock:
            self._reserved -= 1
            self._active.add(connection)
        return connection

    def _release_slot(self) -> None:
        """Give back a slot from _reserve_slot() that no connection took."""
        with self._lock:
            self._reserved -= 1

    def _run_handler(self, connection: Connection) -> None:
        """Run the handler, then close: 1000 when it returns, 1011 (and the traceback
        logged) when it raises (DESIGN §3); the connection no longer counts as open."""
        try:
            self.handler(connection)
        except (ConnectionClosed, ProtocolError) as exc:
            self.logger.info("connection ended in the handler: %s", exc)
        except Exception:
            self.logger.exception("handler failed")
            connection.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            connection.close()
            with self._lock:
                self._active.discard(connection)
