"""The client's session: the main thread receives and prints, a daemon thread reads stdin
and sends. On a terminal, what arrives is inserted above the prompt: the line being typed
stays as it is, under it (nothing interrupts or redraws it)."""
from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import shutil
import sys
import threading
from typing import Any, TextIO

from ..connection import Connection
from ..exceptions import ConnectionClosed, ConnectionClosedOK, WebSocketError
from .errors import INTERRUPTED, OK, describe_close, fail

PROMPT = "> "
ESC = "\x1b"


def as_message(line: bytes, binary: bool) -> str | bytes:
    """A line of stdin without its line ending, as a text (or binary) message."""
    line = line[:-1].removesuffix(b"\r") if line.endswith(b"\n") else line
    return line if binary else line.decode("utf-8", "replace")


class Console(logging.Handler):
    """Prints messages (stdout), status lines (stderr) and with -v the library's log lines
    (as a logging handler); on a terminal, above the prompt."""

    def __init__(self, interactive: bool, binary_format: str = "hex") -> None:
        super().__init__()
        self.interactive, self.binary_format = interactive, binary_format
        self.writing = threading.Lock()
        self.tty: Any = None  # the terminal's settings, given back at the end
        if interactive:
            with contextlib.suppress(ImportError):  # Windows: no readline, no termios
                import readline  # noqa: F401 (line editing and history for input())
                import termios

                self.tty = (termios, termios.tcgetattr(0))

    def message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            shown = base64.b64encode(message).decode() if self.binary_format == "base64" else message.hex()
            message = f"[binary, {len(message)} bytes] {shown}".rstrip()
        try:
            self.write(f"< {message}" if self.interactive else message, sys.stdout)
        except BrokenPipeError:  # stdout's reader went away (| head): no error at exit either
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise

    def status(self, text: str) -> None:
        self.write(text, sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.status(self.format(record))

    def write(self, text: str, stream: TextIO) -> None:
        """On a terminal, insert the text's rows above the cursor's row (the prompt): save
        the cursor, make room below (the screen may scroll), go back up, insert blank rows,
        print on them, restore the cursor and move it down as many rows."""
        with self.writing:
            if not self.interactive:
                stream.write(text + "\n")
                stream.flush()
                return
            width = max(1, shutil.get_terminal_size().columns)
            rows = sum(max(1, -(-len(line) // width)) for line in text.split("\n"))
            sequence = (f"{ESC}7" + "\n" * rows + f"{ESC}[{rows}A{ESC}[{rows}L" + text + "\n"
                        + f"{ESC}8{ESC}[{rows}B")
            # One write(): readline draws its prompt from another thread, and a prompt that
            # landed in the middle of the sequence would share the message's row.
            sys.stdout.flush()
            stream.flush()
            os.write(stream.fileno(), sequence.encode(stream.encoding or "utf-8", "replace"))

    def end(self, erase: bool = True) -> None:
        """Leave the prompt: give the terminal its settings back (readline may still be
        reading in its thread) and erase the prompt's row (or end it)."""
        if self.interactive:
            if self.tty is not None:
                termios, settings = self.tty
                termios.tcsetattr(0, termios.TCSADRAIN, settings)
            sys.stdout.write(f"\r{ESC}[K" if erase else "\n")
            sys.stdout.flush()


class Session:
    """Line mode (a pipe) and interactive mode (a terminal) alike."""

    def __init__(self, ws: Connection, console: Console, args: argparse.Namespace) -> None:
        self.ws, self.console, self.args = ws, console, args
        self.cond = threading.Condition()
        self.sent = self.received = 0
        self.done = False  # the main thread has seen the end of the connection
        self.we_closed = False
        self.error: Exception | None = None  # reading stdin failed
        # Not sys.stdin's buffer: at exit, Python would close it under the reading thread.
        self.stdin = open(sys.stdin.fileno(), "rb", closefd=False)  # noqa: SIM115

    def read_line(self) -> str | bytes | None:
        """The next line typed (or of stdin); None at the end of input."""
        if not self.console.interactive:
            line = self.stdin.readline()
            return as_message(line, self.args.binary) if line else None
        try:
            text = input(PROMPT)
        except EOFError:  # Ctrl-D
            return None
        return text.encode("utf-8", "surrogateescape") if self.args.binary else text

    def send_lines(self) -> None:
        """The daemon thread: send each line; at the end of input, wait for the replies (as
        many as messages sent, at most --wait seconds), then close, unless --keep-open."""
        try:
            while (line := self.read_line()) is not None:
                self.ws.send(line)
                with self.cond:
                    self.sent += 1
            with self.cond:
                wait = 1.0 if self.args.wait is None else self.args.wait
                self.cond.wait_for(lambda: self.done or self.received >= self.sent, wait)
                if self.done or self.args.keep_open:
                    return
                self.we_closed = True
        except ConnectionClosed:
            return  # the main thread says how
        except (OSError, ValueError) as exc:  # unreadable stdin, a line that is not UTF-8
            self.error = exc
        self.ws.close()

    def run(self) -> int:
        """Receive and print until the connection ends; the exit code."""
        threading.Thread(target=self.send_lines, name="simplews-cli-stdin", daemon=True).start()
        try:
            try:
                while True:
                    self.console.message(self.ws.recv())
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
                self.ws.close()  # a second Ctrl-C: do not wait for the closing handshake
            return INTERRUPTED
        except BrokenPipeError:  # | head: enough
            return OK
        except (WebSocketError, OSError) as exc:
            self.console.end()
            if self.error is not None or not isinstance(exc, ConnectionClosedOK):
                return fail(self.error or exc, self.args.url, self.args.verbose)
            if self.console.interactive or not self.we_closed:
                by = "" if self.we_closed else " by the server"
                self.console.status(f"connection closed{by}: {describe_close(exc.code, exc.reason)}")
            return OK
