"""The one error tree of simplews: every exception it raises is a WebSocketError (a
timeout is the builtin ``TimeoutError``: nothing here shadows a builtin)."""
from __future__ import annotations

from typing import Any, Protocol

__all__ = ["WebSocketError", "ConnectionClosed", "ConnectionClosedOK", "ConnectionClosedError",
           "InvalidURI", "InvalidHandshake", "InvalidStatus", "InvalidHeader", "HeaderBlockTooLarge",
           "NegotiationError", "ProxyError", "InvalidProxy", "InvalidProxyStatus", "ProtocolError",
           "PayloadTooBig", "ConcurrencyError"]


class HTTPAnswer(Protocol):
    """An http11.Response, as InvalidStatus and InvalidProxyStatus carry it (this module
    imports no other of the package)."""

    status: int
    reason: str
    headers: Any  # http11.Headers
    body: bytes


class WebSocketError(Exception):
    """Base class of every simplews exception."""


class ConnectionClosed(WebSocketError):
    """The connection is closed; ``code`` and ``reason`` are the peer's close
    frame (1005 when it carried no code, 1006 when there was no close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(code, reason)

    def __str__(self) -> str:
        text = f"connection closed with code {self.code}"
        return f"{text}: {self.reason}" if self.reason else text


class ConnectionClosedOK(ConnectionClosed):
    """Closed by a clean closing handshake with code 1000 or 1001 (or none)."""


class ConnectionClosedError(ConnectionClosed):
    """Closed abnormally: an error code, a protocol error or a lost TCP connection."""


class InvalidURI(WebSocketError):
    """The URI is not a valid ws:// or wss:// URI."""


class InvalidHandshake(WebSocketError):
    """The opening handshake failed."""


class InvalidStatus(InvalidHandshake):
    """The server answered the opening handshake with a status other than 101: the
    ``response``, its ``status``."""

    def __init__(self, response: HTTPAnswer) -> None:
        self.response = response
        self.status = response.status
        super().__init__(f"server rejected WebSocket connection: HTTP {response.status}")


class InvalidHeader(InvalidHandshake):
    """A handshake header is missing, malformed or has the wrong value."""


class HeaderBlockTooLarge(InvalidHandshake):
    """The header block is over 64 KiB or 256 headers (a server answers 431)."""


class NegotiationError(InvalidHandshake):
    """The subprotocol or extension negotiation failed."""


class ProxyError(InvalidHandshake):
    """Connecting through the HTTP proxy failed (an unsupported proxy URL, a bad answer)."""


class InvalidProxy(ProxyError):
    """The proxy URL is invalid or unsupported, or needs the socks extra, or a SOCKS proxy
    refused our credentials or the destination: a setting to fix (reconnect() does not
    retry it; an HTTP proxy's refusal is InvalidProxyStatus)."""


class InvalidProxyStatus(ProxyError):
    """The proxy answered the CONNECT request with a status other than 2xx: the
    ``response``, its ``status``."""

    def __init__(self, response: HTTPAnswer) -> None:
        self.response = response
        self.status = response.status
        super().__init__(
            f"proxy rejected the CONNECT request: HTTP {response.status} {response.reason}".rstrip())


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455 / RFC 7692; ``close_code`` is what we send (1002, 1007, ...)."""

    def __init__(self, message: str, close_code: int = 1002) -> None:
        self.close_code = close_code
        super().__init__(message)


class PayloadTooBig(ProtocolError):
    """A message is larger than ``max_size`` (close code 1009)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 1009)


class ConcurrencyError(WebSocketError, RuntimeError):
    """Two threads did something at once that the API contract forbids."""
