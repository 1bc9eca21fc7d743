"""connect(): open a client connection (RFC 6455 §4.1)."""
from __future__ import annotations

import functools
import logging
import os
import socket
import ssl as ssl_module
import urllib.parse
from time import monotonic
from typing import Optional, Sequence, Tuple, Union

import certifi

from ._io import LONGEST_WAIT, open_tcp_socket, open_unix_socket, read_head, send_head, set_nodelay
from .connection import Connection, check_options
from .exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from .extensions import DeflateConfig, codec_settings, compression_config
from .handshake import USER_AGENT, Accepted, ClientHandshake
from .http11 import Headers, HeadersLike, Response, parse_response
from .protocol import Protocol, Side
from .proxy import find_proxy, open_tunnel
from .uri import WebSocketURI, parse_uri

__all__ = ["connect", "default_ssl_context", "compression_config"]

logger = logging.getLogger("simplews.client")


def default_ssl_context() -> ssl_module.SSLContext:
    """Certificates verified against the certifi CA bundle, and also against the CAs of
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` (OpenSSL's variables) when set; hostname
    checked. A new context at each call (yours to change)."""
    return _new_ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def _new_ssl_context(cafile: Optional[str], capath: Optional[str]) -> ssl_module.SSLContext:
    context = ssl_module.create_default_context(cafile=certifi.where())
    if cafile or capath:
        context.load_verify_locations(cafile or None, capath or None)
    return context


# What connect() uses without ssl=: one context per CA settings, shared by the connections
# (loading the CA bundles costs tens of ms a connect; a context is safe to share).
_shared_ssl_context = functools.lru_cache(maxsize=4)(_new_ssl_context)


def shared_ssl_context() -> ssl_module.SSLContext:
    """default_ssl_context() made once per value of SSL_CERT_FILE and SSL_CERT_DIR and
    shared: what connect() uses without ``ssl=``. Do not change it."""
    return _shared_ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))


def connect(uri: str, *, subprotocols: Optional[Sequence[str]] = None,
            additional_headers: Optional[HeadersLike] = None, origin: Optional[str] = None,
            compression: Union[str, DeflateConfig, None] = "deflate",
            ssl: Optional[ssl_module.SSLContext] = None, server_hostname: Optional[str] = None,
            sock: Optional[socket.socket] = None, proxy: Union[bool, str, None] = True,
            unix_socket: Optional[str] = None, max_redirects: int = 10,
            open_timeout: Optional[float] = 10, close_timeout: Optional[float] = 10,
            ping_interval: Optional[float] = 20, ping_timeout: Optional[float] = 20,
            max_size: Optional[int] = 2 ** 20, max_queue: Optional[int] = 16,
            user_agent: Optional[str] = USER_AGENT,
            logger: logging.Logger = logger) -> Connection:
    """Open a WebSocket connection to ``uri`` and return it once the handshake is done.

    ``proxy``: True reads HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY, a string is the proxy's
    URL (``http://user:pass@host:port``; ``socks4://``, ``socks5://``, ``socks5h://``
    with ``pip install simplews[socks]``), None never uses one. ``unix_socket``: the path of a
    Unix socket to connect to instead of the URI's host. A redirect (301, 302, 303, 307, 308)
    is followed up to ``max_redirects`` times, never from wss:// to ws://.

    Raises InvalidURI, OSError (e.g. ConnectionRefusedError), ssl.SSLError (e.g. a
    certificate that fails verification), TimeoutError after ``open_timeout``,
    InvalidStatus for an answer other than 101, InvalidHandshake for a bad answer,
    ProxyError / InvalidProxyStatus when the proxy fails.
    """
    wsuri = parse_uri(uri)
    check_options(open_timeout=open_timeout, close_timeout=close_timeout, ping_interval=ping_interval,
                  ping_timeout=ping_timeout, max_size=max_size, max_queue=max_queue)
    if ssl is not None and not wsuri.secure:
        raise ValueError("ssl= was given for a ws:// URI: use wss://")
    if max_redirects < 0:
        raise ValueError("max_redirects must be 0 or more")
    deadline = monotonic() + (open_timeout if open_timeout is not None else LONGEST_WAIT)
    config = compression_config(compression)
    headers = Headers(additional_headers)
    # A given socket goes to one place only; max_redirects=0: a redirect is an InvalidStatus.
    follow = sock is None and unix_socket is None and max_redirects > 0
    for redirects in range(max_redirects + 1):
        handshake = ClientHandshake(wsuri, origin=origin, subprotocols=subprotocols,  # (ValueError
                                    compression=config, additional_headers=headers,  # for a bad one,
                                    user_agent=user_agent)  # before a socket is opened)
        if sock is None:
            sock = _open_socket(wsuri, unix_socket, proxy, deadline, user_agent)
        try:
            opened, response, leftover, accepted = _handshake(sock, wsuri, handshake, ssl,
                                                              server_hostname, deadline)
        except InvalidStatus as exc:
            location = exc.response.headers.get("Location")
            if exc.status not in REDIRECT_STATUSES or location is None or not follow:
                raise
            if redirects == max_redirects:
                raise InvalidHandshake(f"more than {max_redirects} redirects") from exc
            wsuri, headers = _follow_redirect(wsuri, location, headers)
            logger.debug("redirected (HTTP %d) to %s", exc.status, location)
            sock = None
            continue
        break
    protocol = Protocol(Side.CLIENT, max_size=max_size, deflate=accepted.deflate,
                        **codec_settings(config))
    connection = Connection(opened, protocol, request=handshake.request, response=response,
                            subprotocol=accepted.subprotocol, close_timeout=close_timeout,
                            ping_interval=ping_interval, ping_timeout=ping_timeout,
                            max_queue=max_queue, logger=logger, leftover=leftover)
    logger.debug("connected to %s", wsuri.url)  # (no user:password@ in logs)
    return connection


def _open_socket(wsuri: WebSocketURI, unix_socket: Optional[str], proxy: Union[bool, str, None],
                 deadline: float, user_agent: Optional[str]) -> socket.socket:
    """The TCP (or Unix) connection the handshake goes over: direct or through a proxy."""
    timeout = max(0.001, deadline - monotonic())
    found = find_proxy(wsuri, proxy) if unix_socket is None else None
    if found is not None:  # (its errors name the proxy)
        return open_tunnel(found[0], wsuri, deadline, user_agent, source=found[1])
    try:
        if unix_socket is not None:
            return open_unix_socket(unix_socket, timeout=timeout)
        return open_tcp_socket(wsuri.host, wsuri.port, timeout)
    except socket.timeout:  # not a TimeoutError subclass before Python 3.10
        raise TimeoutError(f"timed out connecting to {wsuri.host}:{wsuri.port}") from None


def _handshake(sock: socket.socket, wsuri: WebSocketURI, handshake: ClientHandshake,
               ssl: Optional[ssl_module.SSLContext], server_hostname: Optional[str],
               deadline: float) -> Tuple[socket.socket, Response, bytes, Accepted]:
    """TLS if wss, then the opening handshake (§4.1); the socket is closed on any failure,
    a refusal included (InvalidStatus, with the body of the answer)."""
    try:
        set_nodelay(sock)
        if wsuri.secure:
            context = ssl if ssl is not None else shared_ssl_context()
            sock.settimeout(max(0.001, deadline - monotonic()))
            try:
                sock = context.wrap_socket(sock, server_hostname=server_hostname or wsuri.host)
            except socket.timeout:
                raise TimeoutError("timed out during the TLS handshake") from None
        else:
            sock.settimeout(None)  # blocking from now on: the handshake waits with poll
        try:
            send_head(sock, handshake.request.serialize(), deadline)
        except OSError:
            if wsuri.secure:
                _raise_tls_alert(sock, deadline)
            raise
        try:
            response, leftover = read_head(sock, parse_response, deadline)
        except EOFError as exc:  # (the cause: reconnect() retries a connection lost so)
            raise InvalidHandshake("the server closed the connection during the handshake") from exc
        if response.status != 101:
            response.body = _read_body(sock, response.headers.get("Content-Length"), leftover, deadline)
            raise InvalidStatus(response)
        accepted = handshake.check_response(response)
        if sock.gettimeout() is not None:
            sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock, response, leftover, accepted


def _raise_tls_alert(sock: socket.socket, deadline: float) -> None:
    """Raise the TLS alert the server sent, if one comes within 0.1 s. TLS 1.3: a server
    that refuses our certificate (or its absence) says so in an alert after our side of
    the handshake is done, and closes; sending the request may then meet its reset."""
    try:
        sock.settimeout(max(0.001, min(0.1, deadline - monotonic())))
        sock.recv(1)
    except ssl_module.SSLError as alert:
        if not isinstance(alert, ssl_module.SSLEOFError):
            raise alert from None
    except OSError:
        pass


def _follow_redirect(wsuri: WebSocketURI, location: str,
                     headers: Headers) -> Tuple[WebSocketURI, Headers]:
    """The URI a redirect points to (http and https become ws and wss), and the headers
    to send there: credentials are kept on the same origin only (RFC 6454 §4)."""
    try:
        target = urllib.parse.urljoin(wsuri.url, location)  # ValueError: "ws://[::1/x"
        scheme, sep, rest = target.partition("://")
        target = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme) + sep + rest
        new = parse_uri(target)
    except (ValueError, InvalidURI) as exc:
        raise InvalidHandshake(f"invalid redirect to {location!r}: {exc}") from None
    if wsuri.secure and not new.secure:
        raise InvalidHandshake(f"refused a redirect from wss:// to ws:// ({target})")
    if (new.secure, new.host, new.port) == (wsuri.secure, wsuri.host, wsuri.port):
        if new.user_info is None:
            new = new._replace(user_info=wsuri.user_info)
        return new, headers
    kept = Headers([(name, value) for name, value in headers.items()
                    if name.lower() not in ("authorization", "cookie")])
    return new, kept


def _read_body(sock: socket.socket, length: Optional[str], start: bytes, deadline: float) -> bytes:
    """The body of a refusal, up to 64 KiB, for InvalidStatus (best effort)."""
    if not length or not (length.isascii() and length.isdigit()):  # "\xb2".isdigit() is true
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
