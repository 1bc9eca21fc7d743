"""``simplews serve``: an echo server that logs its connections to stderr."""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import signal
import ssl
import sys
import threading
import time
from types import FrameType
from typing import List, Optional

from .._io import format_address
from ..connection import broadcast
from ..connection import Connection
from ..exceptions import ConnectionClosed
from ..server import Server, serve
from ..version import __version__
from .errors import CONNECT, ERROR, OK, USAGE, describe_close

log = logging.getLogger("simplews.cli")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="simplews serve",
        description="Run a WebSocket echo server: every message is sent back as is (with --broadcast, "
                    "to every client). Connections are logged to stderr. Ctrl-C or SIGTERM stops it, "
                    "closing every connection with 1001 (going away).",
        epilog="exit codes: 0 stopped by Ctrl-C/SIGTERM, 2 usage error (or unreadable certificate), "
               "4 cannot listen on HOST:PORT")
    add = p.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    add("--port", type=_port, default=8765, help="port (default: 8765; 0: any free port)")
    add("--unix-socket", metavar="PATH", help="listen on the Unix socket PATH instead of HOST:PORT")
    add("--tls-cert", metavar="FILE", help="serve wss://: certificate chain (PEM)")
    add("--tls-key", metavar="FILE", help="serve wss://: private key (PEM)")
    add("--subprotocol", action="append", default=[], metavar="NAME",
        help="accept this subprotocol (repeatable)")
    add("--no-compression", action="store_true", help="refuse permessage-deflate")
    add("--broadcast", action="store_true", help="send each message to every client (the sender too)")
    add("--send-on-connect", metavar="TEXT", help="send TEXT to each client as it connects")
    add("--switch-interval", type=_seconds, default=0.1, metavar="SECONDS",
        help="sys.setswitchinterval() while serving (default 0.1: no GIL thrash past ~1,000 busy "
             "connections; 0.005 is Python's own)")
    add("-v", "--verbose", action="store_true", help="log every frame")
    add("--version", action="version", version=f"simplews {__version__}")
    return p


def _port(text: str) -> int:
    with contextlib.suppress(ValueError):
        if 0 <= int(text) <= 65535:
            return int(text)
    raise argparse.ArgumentTypeError(f"a port is 0 to 65535: {text!r}")


def _seconds(text: str) -> float:
    with contextlib.suppress(ValueError):
        if 0 < float(text) < float("inf"):  # (NaN is not)
            return float(text)
    raise argparse.ArgumentTypeError(f"a positive number of seconds: {text!r}")


def echo(args: argparse.Namespace, server: List[Server], ws: Connection) -> None:
    """The handler: greet, echo (or broadcast) each message; log the connection and its end."""
    peer = format_address(ws.remote_address)
    subprotocol = f" (subprotocol {ws.subprotocol})" if ws.subprotocol else ""
    log.info("%s connected: %s%s", peer, ws.request.path if ws.request else "?", subprotocol)
    with contextlib.suppress(ConnectionClosed):
        if args.send_on_connect is not None:
            ws.send(args.send_on_connect)
        for message in ws:
            if args.broadcast:  # skips a client that cannot take it now (logged)
                broadcast(server[0].connections, message)
            else:
                ws.send(message)
    log.info("%s disconnected: %s", peer, describe_close(ws.close_code, ws.close_reason))


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM, then close every connection with 1001; the exit code."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(args.tls_cert) != bool(args.tls_key):
        print("simplews serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return USAGE
    stop = _catch_stop_signals()
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) if args.tls_cert else None
        if context is not None:
            context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        print(f"simplews serve: cannot load the TLS certificate or key: "
              f"{getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return USAGE
    servers: List[Server] = []
    try:
        server = serve(functools.partial(echo, args, servers), args.host, args.port, ssl=context,
                       unix_socket=args.unix_socket, subprotocols=args.subprotocol or None,
                       compression=None if args.no_compression else "deflate",
                       switch_interval=args.switch_interval)
    except OSError as exc:
        where = args.unix_socket or f"{args.host}:{args.port}"
        print(f"simplews serve: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return CONNECT
    servers.append(server)
    scheme, host = "wss" if context else "ws", f"[{args.host}]" if ":" in args.host else args.host
    where = (f"the Unix socket {args.unix_socket} ({scheme})" if args.unix_socket
             else f"{scheme}://{host}:{server.port}/")
    serving = threading.Thread(target=server.serve_forever, name="simplews-serve")
    serving.start()
    log.info("listening on %s (Ctrl-C to stop)", where)
    while not stop and serving.is_alive():
        time.sleep(0.1)  # a signal handler only sets a flag: nothing is interrupted midway
    failed = not stop  # the server's thread ended by itself (its error is logged)
    log.info("shutting down: closing connections with 1001 (going away)")
    server.shutdown()
    serving.join()
    log.info("stopped")
    return ERROR if failed else OK


def _catch_stop_signals() -> List[int]:
    """SIGINT, SIGTERM: the first is noted in the list returned (the main thread polls it), a
    second ends the process. Installed first: a raising handler could strike anywhere."""
    received: List[int] = []

    def note(signum: int, frame: Optional[FrameType]) -> None:
        received.append(signum)
        for each in (signal.SIGINT, signal.SIGTERM):
            signal.signal(each, signal.SIG_DFL)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, note)
    return received
