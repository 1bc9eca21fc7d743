"""``simplews URL``: the client's options, connecting, and ``--once``."""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import ssl
import sys
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Tuple

import certifi

from .._io import LONGEST_WAIT
from ..client import connect
from ..connection import Connection
from ..exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from ..http11 import is_token
from ..reconnect import reconnect
from ..uri import parse_uri
from ..version import __version__
from .errors import (EXIT_CODES, INTERRUPTED, OK, TERMINATED, TIMEOUT, USAGE, CliError, by_server,
                     describe_close, fail)
from .session import Console, Session, as_message

DESCRIPTION = """Connect to a WebSocket server.

On a terminal: a prompt; each line typed is sent as a text message, each message received
is printed as it arrives, marked with '< ', and lines starting with '/' are commands (/help).
In a pipe: each line of stdin is sent as a message, messages received are printed one per
line, and at the end of input the connection is closed cleanly (after waiting up to --wait
seconds for replies). Binary messages are printed as '[binary, N bytes] HEX'.
'simplews serve --help': the echo server."""


def _header(text: str) -> Tuple[str, str]:
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or any(c in name for c in " \t\r\n"):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    if "\r" in value or "\n" in value:
        raise argparse.ArgumentTypeError(f"header values cannot contain CR or LF: {text!r}")
    return name, value


def _subprotocol(text: str) -> str:
    if not is_token(text):
        raise argparse.ArgumentTypeError(f"a subprotocol's name is a token (no spaces, commas...): {text!r}")
    return text


def _origin(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise argparse.ArgumentTypeError(f"header values cannot contain CR or LF: {text!r}")
    return text


def _number(convert: Callable[[str], float], unit: str, positive: bool = False) -> Callable[[str], float]:
    """An argparse type: a number of ``unit``, >= 0 (> 0 if ``positive``); seconds are at
    most LONGEST_WAIT (24.8 days: what a wait can take)."""
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {unit}: {text!r}") from None
        if not (value > 0 if positive else value >= 0):  # NaN too
            raise argparse.ArgumentTypeError(f"must be {'>' if positive else '>='} 0: {text!r}")
        if unit == "seconds" and value > LONGEST_WAIT:
            raise argparse.ArgumentTypeError(f"must be {LONGEST_WAIT:.0f} seconds at most: {text!r}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    table = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES)
    p = argparse.ArgumentParser(
        prog="simplews", description=DESCRIPTION, epilog="exit codes:\n" + table,
        usage="%(prog)s [options] URL\n       %(prog)s serve [--host HOST] [--port PORT] "
              "[--tls-cert FILE --tls-key FILE] ...",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add, seconds = p.add_argument, _number(float, "seconds")
    add("url", metavar="URL", help="ws:// or wss:// URL")
    add("-H", "--header", action="append", type=_header, default=[], metavar="'NAME: VALUE'",
        help="extra handshake header (repeatable)")
    add("--subprotocol", action="append", type=_subprotocol, default=[], metavar="NAME",
        help="offer a subprotocol (repeatable, preferred first)")
    add("--origin", type=_origin, metavar="ORIGIN", help="Origin header")
    add("--binary", action="store_true", help="send binary messages instead of text")
    add("--hex", action="store_true", help="each line is hex, sent as a binary message")
    add("--binary-output", choices=("hex", "base64", "raw"), default="hex", help="print received "
        "binary messages in hex (default), base64, or raw (the bytes as they are)")
    add("--base64", dest="binary_output", action="store_const", const="base64", help="--binary-output base64")
    add("--json", action="store_true", help="pretty-print text messages that are JSON")
    add("-t", "--timestamps", action="store_true", help="prefix messages with their arrival time")
    add("--show-control", action="store_true", help="print pings, pongs and the close frame received")
    add("--slash", action="store_true", help="slash commands in a pipe too (always on at a terminal)")
    add("--reconnect", action="store_true", help="reconnect after abnormal closes, with backoff")
    add("--insecure", action="store_true", help="wss://: do not verify the server's certificate")
    add("--cafile", metavar="FILE", help="wss://: trust only the CA certificates in FILE (PEM)")
    add("--cert", metavar="FILE", help="wss://: client certificate (PEM; with its key unless --key)")
    add("--key", metavar="FILE", help="wss://: the client certificate's private key (PEM)")
    add("--no-compression", action="store_true", help="do not offer permessage-deflate")
    add("--ping-interval", type=seconds, metavar="S", help="keepalive pings every S seconds (20; 0 disables)")
    add("--timeout", type=_number(float, "seconds", positive=True), default=10.0, metavar="S",
        help="opening handshake timeout (10 seconds)")
    proxy = p.add_mutually_exclusive_group().add_argument
    proxy("--proxy", default=True, metavar="URL", help="tunnel through this HTTP proxy (http://[user:pass@]"
          "host:port; default: from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY)")
    proxy("--no-proxy", dest="proxy", action="store_const", const=None, help="ignore the proxy environment")
    add("--unix-socket", metavar="PATH", help="connect to a Unix socket (the URL gives Host and path)")
    add("--max-size", type=_number(int, "bytes"), metavar="BYTES",
        help="largest message accepted (1 MiB; 0: no limit)")
    add("--wait", type=seconds, metavar="S", help="wait for replies at the end of input (1 second; "
        "it ends when as many messages came as were sent, a greeting too; what comes until the "
        "server answers the close is printed too); with --once, for the reply (no limit)")
    add("-k", "--keep-open", action="store_true", help="at the end of input, wait for the server to close")
    add("-1", "--once", action="store_true",
        help="send stdin as one message (without its final newline), print one reply, exit")
    add("-v", "--verbose", action="store_true", help="log the handshake and the frames to stderr")
    add("--version", action="version", version=f"simplews {__version__}")
    return p


def _connect_kwargs(args: argparse.Namespace, secure: bool) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {
        "open_timeout": args.timeout, "additional_headers": args.header, "origin": args.origin,
        "subprotocols": args.subprotocol or None, "unix_socket": args.unix_socket, "proxy": args.proxy,
        "compression": None if args.no_compression else "deflate"}
    given = {"ping_interval": args.ping_interval, "max_size": args.max_size}  # 0: None, no limit
    kwargs.update({name: value or None for name, value in given.items() if value is not None})
    if args.key and not args.cert:
        raise CliError(USAGE, "--key goes with --cert")
    if secure and (args.insecure or args.cafile or args.cert):  # else the library's default
        what = f"--cafile {args.cafile}"
        try:
            kwargs["ssl"] = context = ssl.create_default_context(cafile=args.cafile or certifi.where())
            what = f"--cert {args.cert}" + (f" --key {args.key}" if args.key else "")
            if args.cert:
                context.load_cert_chain(args.cert, args.key)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(USAGE, f"cannot load {what}: {getattr(exc, 'strerror', None) or exc}") from None
        if args.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return kwargs


def run(args: argparse.Namespace) -> int:
    """Connect, then run the session (or --once); the exit code. SIGTERM ends it as Ctrl-C
    does (a clean close, the terminal's settings given back), with its own exit code."""
    terminated: List[int] = []

    def terminate(signum: int, frame: Optional[FrameType]) -> None:
        terminated.append(signum)
        signal.signal(signum, signal.SIG_DFL)  # a second one ends the process
        raise KeyboardInterrupt

    previous: Any = None
    with contextlib.suppress(ValueError):  # (only the main thread may set a handler)
        previous = signal.signal(signal.SIGTERM, terminate)
    try:
        code = _run(args)
    finally:
        if previous is not None and not terminated:
            signal.signal(signal.SIGTERM, previous)
    return TERMINATED if terminated and code == INTERRUPTED else code


def _run(args: argparse.Namespace) -> int:
    interactive = not args.once and sys.stdin.isatty() and sys.stdout.isatty()
    console = Console(interactive, args)
    logger = logging.getLogger("simplews")
    logger.propagate = False  # errors are reported by the CLI itself, as one line
    logger.handlers = [console]  # it shows what the options ask for
    logger.setLevel(logging.DEBUG if args.verbose or args.show_control
                    else logging.INFO if args.reconnect else logging.CRITICAL + 1)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        data = sys.stdin.buffer.read() if args.once else b""
        kwargs, session, code = _connect_kwargs(args, parse_uri(args.url).secure), Session(console, args), OK
        for ws in reconnect(args.url, **kwargs) if args.reconnect else [connect(args.url, **kwargs)]:
            for head in (ws.request, ws.response) if args.verbose else ():
                console.head(head)
            if interactive:
                detail = f" (subprotocol: {ws.subprotocol})" if ws.subprotocol else ""
                console.status(f"connected to {args.url}{detail}; Ctrl-D or Ctrl-C to quit")
            code = _once(ws, data, args, console) if args.once else session.run(ws)
            if args.once or code == INTERRUPTED or session.we_closed is not None or session.eof:
                break
        if args.reconnect and code != INTERRUPTED:  # the prompt stayed between connections
            console.end()
    except KeyboardInterrupt:  # while connecting (or waiting to reconnect)
        console.end(erase=False)
        return INTERRUPTED
    except Exception as exc:  # noqa: BLE001 (every failure ends as one line and an exit code)
        if args.verbose and isinstance(exc, InvalidStatus):
            console.head(exc.response)
        return fail(exc, console.status, args.url, args.verbose, args.timeout)
    return code


def _once(ws: Connection, data: bytes, args: argparse.Namespace, console: Console) -> int:
    """--once: send stdin as one message (if any), print the first message received."""
    with ws:
        try:
            if data:
                ws.send(data if args.binary else as_message(data, args))
            message = ws.recv(timeout=args.wait)
        except ValueError as exc:  # --hex: not hex
            return fail(CliError(USAGE, f"cannot send stdin: {exc}"), console.status)
        except TimeoutError:
            return fail(CliError(TIMEOUT, f"no message received within {args.wait:g} s"), console.status)
        except ConnectionClosedOK as exc:
            console.status(f"connection closed by the server before any message: "
                           f"{describe_close(exc.code, exc.reason)}")
            return OK
        except ConnectionClosed as exc:
            return fail(by_server(exc, ws), console.status)
        with contextlib.suppress(BrokenPipeError):
            console.message(message)
    return OK
