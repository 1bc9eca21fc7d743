"""The ``simplews`` command (and ``python -m simplews``).

* ``simplews URL``: a WebSocket client in the spirit of ``wscat`` and
  ``websocat``. On a terminal it shows a prompt, sends each line typed as a
  message and prints each message received as it arrives, without breaking
  the line being typed. In a pipe it sends each line of stdin, prints the
  replies, and on end of input closes the connection cleanly.
* ``simplews serve``: an echo server, the quickest way to try the library.

Expected failures (refused connection, refused handshake, TLS verification,
abnormal close, timeout, invalid URI) end with one line on stderr and an exit
code that tells them apart; see ``EXIT_CODES``.
"""
from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import socket
import ssl
import sys
import textwrap
import threading
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple, Union

import simplews
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidProxyStatus,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
    ProtocolError,
    ProxyError,
    WebSocketError,
)
from ._io import format_address
from .uri import parse_uri
from .version import __version__

__all__ = ["main", "EXIT_CODES"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INVALID_URI = 3
EXIT_CONNECT = 4
EXIT_TIMEOUT = 5
EXIT_TLS = 6
EXIT_HANDSHAKE = 7
EXIT_CLOSED = 8
EXIT_INTERRUPTED = 130

EXIT_CODES: List[Tuple[int, str]] = [
    (EXIT_OK, "success: clean close (1000 or 1001, from either side) or end of input"),
    (EXIT_ERROR, "unexpected error"),
    (EXIT_USAGE, "usage error: bad option, unreadable --cafile or TLS certificate"),
    (EXIT_INVALID_URI, "invalid URI (not ws:// or wss://, bad port, ...)"),
    (EXIT_CONNECT, "connection failed: refused, unreachable, unknown host"),
    (EXIT_TIMEOUT, "timeout: opening handshake over --timeout, or no reply within --wait with --once"),
    (EXIT_TLS, "TLS failure: certificate verification or TLS handshake"),
    (EXIT_HANDSHAKE, "WebSocket handshake refused (HTTP status shown) or invalid"),
    (EXIT_CLOSED, "connection closed abnormally (close code shown), protocol error"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
]

CLOSE_CODE_NAMES: Dict[int, str] = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status code",
    1006: "connection lost",
    1007: "invalid data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failure",
}

PROMPT = "> "

Message = Union[str, bytes]


class UsageError(Exception):
    """A problem with the command line found after argparse (exit code 2)."""


class CliError(Exception):
    """An expected failure: printed as one line, exits with ``exit_code``."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Wakeup(Exception):
    """Raised in the main thread (by a SIGUSR1 handler) to stop reading stdin
    when the connection ends while the user is typing."""


class _Stop(Exception):
    """Raised in the main thread by SIGINT/SIGTERM to stop the echo server."""


def describe_close(code: Optional[int], reason: str = "") -> str:
    """``code 1011 (internal error), reason 'boom'``."""
    if code is None:
        text = "no close code"
    else:
        name = CLOSE_CODE_NAMES.get(code)
        text = f"code {code} ({name})" if name else f"code {code}"
    if reason:
        text += f", reason {reason!r}"
    return text


def _exit_code_table() -> str:
    return "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES)


# ---------------------------------------------------------------------------
# errors


def classify(exc: BaseException, uri: str = "", timeout: Optional[float] = None) -> CliError:
    """Map an exception from connect(), send() or recv() to an exit code and one line."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, InvalidURI):
        return CliError(EXIT_INVALID_URI, f"invalid URI: {exc}")
    if isinstance(exc, InvalidStatus):
        response = exc.response
        reason = getattr(response, "reason", "") or ""
        text = f"handshake refused: HTTP {response.status} {reason}".rstrip()
        body = getattr(response, "body", b"") or b""
        first = body.decode("utf-8", "replace").strip().splitlines()[:1]
        if first and len(first[0]) <= 200:
            text += f": {first[0]}"
        return CliError(EXIT_HANDSHAKE, text)
    if isinstance(exc, InvalidProxyStatus):
        return CliError(EXIT_CONNECT, f"the proxy refused the tunnel to {uri}: HTTP "
                                      f"{exc.status} {exc.response.reason}".rstrip())
    if isinstance(exc, ProxyError):
        return CliError(EXIT_CONNECT, f"proxy error: {exc}")
    if isinstance(exc, InvalidHandshake):
        cause = exc.__cause__ or exc.__context__
        # A handshake error caused by TLS or the network is reported as such.
        if isinstance(cause, (ssl.SSLError, OSError)) and not isinstance(cause, WebSocketError):
            return classify(cause, uri, timeout)
        return CliError(EXIT_HANDSHAKE, f"handshake failed: {exc}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return CliError(EXIT_TLS, f"TLS certificate verification failed for {uri}: {detail}")
    if isinstance(exc, ssl.SSLError):
        detail = exc.reason or str(exc)
        return CliError(EXIT_TLS, f"TLS error with {uri}: {detail}")
    if isinstance(exc, TimeoutError):  # also socket.timeout
        after = f" after {timeout:g} s" if timeout is not None else ""
        return CliError(EXIT_TIMEOUT, f"timed out{after} opening {uri}")
    if isinstance(exc, ConnectionRefusedError):
        return CliError(EXIT_CONNECT, f"connection refused: {uri}")
    if isinstance(exc, socket.gaierror):
        return CliError(EXIT_CONNECT, f"cannot resolve the host of {uri}: {exc.strerror or exc}")
    if isinstance(exc, ConnectionClosedError):
        return CliError(EXIT_CLOSED, f"connection closed abnormally: {describe_close(exc.code, exc.reason)}")
    if isinstance(exc, ConnectionClosedOK):
        return CliError(EXIT_CLOSED, f"connection closed during the handshake: {describe_close(exc.code, exc.reason)}")
    if isinstance(exc, PayloadTooBig):
        return CliError(EXIT_CLOSED, f"message too big, connection closed with code 1009 "
                                     f"(--max-size raises the limit): {exc}")
    if isinstance(exc, ProtocolError):
        return CliError(EXIT_CLOSED, f"protocol error, connection closed with code "
                                     f"{exc.close_code}: {exc}")
    if isinstance(exc, WebSocketError):
        return CliError(EXIT_ERROR, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        detail = exc.strerror or str(exc) or type(exc).__name__
        return CliError(EXIT_CONNECT, f"cannot connect to {uri}: {detail}")
    return CliError(EXIT_ERROR, f"unexpected error: {type(exc).__name__}: {exc}")


def _fail(error: CliError, verbose: bool = False, exc: Optional[BaseException] = None) -> int:
    if verbose and exc is not None and error.exit_code == EXIT_ERROR:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"simplews: {error}", file=sys.stderr, flush=True)
    return error.exit_code


# ---------------------------------------------------------------------------
# terminal output


def _find_forced_redisplay(readline: Any) -> Optional[Callable[[], Any]]:
    """readline's rl_forced_update_display(), which Python does not expose:
    it redraws the prompt and the line being edited with the cursor where it was."""
    if os.environ.get("SIMPLEWS_NO_RL_REDISPLAY"):
        return None
    try:
        import ctypes

        path = getattr(readline, "__file__", None)
        lib = ctypes.CDLL(path) if path else ctypes.CDLL(None)
        function = lib.rl_forced_update_display
        function.restype = ctypes.c_int
        function.argtypes = []
        return function  # type: ignore[no-any-return]
    except Exception:
        return None


class Console:
    """Prints messages and status lines; on a terminal, keeps the prompt and
    the partial line typed by the user intact below what it prints."""

    def __init__(self, interactive: bool, binary_format: str = "hex") -> None:
        self.interactive = interactive
        self.binary_format = binary_format
        self.lock = threading.Lock()
        self.reading = False  # the main thread is inside input()
        self.readline: Any = None
        self._redisplay: Optional[Callable[[], Any]] = None
        if interactive:
            try:
                import readline
            except ImportError:
                pass
            else:
                self.readline = readline
                self._redisplay = _find_forced_redisplay(readline)

    def format_message(self, message: Message) -> str:
        if isinstance(message, str):
            text = message
        else:
            data = bytes(message)
            if self.binary_format == "base64":
                shown = base64.b64encode(data).decode("ascii")
            else:
                shown = data.hex()
            text = f"[binary, {len(data)} bytes] {shown}".rstrip()
        return f"< {text}" if self.interactive else text

    def message(self, message: Message) -> None:
        self.write(self.format_message(message), sys.stdout)

    def status(self, text: str) -> None:
        self.write(text, sys.stderr)

    def write(self, text: str, stream: TextIO) -> None:
        with self.lock:
            if self.interactive and self.reading:
                # Erase the prompt line, print above it, draw it again.
                sys.stdout.write("\r\x1b[K")
                sys.stdout.flush()
                stream.write(text + "\n")
                stream.flush()
                self._redraw()
            else:
                stream.write(text + "\n")
                stream.flush()

    def _redraw(self) -> None:
        if self._redisplay is not None:
            self._redisplay()
            return
        line = ""
        if self.readline is not None:
            try:
                line = self.readline.get_line_buffer()
            except Exception:
                line = ""
        sys.stdout.write(PROMPT + line)
        sys.stdout.flush()

    def end_prompt_line(self) -> None:
        """After an interrupted input(): erase the dangling prompt."""
        if self.interactive:
            with self.lock:
                sys.stdout.write("\r\x1b[K")
                sys.stdout.flush()


class _ConsoleLogHandler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.status(self.format(record))
        except Exception:
            self.handleError(record)


def _setup_client_logging(verbose: bool, console: Console) -> None:
    logger = logging.getLogger("simplews")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = False
    if verbose:
        handler: logging.Handler = _ConsoleLogHandler(console)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    else:
        # The library prints nothing; errors are reported by the CLI itself.
        logger.addHandler(logging.NullHandler())
        logger.setLevel(logging.CRITICAL + 1)


# ---------------------------------------------------------------------------
# client


def _header(text: str) -> Tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n"):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    value = value.strip()
    if "\r" in value or "\n" in value:
        raise argparse.ArgumentTypeError(f"header values cannot contain CR or LF: {text!r}")
    return name, value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of bytes: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simplews",
        usage="%(prog)s [options] URL\n       %(prog)s serve [--host HOST] [--port PORT] "
              "[--tls-cert FILE --tls-key FILE] ...",
        description=textwrap.dedent("""\
            Connect to a WebSocket server.

            On a terminal: a prompt; each line typed is sent as a text message and
            each message received is printed as it arrives, marked with '< '.
            In a pipe: each line of stdin is sent as a message, messages received
            are printed one per line, and at the end of input the connection is
            closed cleanly (after waiting up to --wait seconds for replies).
            Binary messages are printed as '[binary, N bytes] HEX'.

            Run 'simplews serve --help' for the echo server."""),
        epilog="exit codes:\n" + _exit_code_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="ws:// or wss:// URL")
    parser.add_argument("-H", "--header", action="append", type=_header, default=[],
                        metavar="'NAME: VALUE'", help="extra handshake header (repeatable)")
    parser.add_argument("--subprotocol", action="append", default=[], metavar="NAME",
                        help="offer this subprotocol (repeatable, in order of preference)")
    parser.add_argument("--origin", metavar="ORIGIN", help="Origin header")
    parser.add_argument("--binary", action="store_true",
                        help="send lines (or stdin with --once) as binary messages")
    parser.add_argument("--base64", dest="binary_format", action="store_const", const="base64",
                        default="hex", help="print received binary messages as base64, not hex")
    parser.add_argument("--insecure", action="store_true",
                        help="wss://: do not verify the server's certificate")
    parser.add_argument("--cafile", metavar="FILE",
                        help="wss://: trust only the CA certificates in FILE (PEM)")
    parser.add_argument("--no-compression", action="store_true",
                        help="do not offer permessage-deflate")
    parser.add_argument("--ping-interval", type=_seconds, metavar="SECONDS",
                        help="keepalive ping interval (default: 20; 0 disables)")
    parser.add_argument("--timeout", type=_positive_seconds, default=10.0, metavar="SECONDS",
                        help="timeout of the opening handshake (default: 10)")
    parser.add_argument("--unix-socket", metavar="PATH",
                        help="connect to the Unix socket PATH (the URL gives Host and path)")
    proxy = parser.add_mutually_exclusive_group()
    proxy.add_argument("--proxy", metavar="URL",
                       help="HTTP proxy (http://[user:pass@]host:port) to tunnel through with "
                            "CONNECT (default: HTTPS_PROXY/HTTP_PROXY/ALL_PROXY, NO_PROXY)")
    proxy.add_argument("--no-proxy", action="store_true", help="ignore the proxy environment")
    parser.add_argument("--max-size", type=_size, metavar="BYTES",
                        help="largest message accepted (default: 1 MiB; 0: no limit)")
    parser.add_argument("--wait", type=_seconds, metavar="SECONDS",
                        help="at the end of input, wait up to SECONDS for replies before "
                             "closing; stops waiting as soon as there are as many replies as "
                             "messages sent (default: 1). With --once: how long to wait for "
                             "the reply (default: no limit)")
    parser.add_argument("-k", "--keep-open", action="store_true",
                        help="at the end of input, keep printing messages until the server "
                             "closes the connection (or Ctrl-C)")
    parser.add_argument("-1", "--once", action="store_true",
                        help="send all of stdin as one message (without its final newline "
                             "in text mode; nothing if stdin is empty), print the first "
                             "message received, close, exit")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log the handshake and the frames ('>' sent, '<' received) "
                             "to stderr")
    parser.add_argument("--version", action="version", version=f"simplews {__version__}")
    return parser


def _ssl_context(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    if not (args.insecure or args.cafile):
        return None  # the library's default: verified against certifi's CA bundle
    try:
        context = ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load --cafile {args.cafile}: {getattr(exc, 'strerror', None) or exc}") from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connect_kwargs(args: argparse.Namespace, secure: bool) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {"open_timeout": args.timeout}
    if args.header:
        kwargs["additional_headers"] = list(args.header)
    if args.subprotocol:
        kwargs["subprotocols"] = list(args.subprotocol)
    if args.origin is not None:
        kwargs["origin"] = args.origin
    if args.no_compression:
        kwargs["compression"] = None
    if args.ping_interval is not None:
        kwargs["ping_interval"] = args.ping_interval or None
    if args.max_size is not None:
        kwargs["max_size"] = args.max_size or None
    if args.unix_socket:
        kwargs["unix_socket"] = args.unix_socket
    if args.proxy or args.no_proxy:
        kwargs["proxy"] = args.proxy  # None with --no-proxy
    if secure:
        context = _ssl_context(args)
        if context is not None:
            kwargs["ssl"] = context
    return kwargs


def _strip_newline(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def _is_clean(code: Optional[int]) -> bool:
    return code in (1000, 1001, 1005)


class ClientSession:
    """Line mode and interactive mode: the main thread reads stdin and sends,
    a receiver thread prints what arrives."""

    def __init__(self, ws: Any, console: Console, args: argparse.Namespace) -> None:
        self.ws = ws
        self.console = console
        self.args = args
        self.interactive = console.interactive
        self.cond = threading.Condition()
        self.sent = 0
        self.received = 0
        self.done = False  # the receiver thread has finished
        self.closed_exc: Optional[ConnectionClosed] = None
        self.error: Optional[BaseException] = None
        self.we_closed = False
        self.in_input = False
        self.main_ident = threading.get_ident()
        self.can_wake = False

    # receiver thread

    def receive(self) -> None:
        try:
            while True:
                message = self.ws.recv()
                self.console.message(message)
                with self.cond:
                    self.received += 1
                    self.cond.notify_all()
        except ConnectionClosed as exc:
            self.closed_exc = exc
        except BaseException as exc:
            self.error = exc
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()
            if self.can_wake:
                try:
                    signal.pthread_kill(self.main_ident, signal.SIGUSR1)
                except (OSError, ValueError):
                    pass

    # main thread

    def _on_wakeup(self, signum: int, frame: Any) -> None:
        if self.in_input:
            raise _Wakeup()

    def _install_wakeup(self) -> None:
        if not hasattr(signal, "pthread_kill") or not hasattr(signal, "SIGUSR1"):
            return  # Windows: the end of the connection is noticed at the next line
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGUSR1, self._on_wakeup)
        self.can_wake = True

    def _read_line(self) -> Optional[Union[str, bytes]]:
        if self.interactive:
            self.console.reading = True
            try:
                line = input(PROMPT)
            finally:
                self.console.reading = False
            return line.encode("utf-8", "surrogateescape") if self.args.binary else line
        data = sys.stdin.buffer.readline()
        if not data:
            return None
        data = _strip_newline(data)
        return data if self.args.binary else data.decode("utf-8", "replace")

    def _send_loop(self) -> bool:
        """Send lines until the end of input (True) or of the connection (False)."""
        while True:
            try:
                self.in_input = True
                if self.done:
                    return False
                line = self._read_line()
            except _Wakeup:
                return False
            except EOFError:
                line = None
            finally:
                self.in_input = False
            if line is None:
                return True
            try:
                self.ws.send(line)
            except ConnectionClosed:
                return False  # the receiver thread records how it was closed
            with self.cond:
                self.sent += 1

    def _wait_for_replies(self) -> None:
        with self.cond:
            if self.args.keep_open:
                while not self.done:
                    self.cond.wait()
            else:
                wait = 1.0 if self.args.wait is None else self.args.wait
                self.cond.wait_for(lambda: self.done or self.received >= self.sent, timeout=wait)

    def run(self) -> int:
        self._install_wakeup()
        receiver = threading.Thread(target=self.receive, name="simplews-cli-recv", daemon=True)
        receiver.start()
        interrupted = False
        try:
            try:
                end_of_input = self._send_loop()
            except _Wakeup:
                end_of_input = False
            self.console.end_prompt_line()
            if end_of_input and not self.done:
                self._wait_for_replies()
        except KeyboardInterrupt:
            interrupted = True
            if self.interactive:
                sys.stdout.write("\n")
                sys.stdout.flush()
        except _Wakeup:  # pragma: no cover - a late signal
            pass
        try:
            if not self.done:
                self.we_closed = True
                self.ws.close()
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED  # a second Ctrl-C: do not wait for the closing handshake
        except (ConnectionClosed, OSError):
            pass
        try:
            receiver.join(timeout=(self.args.timeout or 10) + 10)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        if interrupted:
            return EXIT_INTERRUPTED
        return self._outcome()

    def _outcome(self) -> int:
        if self.error is not None:
            if isinstance(self.error, BrokenPipeError):
                _silence_stdout()
                return EXIT_OK
            return _fail(classify(self.error, self.args.url), self.args.verbose, self.error)
        if self.closed_exc is not None:
            code, reason = self.closed_exc.code, self.closed_exc.reason
            clean = isinstance(self.closed_exc, ConnectionClosedOK)
        else:  # the receiver thread did not finish in time
            code, reason = self.ws.close_code, self.ws.close_reason or ""
            clean = _is_clean(code)
        if not clean:
            return _fail(CliError(EXIT_CLOSED, f"connection closed abnormally: {describe_close(code, reason)}"))
        if not self.we_closed:
            self.console.status(f"connection closed by the server: {describe_close(code, reason)}")
        elif self.interactive:
            self.console.status(f"connection closed: {describe_close(code, reason)}")
        return EXIT_OK


def _silence_stdout() -> None:
    """stdout's reader went away (``| head``): avoid an error at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _run_once(ws: Any, data: bytes, args: argparse.Namespace, console: Console) -> int:
    try:
        if data:
            ws.send(data if args.binary else _strip_newline(data).decode("utf-8", "replace"))
        try:
            message = ws.recv(timeout=args.wait)
        except TimeoutError:
            ws.close()
            return _fail(CliError(EXIT_TIMEOUT, f"no message received within {args.wait:g} s"))
        except ConnectionClosedOK as exc:
            console.status(f"connection closed by the server before any message: "
                           f"{describe_close(exc.code, exc.reason)}")
            return EXIT_OK
        try:
            console.message(message)
        except BrokenPipeError:
            _silence_stdout()
        ws.close()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ConnectionClosedError, ProtocolError) as exc:
        return _fail(classify(exc, args.url))
    except ConnectionClosedOK:
        return EXIT_OK
    return EXIT_OK


def run_client(args: argparse.Namespace) -> int:
    try:
        uri = parse_uri(args.url)
    except InvalidURI as exc:
        return _fail(classify(exc, args.url))
    try:
        kwargs = _connect_kwargs(args, uri.secure)
    except UsageError as exc:
        print(f"simplews: {exc}", file=sys.stderr)
        return EXIT_USAGE

    interactive = not args.once and sys.stdin.isatty() and sys.stdout.isatty()
    console = Console(interactive, args.binary_format)
    _setup_client_logging(args.verbose, console)
    try:
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        pass

    data = b""
    try:
        if args.once:
            data = sys.stdin.buffer.read()
        ws = simplews.connect(args.url, **kwargs)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _fail(classify(exc, args.url, args.timeout), args.verbose, exc)

    try:
        if interactive:  # with -v alone, the library logs the connection itself
            detail = f" (subprotocol: {ws.subprotocol})" if getattr(ws, "subprotocol", None) else ""
            console.status(f"connected to {args.url}{detail}; Ctrl-D or Ctrl-C to quit")
        if args.once:
            return _run_once(ws, data, args, console)
        return ClientSession(ws, console, args).run()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _fail(classify(exc, args.url), args.verbose, exc)


# ---------------------------------------------------------------------------
# echo server


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simplews serve",
        description="Run a WebSocket echo server: every message is sent back as is. "
                    "Connections are logged to stderr. Ctrl-C or SIGTERM stops it, closing "
                    "every connection with 1001 (going away).",
        epilog="exit codes: 0 stopped by Ctrl-C/SIGTERM, 2 usage error (or unreadable "
               "certificate), 4 cannot listen on HOST:PORT",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0: any free port)")
    parser.add_argument("--unix-socket", metavar="PATH",
                        help="listen on the Unix socket PATH instead of HOST:PORT")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve wss://: certificate chain (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="serve wss://: private key (PEM)")
    parser.add_argument("--subprotocol", action="append", default=[], metavar="NAME",
                        help="accept this subprotocol (repeatable)")
    parser.add_argument("--no-compression", action="store_true", help="refuse permessage-deflate")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every frame")
    parser.add_argument("--version", action="version", version=f"simplews {__version__}")
    return parser


def run_server(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("simplews.cli")

    if bool(args.tls_cert) != bool(args.tls_key):
        print("simplews serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return EXIT_USAGE
    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            print(f"simplews serve: cannot load the TLS certificate or key: "
                  f"{getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return EXIT_USAGE

    def echo(ws: Any) -> None:
        peer = format_address(getattr(ws, "remote_address", None))
        request = getattr(ws, "request", None)
        path = getattr(request, "path", "?")
        subprotocol = getattr(ws, "subprotocol", None)
        log.info("%s connected: %s%s", peer, path, f" (subprotocol {subprotocol})" if subprotocol else "")
        try:
            for message in ws:
                ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            log.info("%s disconnected: %s", peer,
                     describe_close(getattr(ws, "close_code", None), getattr(ws, "close_reason", "") or ""))

    kwargs: Dict[str, Any] = {"ssl": context}
    if args.subprotocol:
        kwargs["subprotocols"] = list(args.subprotocol)
    if args.no_compression:
        kwargs["compression"] = None
    if args.unix_socket:
        kwargs["unix_socket"] = args.unix_socket
        where = args.unix_socket
    else:
        where = f"{args.host}:{args.port}"
    try:
        server = simplews.serve(echo, args.host, args.port, **kwargs)  # type: ignore[attr-defined]
    except OSError as exc:
        print(f"simplews serve: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONNECT

    def stop(signum: int, frame: Any) -> None:
        # A second signal kills the process the usual way.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise _Stop(signum)

    failure: List[BaseException] = []

    def serve_forever() -> None:
        try:
            server.serve_forever()
        except BaseException as exc:  # pragma: no cover - reported below
            failure.append(exc)

    thread = threading.Thread(target=serve_forever, name="simplews-serve", daemon=True)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
    scheme = "wss" if context else "ws"
    if args.unix_socket:
        log.info("listening on the Unix socket %s (%s) (Ctrl-C to stop)", args.unix_socket, scheme)
    else:
        host = f"[{args.host}]" if ":" in args.host else args.host
        log.info("listening on %s://%s:%d/ (Ctrl-C to stop)", scheme, host, server.port)
    thread.start()
    try:
        thread.join()
    except (_Stop, KeyboardInterrupt):
        pass
    log.info("shutting down: closing connections with 1001 (going away)")
    try:
        server.shutdown()
        thread.join(timeout=15)
    except (_Stop, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if failure:
        return _fail(classify(failure[0]), args.verbose, failure[0])
    log.info("stopped")
    return EXIT_OK


# ---------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "serve":
        return run_server(_serve_parser().parse_args(args_list[1:]))
    return run_client(_client_parser().parse_args(args_list))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
