"""Exit codes, and the one line printed for each expected failure."""
from __future__ import annotations

import re
import socket
import ssl
import sys
import traceback
from typing import Callable

from ..connection import Connection
from ..exceptions import (ConnectionClosed, ConnectionClosedError, InvalidHandshake, InvalidProxyStatus,
                          InvalidStatus, InvalidURI, PayloadTooBig, ProtocolError, ProxyError, WebSocketError)
from ..frames import CloseCode

OK, ERROR, USAGE, INVALID_URI, CONNECT, TIMEOUT, TLS, HANDSHAKE, CLOSED, INTERRUPTED, TERMINATED = (
    *range(9), 130, 143)

EXIT_CODES = [
    (OK, "success: clean close (1000 or 1001, from either side) or end of input"),
    (ERROR, "unexpected error"),
    (USAGE, "usage error: bad option or input line, unreadable --cafile, --cert or --key"),
    (INVALID_URI, "invalid URI (not ws:// or wss://, bad port, ...)"),
    (CONNECT, "connection failed: refused, unreachable, unknown host"),
    (TIMEOUT, "timeout: opening handshake over --timeout, or no reply within --wait with --once"),
    (TLS, "TLS failure: certificate verification or TLS handshake"),
    (HANDSHAKE, "WebSocket handshake refused (HTTP status shown) or invalid"),
    (CLOSED, "closed by the server with an error code (shown), or abnormally; protocol error"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
    (TERMINATED, "terminated (SIGTERM), after closing as Ctrl-C does"),
]


class CliError(Exception):
    """An expected failure: printed as one line, exits with ``exit_code``."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe_close(code: int | None, reason: str | None = "") -> str:
    """``code 1011 (internal error), reason 'boom'``, described by the library's CloseCode."""
    text = "no close code" if code is None else f"code {code}"
    if code is not None and code in CloseCode._value2member_map_:
        text += f" ({CloseCode(code).description})"
    return f"{text}, reason {reason!r}" if reason else text


def classify(exc: BaseException, uri: str = "", timeout: float | None = None) -> CliError:
    """Map an exception from connect(), send() or recv() to an exit code and one line."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, InvalidURI):
        return CliError(INVALID_URI, f"invalid URI: {exc}")
    if isinstance(exc, InvalidStatus):
        reason = exc.response.reason
        text = f"handshake refused: HTTP {exc.status} {reason}".rstrip()
        body = exc.response.body.decode("utf-8", "replace").strip().split("\n")[0]
        # without what the status line says already ("401 Unauthorized: missing credentials")
        body = re.sub(rf"^({exc.status} ?)?({re.escape(reason)})?(?<=\w)[\s:.-]*", "", body, flags=re.I)
        return CliError(HANDSHAKE, f"{text}: {body}" if body and len(body) <= 200 else text)
    if isinstance(exc, InvalidProxyStatus):
        return CliError(CONNECT, f"the proxy refused the tunnel to {uri}: HTTP {exc.status} "
                                 f"{exc.response.reason}".rstrip())
    if isinstance(exc, ProxyError):
        return CliError(CONNECT, f"proxy error: {exc}")
    if isinstance(exc, InvalidHandshake):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):  # TLS or the network: reported as such
            return classify(cause, uri, timeout)
        return CliError(HANDSHAKE, f"handshake failed: {exc}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return CliError(TLS, f"TLS certificate verification failed for {uri}: {detail}")
    if isinstance(exc, ssl.SSLError):
        return CliError(TLS, f"TLS error with {uri}: {exc.reason or exc}")
    if isinstance(exc, TimeoutError):  # also socket.timeout
        after = f" after {timeout:g} s" if timeout is not None else ""
        return CliError(TIMEOUT, f"timed out{after} opening {uri}")
    if isinstance(exc, ConnectionRefusedError):
        return CliError(CONNECT, f"connection refused: {uri}")
    if isinstance(exc, socket.gaierror):
        return CliError(CONNECT, f"cannot resolve the host of {uri}: {exc.strerror or exc}")
    if isinstance(exc, ConnectionClosed):
        how = "abnormally" if isinstance(exc, ConnectionClosedError) else "during the handshake"
        return CliError(CLOSED, f"connection closed {how}: {describe_close(exc.code, exc.reason)}")
    if isinstance(exc, PayloadTooBig):
        return CliError(CLOSED, f"message too big, connection closed with code 1009 "
                                f"(--max-size raises the limit): {exc}")
    if isinstance(exc, ProtocolError):
        return CliError(CLOSED, f"protocol error, connection closed with code {exc.close_code}: {exc}")
    if isinstance(exc, WebSocketError):
        return CliError(ERROR, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return CliError(CONNECT, f"cannot connect to {uri}: {exc.strerror or str(exc) or type(exc).__name__}")
    return CliError(ERROR, f"unexpected error: {type(exc).__name__}: {exc}")


def by_server(exc: BaseException, ws: Connection) -> BaseException:
    """A close frame the server sent with an error code (4001, 1011) is said as such."""
    if isinstance(exc, ConnectionClosedError) and ws.protocol.close_rcvd and ws.protocol.failed is None:
        return CliError(CLOSED, f"connection closed by the server: {describe_close(exc.code, exc.reason)}")
    return exc


def fail(exc: BaseException, say: Callable[[str], None], uri: str = "", verbose: bool = False,
         timeout: float | None = None) -> int:
    """``say`` the one line for ``exc`` (-v: the traceback of an unexpected error); its exit code."""
    error = classify(exc, uri, timeout)
    if verbose and error.exit_code == ERROR:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    say(f"simplews: {error}")
    return error.exit_code
