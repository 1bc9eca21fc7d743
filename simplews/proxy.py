"""HTTP proxies for the client: which proxy a URI goes through, and the CONNECT tunnel
(RFC 9110 §9.3.6) that carries ws:// and wss:// alike."""
from __future__ import annotations

import base64
import functools
import os
import socket
import urllib.parse
import urllib.request
from time import monotonic
from typing import Optional, Union

from ._io import read_head
from .exceptions import InvalidHandshake, InvalidProxyStatus, ProxyError
from .http11 import Headers, Request, parse_response
from .uri import WebSocketURI

__all__ = ["proxy_for", "open_tunnel"]

_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
_parse_proxy_response = functools.partial(parse_response, versions=(b"HTTP/1.1", b"HTTP/1.0"))


def proxy_for(uri: WebSocketURI, proxy: Union[bool, str, None]) -> Optional[str]:
    """The proxy URL for ``uri``: ``proxy`` itself when it is a string; with True, the
    environment as requests and urllib read it (HTTPS_PROXY for wss, HTTP_PROXY for ws,
    then ALL_PROXY; NO_PROXY exempts hosts); None or False: no proxy."""
    if isinstance(proxy, str):
        return proxy
    if not proxy or not any(name in os.environ for name in _VARIABLES):
        return None  # the usual case, checked first: getproxies() costs ~50 us a connect
    proxies = urllib.request.getproxies()
    if not proxies or urllib.request.proxy_bypass(uri.host):
        return None
    return proxies.get("https" if uri.secure else "http") or proxies.get("all")


def open_tunnel(proxy_url: str, uri: WebSocketURI, deadline: float,
                user_agent: Optional[str]) -> socket.socket:
    """A TCP connection to the proxy, tunnelled to ``uri``'s host and port by CONNECT.
    Only ``http://`` proxies are supported (a TLS or SOCKS proxy raises ProxyError)."""
    parts = urllib.parse.urlsplit(proxy_url if "://" in proxy_url else "http://" + proxy_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ProxyError(f"unsupported proxy {proxy_url!r}: only http://host:port proxies are")
    timeout = max(0.001, deadline - monotonic())
    try:
        sock = socket.create_connection((parts.hostname, parts.port or 8080), timeout=timeout)
    except socket.timeout:  # not a TimeoutError subclass before Python 3.10
        raise TimeoutError(f"timed out connecting to the proxy {parts.hostname}") from None
    try:
        sock.sendall(_connect_request(uri, parts, user_agent).serialize())
        try:
            response, leftover = read_head(sock, _parse_proxy_response, deadline)
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


def _connect_request(uri: WebSocketURI, proxy: urllib.parse.SplitResult,
                     user_agent: Optional[str]) -> Request:
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    authority = f"{host}:{uri.port}"  # RFC 9110 §9.3.6: CONNECT takes host:port, always with the port
    headers = Headers([("Host", authority)])
    if proxy.username is not None:
        credentials = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
        headers.add("Proxy-Authorization",
                    "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii"))
    if user_agent:
        headers.add("User-Agent", user_agent)
    return Request(authority, headers, method="CONNECT")
