"""Proxies for the client: which proxy a URI goes through, and the CONNECT tunnel
(RFC 9110 §9.3.6) that carries ws:// and wss:// alike, or a SOCKS proxy's (socks extra)."""
from __future__ import annotations

import base64
import functools
import os
import socket
import urllib.parse
import urllib.request
from time import monotonic
from typing import Optional, Tuple, Union

from ._io import open_tcp_socket, read_head
from .exceptions import InvalidHandshake, InvalidProxy, InvalidProxyStatus, ProxyError
from .http11 import Headers, Request, Response, parse_response
from .uri import WebSocketURI, hide_credentials

__all__ = ["proxy_for", "find_proxy", "open_tunnel"]

_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
_ENCODED_VARIABLES = tuple(getattr(os.environ, "encodekey", str.encode)(name) for name in _VARIABLES)
_parse_any_response = functools.partial(parse_response, versions=(b"HTTP/1.1", b"HTTP/1.0"))


def _parse_proxy_response(buffer: bytearray) -> Optional[Tuple[Response, int]]:
    """The proxy's final answer: RFC 9110 §15.2, 1xx ones may come first (dropped here)."""
    while True:
        parsed = _parse_any_response(buffer)
        if parsed is None or parsed[0].status >= 200:
            return parsed
        del buffer[:parsed[1]]
_PORTS = {"http": 80, "socks4": 1080, "socks5": 1080, "socks5h": 1080}  # the supported schemes


def proxy_for(uri: WebSocketURI, proxy: Union[bool, str, None]) -> Optional[str]:
    """The proxy URL for ``uri``: ``proxy`` itself when it is a string; with True, the
    environment as requests and urllib read it (HTTPS_PROXY for wss, HTTP_PROXY for ws,
    then ALL_PROXY; NO_PROXY exempts hosts); None or False: no proxy."""
    found = find_proxy(uri, proxy)
    return None if found is None else found[0]


def find_proxy(uri: WebSocketURI, proxy: Union[bool, str, None]) -> Optional[Tuple[str, str]]:
    """proxy_for()'s URL and where it comes from, for errors: the environment variable's
    name, or "" for a URL given as ``proxy``."""
    if isinstance(proxy, str):
        return proxy, ""
    if not proxy or not _proxy_variables_set():
        return None  # the usual case, checked first: getproxies() costs ~50 us a connect
    proxies = urllib.request.getproxies()
    hosts = (uri.host, f"{uri.bracketed_host}:{uri.port}")  # NO_PROXY's entries may name a port
    if not proxies or any(map(urllib.request.proxy_bypass, hosts)):
        return None
    for key in ("https" if uri.secure else "http", "all"):
        url = proxies.get(key)
        if url:
            # urllib lets the lower-case variable win over the upper-case one.
            names = (f"{key}_proxy", f"{key.upper()}_PROXY")
            source = next((name for name in names if os.environ.get(name) == url), None)
            return url, source or "the system proxy settings"
    return None


def _proxy_variables_set() -> bool:
    """Is any of the proxy variables set? Looked up in os.environ's own table of encoded
    names where it has one (CPython's): 0.8 us instead of 6 (six KeyErrors) a connect."""
    table = getattr(os.environ, "_data", None)
    if isinstance(table, dict):
        return any(key in table for key in _ENCODED_VARIABLES)
    return any(name in os.environ for name in _VARIABLES)


def open_tunnel(proxy_url: str, uri: WebSocketURI, deadline: float,
                user_agent: Optional[str], source: str = "") -> socket.socket:
    """A TCP connection to ``uri``'s host and port through the proxy: CONNECT for
    ``http://``, SOCKS for ``socks4://``, ``socks5://``, ``socks5h://`` (the proxy resolves
    the host name). Another scheme (https://) or an invalid URL raises InvalidProxy,
    naming ``source`` (where the URL comes from)."""
    parts, host, port = _split_proxy_url(proxy_url, source)
    timeout = max(0.001, deadline - monotonic())
    if parts.scheme != "http":
        return _open_socks(parts, host, port, uri, timeout, source)
    try:
        sock = open_tcp_socket(host, port, timeout)
    except socket.timeout:  # not a TimeoutError subclass before Python 3.10
        raise TimeoutError(f"timed out connecting to the proxy {host}:{port}") from None
    try:
        sock.sendall(_connect_request(uri, parts, user_agent).serialize())
        try:
            response, leftover = read_head(sock, _parse_proxy_response, deadline)
        except TimeoutError:
            raise TimeoutError(f"timed out waiting for the proxy {host}:{port} to answer CONNECT") from None
        except EOFError:
            raise ProxyError("the proxy closed the connection during CONNECT") from None
        except InvalidHandshake as exc:
            raise ProxyError(f"invalid answer from the proxy: {exc}") from None
        if not 200 <= response.status < 300:
            raise InvalidProxyStatus(response)
        if leftover:  # the server has not spoken yet: nothing may follow the proxy's answer
            raise ProxyError("the proxy sent data after its answer to CONNECT")
    except BaseException:
        sock.close()
        raise
    return sock


def _split_proxy_url(proxy_url: str, source: str) -> Tuple[urllib.parse.SplitResult, str, int]:
    """The parts of an ``http://[user:pass@]host[:port]`` URL (the scheme may be left out),
    its host as getaddrinfo() takes it and its port (the scheme's: 80 for http, as in requests)."""
    where = f" in {source}" if source else ""
    shown = hide_credentials(proxy_url, proxy=True)
    scheme = proxy_url.partition("://")[0].lower() if "://" in proxy_url else "http"
    if scheme not in _PORTS:
        raise InvalidProxy(f"unsupported proxy scheme {scheme!r}{where} ({shown}): "
                         "http://, socks4://, socks5:// and socks5h:// are supported")
    try:  # ValueError: a bad port or IPv6 address; UnicodeError: a bad host name ("a..b")
        parts = urllib.parse.urlsplit(proxy_url if "://" in proxy_url else "http://" + proxy_url)
        port = parts.port or _PORTS[scheme]
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except ValueError as exc:  # (urlsplit's message may quote a password)
        detail = "" if shown != proxy_url else f": {exc}"
        raise InvalidProxy(f"invalid proxy URL{where} ({shown}){detail}") from None
    if not host:
        raise InvalidProxy(f"invalid proxy URL{where} ({shown}): no host")
    return parts, host, port


def _open_socks(parts: urllib.parse.SplitResult, host: str, port: int, uri: WebSocketURI,
                timeout: float, source: str) -> socket.socket:
    """A TCP connection to ``uri`` through a SOCKS proxy, made by python-socks."""
    try:
        from python_socks import ProxyError as SocksError
        from python_socks import ProxyType
        from python_socks.sync import Proxy
    except ImportError:
        where = f" ({source})" if source else ""
        raise InvalidProxy(f"a {parts.scheme}:// proxy{where} needs python-socks: "
                         "pip install simplews[socks]") from None
    user, password = (None if part is None else urllib.parse.unquote(part)
                      for part in (parts.username, parts.password))
    proxy = Proxy(ProxyType.SOCKS4 if parts.scheme == "socks4" else ProxyType.SOCKS5, host, port,
                  user, password, rdns=parts.scheme == "socks5h")
    try:
        return proxy.connect(uri.host, uri.port, timeout=timeout)
    except SocksError as exc:  # refused credentials, or a destination not allowed (SOCKS5 2, 7, 8):
        final = "authentication" in str(exc).lower() or getattr(exc, "error_code", None) in (2, 7, 8)
        error = InvalidProxy if final else ProxyError
        raise error(f"the SOCKS proxy {host}:{port} failed: {exc}") from None


def _connect_request(uri: WebSocketURI, proxy: urllib.parse.SplitResult,
                     user_agent: Optional[str]) -> Request:
    authority = f"{uri.bracketed_host}:{uri.port}"  # RFC 9110 §9.3.6: CONNECT takes host:port, always
    headers = Headers([("Host", authority)])
    if proxy.username is not None:
        credentials = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
        headers.add("Proxy-Authorization",
                    "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii"))
    if user_agent:
        headers.add("User-Agent", user_agent)
    return Request(authority, headers, method="CONNECT")
