"""connect(): open a client connection (RFC 6455 §4.1)."""
from __future__ import annotations

import logging
import socket
import ssl as ssl_module
from time import monotonic
from typing import Optional, Sequence, Union

import certifi

from ._io import read_head, set_nodelay
from .connection import Connection
from .exceptions import InvalidHandshake, InvalidStatus
from .extensions import DeflateConfig
from .handshake import USER_AGENT, ClientHandshake
from .http11 import HeadersLike, parse_response
from .protocol import Protocol, Side
from .uri import parse_uri

__all__ = ["connect", "default_ssl_context", "compression_config"]

logger = logging.getLogger("simplews.client")


def default_ssl_context() -> ssl_module.SSLContext:
    """Certificates verified against the certifi CA bundle, hostname checked."""
    return ssl_module.create_default_context(cafile=certifi.where())


def compression_config(compression: Union[str, DeflateConfig, None]) -> Optional[DeflateConfig]:
    """``"deflate"`` (the defaults), a DeflateConfig, or None for no compression."""
    if compression is None or isinstance(compression, DeflateConfig):
        return compression
    if compression == "deflate":
        return DeflateConfig()
    raise ValueError(f"unsupported compression: {compression!r}")


def connect(uri: str, *, subprotocols: Optional[Sequence[str]] = None,
            additional_headers: Optional[HeadersLike] = None, origin: Optional[str] = None,
            compression: Union[str, DeflateConfig, None] = "deflate",
            ssl: Optional[ssl_module.SSLContext] = None, server_hostname: Optional[str] = None,
            sock: Optional[socket.socket] = None, proxy: Union[bool, str, None] = True,
            open_timeout: Optional[float] = 10, close_timeout: Optional[float] = 10,
            ping_interval: Optional[float] = 20, ping_timeout: Optional[float] = 20,
            max_size: Optional[int] = 2 ** 20, max_queue: Optional[int] = 16,
            user_agent: Optional[str] = USER_AGENT,
            logger: logging.Logger = logger) -> Connection:
    """Open a WebSocket connection to ``uri`` and return it once the handshake is done.

    Raises InvalidURI, OSError (e.g. ConnectionRefusedError), ssl.SSLError (e.g. a
    certificate that fails verification), TimeoutError after ``open_timeout``,
    InvalidStatus for an answer other than 101, InvalidHandshake for a bad answer.
    ``proxy`` is accepted for forward compatibility; proxies are not supported yet.
    """
    wsuri = parse_uri(uri)
    if ssl is not None and not wsuri.secure:
        raise ValueError("ssl= was given for a ws:// URI: use wss://")
    deadline = monotonic() + (open_timeout if open_timeout is not None else 1e9)
    config = compression_config(compression)
    try:
        if sock is None:
            sock = socket.create_connection((wsuri.host, wsuri.port), timeout=open_timeout)
    except socket.timeout:  # not a TimeoutError subclass before Python 3.10
        raise TimeoutError(f"timed out connecting to {wsuri.host}:{wsuri.port}") from None
    try:
        set_nodelay(sock)
        if wsuri.secure:
            context = ssl if ssl is not None else default_ssl_context()
            sock.settimeout(max(0.001, deadline - monotonic()))
            try:
                sock = context.wrap_socket(sock, server_hostname=server_hostname or wsuri.host)
            except socket.timeout:
                raise TimeoutError("timed out during the TLS handshake") from None
        handshake = ClientHandshake(wsuri, origin=origin, subprotocols=subprotocols,
                                    compression=config, additional_headers=additional_headers,
                                    user_agent=user_agent)
        sock.settimeout(max(0.001, deadline - monotonic()))
        sock.sendall(handshake.request.serialize())
        try:
            response, leftover = read_head(sock, parse_response, deadline)
        except EOFError:
            raise InvalidHandshake("the server closed the connection during the handshake") from None
        if response.status != 101:
            response.body = _read_body(sock, response.headers.get("Content-Length"), leftover, deadline)
            raise InvalidStatus(response)
        accepted = handshake.check_response(response)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    protocol = Protocol(Side.CLIENT, max_size=max_size, deflate=accepted.deflate,
                        **_codec_settings(config))
    connection = Connection(sock, protocol, request=handshake.request, response=response,
                            subprotocol=accepted.subprotocol, close_timeout=close_timeout,
                            ping_interval=ping_interval, ping_timeout=ping_timeout,
                            max_queue=max_queue, logger=logger, leftover=leftover)
    logger.debug("connected to %s", uri)
    return connection


def _codec_settings(config: Optional[DeflateConfig]) -> dict:
    if config is None:
        return {}
    return {"compress_level": config.compress_level, "mem_level": config.mem_level}


def _read_body(sock: socket.socket, length: Optional[str], start: bytes, deadline: float) -> bytes:
    """The body of a refusal, up to 64 KiB, for InvalidStatus (best effort)."""
    if not length or not length.isdigit():
        return start
    size = min(int(length), 65536)
    body = bytearray(start)
    try:
        while len(body) < size and monotonic() < deadline:
            sock.settimeout(max(0.001, deadline - monotonic()))
            data = sock.recv(size - len(body))
            if not data:
                break
            body += data
    except OSError:
        pass
    return bytes(body[:size])
