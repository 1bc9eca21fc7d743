"""WebSockets inside a WSGI application: take over the WSGI server's own socket.

A :class:`WebSocketApp` is a WSGI application: mount it as the whole app, or return it
from a Flask view (``return WebSocketApp(handler, subprotocols=["chat"])``). It works
under the servers that hand the application their client socket, in plain HTTP
(terminate TLS in front): Werkzeug's development server (``environ["werkzeug.socket"]``)
and gunicorn's ``gthread`` worker (``environ["gunicorn.socket"]``). Each WebSocket holds
the server thread that serves it until it closes.

simplews checks the handshake and writes the 101 itself, on a duplicate of the server's
socket (RFC 6455 §4.2.2), runs the handler, and completes the closing handshake. Then TCP
is shut down both ways, so that whatever the server writes next fails with ``EPIPE`` (a
client gone, to Werkzeug and gunicorn) and nothing follows the close frame on the wire;
the server gets a 101 with no body back, for its access log, and closes its descriptor.
"""
from __future__ import annotations

import contextlib
import socket
import ssl
from time import monotonic
from typing import Any, Callable, Dict, Iterable, List
from urllib.parse import quote

from ._io import format_address
from .endpoint import Endpoint, HandshakeInfo
from .handshake import Accepted
from .http11 import Headers, Request, Response

__all__ = ["WebSocketApp", "request_from_environ"]

StartResponse = Callable[..., Any]

#: The environ keys under which WSGI servers expose the client's socket.
SOCKET_KEYS = ("werkzeug.socket", "gunicorn.socket")
# Headers that the WSGI server owns in a refusal (PEP 3333 forbids hop-by-hop
# headers; the server writes its own Server header). Upgrade stays: a 426 must
# carry it (RFC 7231 §6.5.15), and both servers pass it through.
_SERVER_OWNED = {"connection", "server", "content-length"}


class WebSocketApp(Endpoint):
    """A WSGI application that upgrades each request to a WebSocket and runs
    ``handler(ws)`` on it, in the WSGI server's thread, like ``serve()`` does.

    Options are those of ``serve()``; ``max_connections`` answers 503 before the
    upgrade once that many WebSockets are open (in this process). The handler's
    ``ws.environ`` is the WSGI environ (under Flask, ``flask.request`` works too);
    ``select_subprotocol(info, offered)`` gets ``info.request``, ``info.environ``,
    the addresses, and this app as ``info.server``.
    """

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI entry point: refuse with an HTTP error, or upgrade, run the handler
        and return once the connection is closed."""
        request = request_from_environ(environ)
        sock = next((environ[key] for key in SOCKET_KEYS if environ.get(key) is not None), None)
        if sock is None or isinstance(sock, ssl.SSLSocket):
            self.logger.error("cannot take over this request's socket: %s", "TLS in the WSGI server "
                              "is not supported" if sock is not None else "the WSGI server does not "
                              "expose it (Werkzeug or gunicorn gthread needed)")
            return _respond(start_response, self._handshake.reject(500, "WebSocket not available"))
        info = HandshakeInfo(self, sock, request)
        info.environ = environ  # type: ignore[attr-defined]
        response, accepted = self._accept(request, info)
        if accepted is None:
            self.logger.info("refused %s: %d %s", format_address(info.remote_address),
                             response.status, response.reason)
            return _respond(start_response, response)
        self._run(sock, request, response, accepted, environ)
        # The connection is shut down: the server can no longer write this response.
        start_response("101 Switching Protocols", [])
        return []

    def _run(self, sock: socket.socket, request: Request, response: Response,
             accepted: Accepted, environ: Dict[str, Any]) -> None:
        """Upgrade, run the handler, close; TCP is shut down when this returns."""
        # A duplicate descriptor: Connection closes its own, the server closes its.
        # What the client sent before the 101 (RFC 6455 §4.1: it must wait) stays in
        # the server's read buffer, out of reach (docs/flask.rst says so).
        dup = None
        try:
            dup = sock.dup()
            deadline = None if self.open_timeout is None else monotonic() + self.open_timeout
            connection = self._upgrade(dup, request, response, accepted, deadline)
        except BaseException as exc:
            if dup is None:
                self._release_slot()  # _upgrade() releases it (and closes dup) itself
            _shutdown(sock)
            if not isinstance(exc, OSError):  # socket.timeout included
                raise
            self.logger.info("opening handshake failed: %s", exc)
            return
        connection.environ = environ  # type: ignore[attr-defined]
        try:
            self._run_handler(connection)
        finally:
            # The connection shut TCP down as it closed; again here, so that no path
            # (a close timeout, an error) lets the server write after the close.
            _shutdown(sock)


def request_from_environ(environ: Dict[str, Any]) -> Request:
    """The HTTP request as the client sent it, rebuilt from a WSGI environ (header
    names in title case; a header the client repeated comes as one joined value)."""
    headers = Headers()
    for key, value in environ.items():
        if key.startswith("HTTP_") or (key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value):
            headers.add(key.replace("HTTP_", "", 1).replace("_", "-").title(), str(value))
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not target:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        target = quote(path.encode("latin-1"), safe="/;=,:@!$&'()*+~")  # PEP 3333: latin-1
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
    return Request(target, headers, environ.get("REQUEST_METHOD", "GET"),
                   environ.get("SERVER_PROTOCOL", "HTTP/1.1"))


def _respond(start_response: StartResponse, response: Response) -> List[bytes]:
    """Send a refusal through the WSGI server."""
    headers = [(name, value) for name, value in response.headers.items()
               if name.lower() not in _SERVER_OWNED]
    headers.append(("Content-Length", str(len(response.body))))
    start_response(f"{response.status} {response.reason}", headers)
    return [response.body]


def _shutdown(sock: socket.socket) -> None:
    """End the TCP connection both ways (RFC 6455 §7.1.1: the server closes first)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
