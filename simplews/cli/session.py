"""The client's session: the main thread receives and prints, a daemon thread reads stdin and
sends its lines (or runs slash commands). On a terminal, messages are inserted above the prompt."""
from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import logging
import os
import shutil
import sys
import threading
import time
from typing import Any, TextIO

from ..connection import Connection
from ..exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedOK, WebSocketError
from ..frames import CloseCode, is_valid_close_code, serialize_close
from ..protocol import Close, Ping, Pong
from .errors import ERROR, INTERRUPTED, OK, USAGE, CliError, by_server, describe_close, fail

ESC = "\x1b"
HELP = """/ping [TEXT]            send a ping, print the pong's round-trip time
/close [CODE [REASON]]  close the connection (code 1000 by default)
/binary HEX, /b64 DATA  send a binary message given in hex or base64
//TEXT                  send the text message /TEXT"""
SECRET = {"authorization", "proxy-authorization", "cookie", "set-cookie"}


def as_message(line: bytes, args: argparse.Namespace) -> str | bytes:
    """A line of stdin without its line ending: text, or binary (--binary: as is; --hex)."""
    line = line[:-1].removesuffix(b"\r") if line.endswith(b"\n") else line
    if args.hex:
        return bytes.fromhex(line.decode("utf-8", "replace"))
    return line if args.binary else line.decode("utf-8", "replace")


def shown(data: bytes) -> str:
    """A control frame's payload: quoted text, else hex."""
    text = data.decode("utf-8", "replace")
    return data.hex() if "\ufffd" in text else repr(text)


class Console(logging.Handler):
    """Prints messages (stdout), status lines (stderr), and as a logging handler control frames
    (--show-control), the library's log (-v) and reconnect()'s (--reconnect)."""

    def __init__(self, interactive: bool, args: argparse.Namespace) -> None:
        super().__init__()
        self.interactive, self.args = interactive, args
        self.writing = threading.Lock()
        self.tty: Any = None  # the terminal's settings, given back at the end
        if interactive:
            with contextlib.suppress(ImportError):  # Windows: no readline, no termios
                import readline  # noqa: F401 (line editing and history for input())
                import termios

                self.tty = (termios, termios.tcgetattr(0))

    def stamp(self, text: str) -> str:
        return f"{datetime.datetime.now():%H:%M:%S.%f}"[:-3] + " " + text if self.args.timestamps else text

    def message(self, message: str | bytes) -> None:
        form = self.args.binary_output
        if isinstance(message, bytes) and form != "raw":
            text = base64.b64encode(message).decode() if form == "base64" else message.hex()
            message = f"[binary, {len(message)} bytes] {text}".rstrip()
        elif isinstance(message, str) and self.args.json:
            with contextlib.suppress(ValueError, RecursionError):
                message = json.dumps(json.loads(message), indent=2, ensure_ascii=False)
        try:
            if isinstance(message, bytes):  # --binary-output raw
                with self.writing:
                    sys.stdout.buffer.write(message)
                    sys.stdout.buffer.flush()
            else:
                self.write(self.stamp(f"< {message}" if self.interactive else message), sys.stdout)
        except BrokenPipeError:  # stdout's reader went away (| head): no error at exit either
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise

    def status(self, text: str) -> None:
        self.write(text, sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        event = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if self.args.show_control and isinstance(event, (Ping, Pong, Close)):
            text = describe_close(event.code, event.reason) if isinstance(event, Close) else shown(event.data)
            self.status(self.stamp(f"[{type(event).__name__.lower()}] {text}"))
        elif self.args.verbose or (self.args.reconnect and record.levelno >= logging.INFO):
            self.status(self.format(record))

    def head(self, head: Any) -> None:
        """-v: the opening handshake's request or response, secrets redacted."""
        mark, start = ((">", f"{head.method} {head.path} {head.version}") if hasattr(head, "method")
                       else ("<", f"HTTP/1.1 {head.status} {head.reason}"))
        self.status(f"{mark} {start}")
        for name, value in head.headers.items():
            self.status(f"{mark} {name}: {'<redacted>' if name.lower() in SECRET else value}")

    def write(self, text: str, stream: TextIO) -> None:
        """On a terminal, insert the text's rows above the prompt's: save the cursor, make room
        below (the screen may scroll), go up, insert rows, print, restore the cursor, go down."""
        with self.writing:
            if not self.interactive:
                stream.write(text + "\n")
                stream.flush()
                return
            width = max(1, shutil.get_terminal_size().columns)
            rows = sum(max(1, -(-len(line) // width)) for line in text.split("\n"))
            sequence = (f"{ESC}7" + "\n" * rows + f"{ESC}[{rows}A{ESC}[{rows}L" + text + "\n"
                        + f"{ESC}8{ESC}[{rows}B")
            # One write(): readline draws its prompt from another thread, maybe amid the sequence.
            sys.stdout.flush()
            stream.flush()
            os.write(stream.fileno(), sequence.encode(stream.encoding or "utf-8", "replace"))

    def end(self, erase: bool = True) -> None:
        """Leave the prompt: the terminal's settings back, the prompt's row erased (or ended)."""
        if self.interactive:
            if self.tty is not None:
                termios, settings = self.tty
                termios.tcsetattr(0, termios.TCSADRAIN, settings)
            sys.stdout.write(f"\r{ESC}[K" if erase else "\n")
            sys.stdout.flush()


class Session:
    """Line mode (a pipe) and interactive mode (a terminal) alike, over one connection
    after another with --reconnect (one stdin thread for them all)."""

    def __init__(self, console: Console, args: argparse.Namespace) -> None:
        self.console, self.args = console, args
        self.slash = console.interactive or args.slash
        self.ws: Connection
        self.cond = threading.Condition()
        self.sent = self.received = 0
        self.done = self.eof = False  # the end of the connection (seen by the main thread), of input
        self.we_closed: int | None = None  # the code we closed with
        self.error: Exception | None = None  # reading stdin failed, or a bad line in a pipe
        # Not sys.stdin's buffer: at exit, Python would close it under the reading thread.
        self.stdin = open(sys.stdin.fileno(), "rb", closefd=False)  # noqa: SIM115
        self.reader = threading.Thread(target=self.send_lines, name="simplews-cli-stdin", daemon=True)

    def read_line(self) -> bytes | None:
        """The next line typed (or of stdin); None at the end of input."""
        if not self.console.interactive:
            return self.stdin.readline() or None
        try:
            return input("> ").encode("utf-8", "surrogateescape")
        except EOFError:  # Ctrl-D
            return None

    def send(self, message: str | bytes) -> None:
        self.ws.send(message)
        with self.cond:
            self.sent += 1

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send our close frame; the main thread goes on printing what comes before the
        server's, and ends with it (ws.close() here would read, and drop, those messages)."""
        serialize_close(code, reason)  # ValueError: a reason over 123 bytes
        self.we_closed = code
        if not self.ws.send_close(code, reason, self.ws.close_timeout):
            self.ws.abort(CloseCode.ABNORMAL_CLOSURE, "close timeout: the server takes no close frame")

    def replied(self) -> bool:
        """Wait for a reply to each message sent (--wait at most); True if the connection ended."""
        with self.cond:
            wait = 1.0 if self.args.wait is None else self.args.wait
            return self.cond.wait_for(lambda: self.done or self.received >= self.sent, wait) and self.done

    def handle(self, line: bytes) -> None:
        """Send a line, or run its slash command."""
        if not self.slash or not line.startswith(b"/") or line.startswith(b"//"):
            self.send(as_message(line[1:] if self.slash and line.startswith(b"/") else line, self.args))
            return
        name, _, rest = line[1:].decode("utf-8", "replace").strip().partition(" ")
        code, _, reason = rest.partition(" ")
        if name == "ping":
            payload, start = rest.encode() or os.urandom(4), time.monotonic()
            if len(payload) > 125:
                raise ValueError("a ping carries at most 125 bytes")
            answered = self.ws.ping(payload).wait(self.args.timeout)
            self.console.status(f"pong {shown(payload)} after {(time.monotonic() - start) * 1000:.1f} ms"
                                if answered else f"no pong within {self.args.timeout:g} s")
        elif name == "close":
            if code and not (code.isdigit() and is_valid_close_code(int(code))):
                raise ValueError(f"not a close code to send: {code}")
            if self.console.interactive or not self.replied():  # a pipe: its replies first
                self.close(int(code or 1000), reason)
        elif name in ("binary", "b64"):
            self.send(bytes.fromhex(rest) if name == "binary" else base64.b64decode(rest, validate=True))
        elif name == "help":
            self.console.status(HELP)
        else:
            raise ValueError(f"unknown command /{name} (/help lists them; //TEXT sends /TEXT)")

    def send_lines(self) -> None:
        """The daemon thread: handle each line; at the end of input, wait for the replies
        (as many as messages sent, at most --wait seconds), then close, unless --keep-open."""
        try:
            while (line := self.read_line()) is not None:
                while True:
                    ws = self.ws
                    try:
                        self.handle(line)
                    except (ValueError, ConcurrencyError) as exc:  # binascii.Error too
                        if not self.console.interactive:
                            text = line.rstrip().decode("utf-8", "replace")[:40]
                            raise CliError(USAGE, f"cannot send {text!r}: {exc}") from None
                        self.console.status(f"simplews: {exc}")
                    except ConnectionClosed:
                        if not self.args.reconnect:
                            return  # the main thread says how
                        with self.cond:  # sent once reconnected
                            self.cond.wait_for(lambda: self.ws is not ws)  # noqa: B023
                        continue
                    break
            self.eof = True
            if self.replied() or self.args.keep_open:
                return
        except ConnectionClosed:
            return
        except (OSError, ValueError, CliError) as exc:  # unreadable stdin, a bad line in a pipe
            self.error = exc
        self.close()

    def run(self, ws: Connection) -> int:
        """Receive and print until the connection ends; the exit code."""
        with self.cond:
            self.ws, self.done = ws, False
            self.cond.notify_all()
        if self.reader.ident is None:
            self.reader.start()
        elif self.eof:  # the input ended while reconnecting
            self.close()
        try:
            try:
                while True:
                    message = ws.recv()
                    try:
                        self.console.message(message)
                    except BrokenPipeError:
                        raise
                    except OSError as exc:  # not the connection's: stdout's (a full disk, say)
                        with contextlib.suppress(ConnectionClosed, OSError):
                            ws.close(1001, "cannot write the output")
                        raise CliError(ERROR, f"cannot write to stdout: {exc.strerror or exc}") from None
                    with self.cond:
                        self.received += 1
                        self.cond.notify_all()
            finally:
                with self.cond:
                    self.done = True
                    self.cond.notify_all()
        except KeyboardInterrupt:
            self.console.end(erase=False)
            with contextlib.suppress(KeyboardInterrupt, ConnectionClosed, OSError):
                ws.close()  # a second Ctrl-C: do not wait for the closing handshake
            return INTERRUPTED
        except BrokenPipeError:  # | head: enough
            return OK
        except (WebSocketError, OSError) as exc:
            if not self.args.reconnect:  # else the prompt stays, for the next connection
                self.console.end()
            if self.error is not None or not isinstance(exc, ConnectionClosed) or not (
                    isinstance(exc, ConnectionClosedOK) or exc.code == self.we_closed):
                return fail(self.error or by_server(exc, ws), self.console.status, self.args.url,
                            self.args.verbose)
            if self.console.interactive or self.we_closed is None:
                by = "" if self.we_closed is not None else " by the server"
                self.console.status(f"connection closed{by}: {describe_close(exc.code, exc.reason)}")
            return OK
