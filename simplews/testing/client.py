"""RawClient: a WebSocket client that a test steers, for testing WebSocket servers.

    with RawClient(server_uri) as raw:
        raw.send_raw(b"\\x81\\x05hello")          # unmasked: a server must fail it
        assert raw.wait_closed() == (1002, "unmasked frame from the client")

It makes a real opening handshake, then sends what the test says, well-formed or not
(``send_frame``, ``send_raw``), records every frame the server sends (``frames``) and
reports how the server ended the connection (``wait_closed()``). One reader thread
per client (see wire.py); ``close()`` or the end of the ``with`` block joins it.
"""
from __future__ import annotations

import socket
import ssl as ssl_module
from time import monotonic
from typing import Optional, Sequence, Union

from simplews.client import shared_ssl_context
from simplews.exceptions import InvalidHandshake
from simplews.extensions import DeflateConfig, codec_settings, compression_config
from simplews.handshake import ClientHandshake
from simplews._io import LONGEST_WAIT, read_head
from simplews.http11 import HeadersLike, parse_response
from simplews.protocol import Protocol, Side
from simplews.uri import parse_uri

from .wire import DEFAULT_TIMEOUT, WireEnd

__all__ = ["RawClient"]


class RawClient(WireEnd):
    """A client connection to ``uri``, open once the constructor returns (it raises
    InvalidStatus if the server refuses, TimeoutError after ``open_timeout``).

    ``ssl`` defaults to a verifying context (certifi's CA bundle) for wss://;
    ``compression`` is None (no offer) unless given; ``max_size`` None accepts
    anything. ``request`` / ``response`` are the handshake's, ``subprotocol`` the one
    agreed. Frames are masked as a client's must be, unless ``send_frame(masked=False)``.
    """

    side = Side.CLIENT

    def __init__(self, uri: str, *, ssl: Optional[ssl_module.SSLContext] = None,
                 server_hostname: Optional[str] = None, subprotocols: Optional[Sequence[str]] = None,
                 additional_headers: Optional[HeadersLike] = None, origin: Optional[str] = None,
                 compression: Union[str, DeflateConfig, None] = None, max_size: Optional[int] = None,
                 open_timeout: Optional[float] = 10.0) -> None:
        wsuri = parse_uri(uri)
        config = compression_config(compression)
        handshake = ClientHandshake(wsuri, origin=origin, subprotocols=subprotocols,
                                    compression=config, additional_headers=additional_headers)
        deadline = monotonic() + (LONGEST_WAIT if open_timeout is None else open_timeout)
        sock = socket.create_connection((wsuri.host, wsuri.port), timeout=open_timeout)
        try:
            if wsuri.secure:
                context = ssl if ssl is not None else shared_ssl_context()
                sock = context.wrap_socket(sock, server_hostname=server_hostname or wsuri.host)
            sock.sendall(handshake.request.serialize())
            try:  # (the whole answer by the deadline, not each read)
                response, leftover = read_head(sock, parse_response, deadline)
            except EOFError:
                raise InvalidHandshake("connection closed during the opening handshake") from None
            accepted = handshake.check_response(response)
            sock.settimeout(None)
        except (socket.timeout, TimeoutError):  # (socket.timeout is not one before Python 3.10)
            sock.close()
            raise TimeoutError(f"no handshake answer from {uri} within {open_timeout} s") from None
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, name=f"simplews-testing-raw-client-{sock.getsockname()[1]}",
                         max_size=max_size)
        self.uri = uri
        self.request = handshake.request
        self.response = response
        self.subprotocol = accepted.subprotocol
        self.protocol = Protocol(Side.CLIENT, max_size=max_size, deflate=accepted.deflate,
                                 **codec_settings(config))
        self._leftover = leftover
        self.start_reader()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close (a closing handshake if the connection is still open) and join the reader."""
        if self.closed:
            return
        if self.close_gracefully(1000):
            self.wait_done(DEFAULT_TIMEOUT)
        self._stop()

    def __repr__(self) -> str:
        return f"<RawClient {self.uri} {'closed' if self.closed else 'open'}>"

    def _open(self) -> Optional[bytes]:
        return self._leftover
