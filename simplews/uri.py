"""ws:// and wss:// URIs (RFC 6455 §3)."""
from __future__ import annotations

import functools
import ipaddress
import re
import urllib.parse
from typing import NamedTuple, Optional, Tuple

from .exceptions import InvalidURI

__all__ = ["WebSocketURI", "parse_uri"]

# RFC 3986 §2.2-2.3: reserved and unreserved characters (quote() keeps letters,
# digits and "_.-~" anyway), and "%" so that percent-encoded octets stay.
_URI_CHARACTERS = ":/?#[]@!$&'()*+,;=%"
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+")  # §3.2.2: a host name's characters
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:@]*)(:[0-9]*)?")  # an authority without user info


def hide_credentials(url: str, proxy: bool = False) -> str:
    """``url`` for an error message: what may be its user:password@ becomes ***@. A
    password may hold "/", "?" or "#": up to the last "@", unless what comes before the
    first of them is a host and port (then an "@" further on is the path's or query's;
    a proxy's URL has neither)."""
    scheme, sep, rest = url.partition("://") if "://" in url.partition("@")[0] else ("", "", url)
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        cut = authority.rindex("@")
    elif "@" in rest and (proxy or not _HOST_PORT.fullmatch(authority)):
        cut = rest.rindex("@")
    else:
        return url
    return f"{scheme}{sep}***@{rest[cut + 1:]}"


class WebSocketURI(NamedTuple):
    secure: bool
    host: str
    port: int
    resource_name: str  # path and query, never empty (§3: "/" when the path is empty)
    user_info: Optional[Tuple[str, str]] = None

    @property
    def url(self) -> str:
        """The URI again, without credentials."""
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.resource_name}"

    @property
    def host_header(self) -> str:
        """The Host header (RFC 7230 §5.4): the port only when it is not the default."""
        host = self.bracketed_host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def bracketed_host(self) -> str:
        """The host as a request names it: an IPv6 address in brackets, without its zone
        ID (RFC 6874 §4: it means something on this host only)."""
        return f"[{self.host.partition('%')[0]}]" if ":" in self.host else self.host


@functools.lru_cache(maxsize=64)  # clients reconnect to the same few URIs: 14 us a connect
def parse_uri(uri: str) -> WebSocketURI:
    """Parse ``uri``; raise InvalidURI unless it is an absolute ws:// or wss:// URI
    without a fragment (§3: "Fragment identifiers are meaningless ... MUST NOT be used").
    The result is immutable and cached (the last 64 URIs); an invalid one is never cached.
    Errors show the URI without its credentials."""
    shown = hide_credentials(uri)
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        detail = "" if shown != uri else f": {exc}"  # (urlsplit's may quote a password)
        raise InvalidURI(f"{shown!r} is not a valid URI{detail}") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(f"{shown!r} is not a WebSocket URI: the scheme must be ws or wss")
    if not parts.hostname:
        raise InvalidURI(f"{shown!r} has no host")
    if port == 0:
        raise InvalidURI(f"{shown!r} has port 0, which no server listens on")
    if "[" in parts.netloc:  # RFC 3986 §3.2.2: an IP literal (Python 3.9's urlsplit does not check)
        try:
            ipaddress.IPv6Address(parts.hostname.split("%", 1)[0])
        except ValueError:
            raise InvalidURI(f"{shown!r} has an invalid IPv6 address") from None
        host = parts.hostname.replace("%25", "%", 1)  # RFC 6874: a zone ID, "%25" in a URI
    else:
        try:  # what getaddrinfo() and TLS's SNI do with the name: "a..b" fails with UnicodeError
            host = parts.hostname.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidURI(f"{shown!r} has an invalid host name: {exc}") from None
        if not _REG_NAME.fullmatch(host):
            raise InvalidURI(f"{shown!r} has an invalid host name (a space, '\"', '<', ...)")
    if "#" in uri:
        raise InvalidURI(f"{shown!r} has a fragment, which WebSocket URIs must not have")
    secure = parts.scheme == "wss"
    resource = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    # The request line carries ASCII only (RFC 7230 §3.1.1): an IRI's other characters,
    # and those a URI may not hold (a space, '"', '<', ...), go out percent-encoded as
    # UTF-8 (RFC 3987 §3.1); what is encoded already ("%41") stays as it is.
    resource = urllib.parse.quote(resource, safe=_URI_CHARACTERS)
    user_info = (None if parts.username is None
                 else (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")))
    port = port if port is not None else 443 if secure else 80
    return WebSocketURI(secure, host, port, resource, user_info)
