"""The opening handshake (RFC 6455 §4), both sides, with RFC 7692 negotiation."""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

from .exceptions import InvalidHeader, InvalidStatus, NegotiationError
from .extensions import DeflateConfig, DeflateParams, client_accept, client_offer, server_accept
from .http11 import Headers, HeadersLike, Request, Response, is_token, join_values, split_tokens
from .uri import WebSocketURI
from .version import __version__

__all__ = ["accept_key", "ClientHandshake", "ServerHandshake", "Accepted", "USER_AGENT"]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # §1.3
USER_AGENT = f"simplews/{__version__}"


def accept_key(key: str) -> str:
    """§4.2.2: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


class Accepted(NamedTuple):
    """What a successful handshake agreed on."""

    subprotocol: Optional[str]
    deflate: Optional[DeflateParams]


def _subprotocols(names: Optional[Sequence[str]]) -> List[str]:
    """§4.1, §11.3.4: each subprotocol's name is a token ("a,b" would be two)."""
    for name in names or ():
        if not is_token(name):
            raise ValueError(f"a subprotocol's name is a token (no spaces, commas...): {name!r}")
    return list(names or [])


class ClientHandshake:
    """The client's request (§4.1) and its check of the server's response."""

    def __init__(self, uri: WebSocketURI, *, origin: Optional[str] = None,
                 subprotocols: Optional[Sequence[str]] = None,
                 compression: Optional[DeflateConfig] = None,
                 additional_headers: Optional[HeadersLike] = None,
                 user_agent: Optional[str] = USER_AGENT) -> None:
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.subprotocols = _subprotocols(subprotocols)
        self.compression = compression
        headers = Headers([("Host", uri.host_header), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                           ("Sec-WebSocket-Key", self.key), ("Sec-WebSocket-Version", "13")])
        if origin is not None:
            headers.add("Origin", origin)
        if self.subprotocols:
            headers.add("Sec-WebSocket-Protocol", ", ".join(self.subprotocols))
        if compression is not None:
            headers.add("Sec-WebSocket-Extensions", client_offer(compression))
        if uri.user_info is not None:
            credentials = ":".join(uri.user_info).encode("utf-8")
            headers.add("Authorization", "Basic " + base64.b64encode(credentials).decode("ascii"))
        if user_agent:
            headers.add("User-Agent", user_agent)
        extra = Headers(additional_headers).items()
        for name in {name.lower() for name, _ in extra}:
            del headers[name]  # the caller's headers win over the defaults, all of them:
        for name, value in extra:  # a name given twice is sent twice (Cookie, say)
            headers.add(name, value)
        self.request = Request(uri.resource_name, headers)

    def check_response(self, response: Response) -> Accepted:
        """§4.1: validate the server's answer; raise InvalidStatus, InvalidHeader or
        NegotiationError if the connection must not be established."""
        if response.status != 101:
            raise InvalidStatus(response)
        fields = response.headers.by_name()
        upgrade, connection = (join_values(fields.get(name)) for name in ("upgrade", "connection"))
        if set(split_tokens(upgrade)) != {"websocket"}:  # "websocket" and nothing else
            raise InvalidHeader(f"invalid Upgrade header: {upgrade!r}")
        if "upgrade" not in split_tokens(connection):  # a token among others
            raise InvalidHeader(f"invalid Connection header: {connection!r}")
        if fields.get("sec-websocket-accept") != [accept_key(self.key)]:
            raise InvalidHeader("invalid Sec-WebSocket-Accept header")
        subprotocol = join_values(fields.get("sec-websocket-protocol"))
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise NegotiationError(f"server chose a subprotocol we did not offer: {subprotocol}")
        return Accepted(subprotocol, client_accept(join_values(fields.get("sec-websocket-extensions")),
                                                   self.compression))


SelectSubprotocol = Callable[[Any, List[str]], Optional[str]]


class ServerHandshake:
    """The server's check of a request (§4.2.1) and its response (§4.2.2)."""

    def __init__(self, *, subprotocols: Optional[Sequence[str]] = None,
                 select_subprotocol: Optional[SelectSubprotocol] = None,
                 origins: Optional[Sequence[Optional[str]]] = None,
                 compression: Optional[DeflateConfig] = None,
                 server_header: Optional[str] = USER_AGENT) -> None:
        self.subprotocols = _subprotocols(subprotocols)
        self.select_subprotocol = select_subprotocol
        self.origins = origins
        self.compression = compression
        self.server_header = server_header

    def accept(self, request: Request, connection: Any = None) -> "tuple[Response, Accepted]":
        """The response to ``request``: 101 and what was agreed, or an error response
        (400, 403, 405, 426) with an Accepted of Nones. With compression, a malformed
        Sec-WebSocket-Extensions header is a 400; a well-formed permessage-deflate offer
        with bad parameters is declined (RFC 7692 §7): 101 without compression."""
        refused = Accepted(None, None)
        fields = request.headers.by_name()
        if request.method != "GET":
            return self.reject(405, "the opening handshake must be a GET request",
                               ("Allow", "GET")), refused  # RFC 7231 §6.5.5: Allow is a MUST
        if request.version != "HTTP/1.1":
            return self.reject(400, "the opening handshake needs HTTP/1.1"), refused
        if len(fields.get("host", ())) != 1:
            return self.reject(400, "missing or repeated Host header"), refused
        if "websocket" not in split_tokens(join_values(fields.get("upgrade"))):
            return self.reject(426, "this is a WebSocket server: Upgrade: websocket expected",
                               ("Upgrade", "websocket"), ("Connection", "Upgrade")), refused
        if "upgrade" not in split_tokens(join_values(fields.get("connection"))):
            return self.reject(400, "missing Connection: Upgrade"), refused
        keys = fields.get("sec-websocket-key", [])
        if len(keys) != 1 or not _is_valid_key(keys[0]):
            return self.reject(400, "missing or invalid Sec-WebSocket-Key"), refused
        if fields.get("sec-websocket-version") != ["13"]:  # §4.2.2: 426 with the versions we support
            return self.reject(426, "unsupported WebSocket version: 13 expected",  # §4.4; RFC 7231
                               ("Sec-WebSocket-Version", "13"),  # §6.5.15: a 426 names the
                               ("Upgrade", "websocket"), ("Connection", "Upgrade")), refused  # upgrade
        if self.origins is not None and join_values(fields.get("origin")) not in self.origins:
            return self.reject(403, "origin not allowed"), refused  # §4.2.2 / §10.2
        response = Response(101, "Switching Protocols", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                                         ("Sec-WebSocket-Accept", accept_key(keys[0]))])
        offered = [p.strip() for p in (join_values(fields.get("sec-websocket-protocol")) or "").split(",")
                   if p.strip()]
        subprotocol = (self.select_subprotocol(connection, offered) if self.select_subprotocol is not None
                       else next((p for p in offered if p in self.subprotocols), None))  # the client's order
        if subprotocol is not None and subprotocol not in offered:  # §4.2.2: one of the client's
            raise ValueError(f"select_subprotocol returned {subprotocol!r}, which the client did not offer")
        if subprotocol is not None:
            response.headers.add("Sec-WebSocket-Protocol", subprotocol)
        deflate = None
        if self.compression is not None:
            try:
                agreed = server_accept(join_values(fields.get("sec-websocket-extensions")), self.compression)
            except NegotiationError as exc:  # §9.1's syntax broken: not a §4.2.1 handshake
                return self.reject(400, f"invalid Sec-WebSocket-Extensions header: {exc}"), refused
            if agreed is not None:
                response.headers.add("Sec-WebSocket-Extensions", agreed[0])
                deflate = agreed[1]
        if self.server_header:
            response.headers.add("Server", self.server_header)
        return response, Accepted(subprotocol, deflate)

    def reject(self, status: int, text: str, *extra_headers: Tuple[str, str]) -> Response:
        """A plain-text error response."""
        server = [("Server", self.server_header)] if self.server_header else []
        headers = Headers([("Content-Type", "text/plain; charset=utf-8"), *server, *extra_headers])
        return Response(status, "", headers, (text + "\n").encode("utf-8"))


def _is_valid_key(key: str) -> bool:
    """§4.2.1: the key is the base64 encoding of 16 bytes."""
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        return False
