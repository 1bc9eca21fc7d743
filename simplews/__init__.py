"""simplews: a threaded, synchronous WebSocket client and server (RFC 6455, RFC 7692).

    import simplews

    with simplews.connect("ws://127.0.0.1:8765/") as ws:
        ws.send("hello")
        print(ws.recv())
"""
from .auth import basic_auth, parse_basic_auth
from .client import connect
from .connection import Connection, broadcast
from .exceptions import *  # noqa: F401,F403
from .exceptions import __all__ as _exceptions_all
from .extensions import DeflateConfig
from .frames import CloseCode, Opcode
from .http11 import Headers, Request, Response
from .protocol import State
from .reconnect import reconnect
from .server import Server, serve
from .version import __version__

__all__ = [
    "__version__",
    "connect",
    "serve",
    "reconnect",
    "broadcast",
    "basic_auth",
    "parse_basic_auth",
    "Server",
    "Connection",
    "DeflateConfig",
    "CloseCode",
    "Opcode",
    "State",
    "Headers",
    "Request",
    "Response",
    *_exceptions_all,
]
