"""The threaded I/O engine under Connection (DESIGN §2): reading, writing, closing.
How it works (threads, locks, who may read, write and close): connection.py's docstring.
"""
from __future__ import annotations

import contextlib
import logging
import mmap
import socket
import ssl
import threading
from time import monotonic
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar, Union, cast

from . import keepalive
from ._io import (NOW, Deadline, Flag, data_ready, nothing_unread, recv_now, reset_by_peer,
                  socket_addresses, wait_readable, wait_writable)
from .exceptions import ConcurrencyError, ConnectionClosed, ProtocolError
from .frames import CloseCode
from .http11 import Request, Response
from .protocol import Event, Fragment, Message, Ping, Pong, Protocol, Side

__all__ = ["Transport"]

_ABNORMAL = CloseCode.ABNORMAL_CLOSURE
W = TypeVar("W", threading.Event, Flag)  # what a ping's pong sets
READ_SIZE = 256 * 1024
SMALL_READ_SIZE = 256  # an idle connection's (pongs, small messages): pymalloc's, 1/4 page
IDLE_CONTROLS = 64  # control frames the keepalive thread handles a turn, for one connection


class Transport:
    """A connection's socket, Protocol and threads; Connection is its public face."""

    __slots__ = (  # idle connections stay small; "__dict__" lets users attach attributes
        "socket", "protocol", "request", "response", "subprotocol", "close_timeout",
        "ping_interval", "ping_timeout", "max_queue", "logger", "local_address",
        "remote_address", "latency", "_debug", "_tls", "_read_lock", "_write_lock",
        "_message_lock", "_message_owner", "_state_lock", "_queue", "_read_buffer", "_read_view", "_pings",
        "_closed", "_tcp_closed", "_shut_wr", "_cut", "_close_exc", "_close_deadline",
        "_cause", "_failure_reported", "_handback", "_parse_asked", "_tls_partial", "__dict__", "__weakref__",
    )

    def __init__(self, sock: socket.socket, protocol: Protocol, *, request: Request,
                 response: Response, subprotocol: Optional[str] = None,
                 close_timeout: Optional[float] = 10, ping_interval: Optional[float] = 20,
                 ping_timeout: Optional[float] = 20, max_queue: Optional[int] = 16,
                 logger: Optional[logging.Logger] = None, leftover: bytes = b"",
                 addresses: Optional[Tuple[Any, Any]] = None) -> None:
        self.socket = sock
        self.protocol = protocol
        self.request = request
        self.response = response
        self.subprotocol = subprotocol
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_queue = max_queue
        self.logger = logger or logging.getLogger(
            "simplews.client" if protocol.side is Side.CLIENT else "simplews.server")
        self._debug = self.logger.isEnabledFor(logging.DEBUG)
        self._tls = isinstance(sock, ssl.SSLSocket)
        self.local_address, self.remote_address = addresses or socket_addresses(sock)  # (None: reset)
        self.latency = 0.0  #: Seconds between the last ping and its pong.
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._message_lock = threading.Lock()
        self._message_owner = 0  # the thread holding it (its send()'s iterable must not send)
        self._state_lock = threading.Lock()
        self._queue: List[Event] = []  # read ahead by the keepalive thread (at most max_queue)
        self._read_buffer: Any = bytearray(SMALL_READ_SIZE)  # large once a read fills it
        self._read_view: Optional[memoryview] = None  # the large buffer's (a view costs 300 B)
        self._pings: Dict[bytes, Tuple[Union[threading.Event, Flag], float]] = {}
        self._closed = Flag.make()  # set once the connection is finished
        self._tcp_closed = False  # the same, as a plain attribute for the hot path
        self._shut_wr = False  # we shut our sending side down (a server's close, §7.1.1)
        self._cut = False  # TCP was cut (abort): finish as soon as the read lock is free
        self._close_exc: Optional[ConnectionClosed] = None
        self._close_deadline: Optional[Deadline] = None
        self._cause: Optional[OSError] = None  # the network error that ended it, if one did
        self._failure_reported = False
        self._handback = False  # the keepalive thread wants to watch once the reader lets go
        self._parse_asked = False  # the keepalive thread is to parse what a reader left (read_idle)
        self._tls_partial = False  # part of a TLS record was read (see _recv_now)
        if leftover:
            protocol.receive_data(leftover)
        keepalive.register(self)

    def _closing_exception(self) -> ConnectionClosed:
        """What a closed connection raises (the Protocol decides; the network error is
        the cause): a new one each time, as a raised one keeps its frames alive."""
        exc = self.protocol.close_exc()
        exc.__cause__ = exc.__cause__ or self._cause
        return exc

    def _set_cause(self, exc: Optional[OSError]) -> None:
        """Keep the first network error (not its traceback: its frames hold us)."""
        if exc is not None and self._cause is None and not self._closed.is_set():
            self._cause = exc.with_traceback(None)

    def _closed_exception(self) -> ConnectionClosed:
        """For a sender finding the connection closing: the end (within close_timeout)."""
        self._closed.wait(self.close_timeout)  # (at once if set)
        return self._closing_exception()

    def _pump(self, deadline: Optional[Deadline], idle: bool = False,
              streaming: bool = False) -> Optional[Event]:
        """The one read loop (read lock held): read, answer control frames, return the
        next data event. ``deadline`` None: no limit; NOW: no wait. ``idle`` (keepalive
        thread): one read at most, data events queued (up to max_queue), None returned.
        Once closing, only the TCP close is left, then the failure (once) or the end."""
        protocol = self.protocol
        if streaming and protocol.in_message:
            partial = protocol.take_partial()
            if partial:  # else the message's bytes are still in the buffer: parsed below
                return Fragment(partial, False)
        reads, controls, ahead = 0, 0, None if idle or self._debug else self._queue  # recv() pops it
        room = (self.max_queue or 16) - len(self._queue)
        while True:
            if protocol.discarding or self._tcp_closed:  # only the TCP close is left
                self._await_tcp_close(idle)
                if idle:
                    return None
                failure = protocol.failure
                if failure is not None and not self._failure_reported:
                    self._failure_reported = True  # raised once, then ConnectionClosedError
                    raise failure
                raise self._closing_exception()
            protocol.streaming = streaming
            try:
                event = protocol.next_event(ahead, room)
            except ProtocolError as exc:  # the failing close goes out in _await_tcp_close
                self.logger.info("failing connection with %d: %s", exc.close_code, exc)
                continue
            if event is None:  # read once more, unless the deadline passed since a read (idle: NOW)
                over = deadline is not None and reads and deadline.passed()  # (a ping flood, say)
                if over or not self._read_once(NOW if idle else deadline):
                    if idle:
                        return None
                    raise TimeoutError("timed out waiting for a message")
                reads += 1
                continue
            cls = type(event)
            if cls is Message or cls is Fragment:
                if self._debug:
                    data = event.data  # type: ignore[attr-defined]
                    self.logger.debug("< %s %r [%d]", "TEXT" if isinstance(data, str) else "BINARY",
                                      data[:64], len(data))
                if not idle:
                    if not self._parse_asked and (protocol.frame_buffered or self._tls and
                                                  self._left_unread()):  # a ping behind, say:
                        self._parse_asked = self._handback = True  # parsed if nobody reads on
                    return event
                self._queue.append(event)
                if self._queue_full():
                    return None  # back-pressure: recv() reads the rest
                continue
            self._handle_control(event, idle)
            if idle and (controls := controls + 1) == IDLE_CONTROLS:  # bounded work a turn: the rest next
                return None

    def _read_once(self, deadline: Optional[Deadline]) -> bool:
        """Wait until ``deadline`` and read once into the Protocol; False if nothing came
        in time. At the end of the stream the connection is finished."""
        sock, direct = self.socket, self.protocol.direct  # direct: a large frame, read straight in
        buffer = self._read_buffer if direct is None else direct
        try:
            if deadline is None:
                size: Optional[int] = sock.recv_into(buffer)
            elif not deadline.passed():
                size = self._recv_by(buffer, deadline)
            else:  # no time to wait: whatever is there (None: nothing)
                size = self._recv_now(buffer)
        except InterruptedError:
            return False
        except OSError as exc:
            self._set_cause(exc)
            size = 0
        if size is None:
            return False
        self._tls_partial = False  # a read that returned ended the TLS record it began
        if not size:  # ssl reads a reset as an EOF: see reset_by_peer
            self._set_cause(reset_by_peer(sock) if self._tls else None)
            self.protocol.receive_eof()
            self._finish()
            return True
        if direct is not None:
            self.protocol.received_direct(size)
            return True
        view = self._read_view
        self.protocol.receive_data(self._read_buffer[:size] if view is None else view[:size])
        if size == SMALL_READ_SIZE and len(self._read_buffer) == SMALL_READ_SIZE:
            # Busy: a large buffer now, an anonymous mapping whose pages cost memory
            # only once a read writes to them (bytearray(n) would zero-fill them all).
            self._read_buffer = mmap.mmap(-1, READ_SIZE)
            self._read_view = memoryview(self._read_buffer)
        return True

    def _recv_by(self, buffer: Any, deadline: Deadline) -> Optional[int]:
        """Read once data is there, by ``deadline`` (None: nothing came)."""
        while data_ready(self.socket, deadline):
            if not self._tls:
                return self.socket.recv_into(buffer)
            size = self._recv_now(buffer, min(keepalive.TICK, deadline.remaining() or 0.0))
            if size is not None or deadline.passed():  # (passed: one try, the last)
                return size
        return None

    def _recv_now(self, buffer: Any, wait: float = 0.0) -> Optional[int]:
        """Read what is there without waiting (read lock held); None if nothing is. TLS: the
        socket non-blocking for the read, under the writer lock (if free within ``wait`` s),
        as it may hold half a record, or one without data (a KeyUpdate). A writer busy: a
        whole record, peeked at (at a record boundary: _tls_partial), is read blocking."""
        sock = self.socket
        if not self._tls:
            return recv_now(sock, buffer)
        if cast(ssl.SSLSocket, sock).pending():  # decrypted already: a blocking read returns
            return sock.recv_into(buffer)
        if not wait_readable(sock, 0):
            return None
        if self._write_lock.acquire(timeout=wait):
            try:
                size = recv_now(sock, buffer)
            finally:
                self._release_writer(replies=False)
            self._tls_partial = size is None
            return size
        return sock.recv_into(buffer) if not self._tls_partial and data_ready(sock, NOW) else None

    def _handle_control(self, event: Event, idle: bool) -> None:  # (Close: see _pump)
        if self._debug:
            self.logger.debug("< %r", event)
        if type(event) is Ping and not idle:  # the pong (§5.5.2; idle: once read_idle parsed)
            self._send_replies()
        elif type(event) is Pong:
            now = monotonic()
            for payload in event.acknowledged:
                waiter = self._pings.pop(payload, None)
                if waiter is not None:
                    self.latency = now - waiter[1]
                    waiter[0].set()

    def _send_replies(self) -> None:  # what goes out now; the rest: the writer's release, a tick
        self._flush_replies(True)
        if self.protocol.replies:
            keepalive.wake(self, monotonic() + keepalive.TICK)

    def _await_tcp_close(self, idle: bool) -> None:
        """Closed or failed: drop what comes until the peer closes TCP, the server may
        (§7.1.1) or the close deadline; then finish (read lock held). ``idle``: no wait."""
        if not self._closed.is_set():
            self._start_closing()
            self._flush_replies(idle)  # a close echo left by the keepalive thread
        buffer, deadline = self._read_buffer, self._close_deadline or NOW
        while not self._closed.is_set() and not self._server_may_close_now():
            try:  # what is there (often the FIN already), and idle: no wait
                size = self._recv_now(buffer) if idle else self._recv_by(buffer, deadline)
            except OSError:
                break
            if size is None and idle and not deadline.passed():
                return
            if not size:
                break  # nothing in time, or EOF
        self._finish()

    def _server_may_close_now(self) -> bool:
        """RFC 6455 §7.1.1: "the server MUST close the underlying TCP connection
        immediately": once our side is shut down and nothing sent is left unread (that
        would reset the connection: a TLS alert after the close is read first)."""
        return self._shut_wr and self.protocol.handshake_done and nothing_unread(self.socket)

    def _write(self, buffers: Iterable[Any]) -> bool:
        """The one place that writes to the socket (writer lock held). A failed write
        cuts TCP and raises, unless closing already (the peer may close TCP then):
        False, and the caller raises _closed_exception() once it let go of the lock."""
        assert self._write_lock.locked()
        try:
            for buffer in buffers:
                self.socket.sendall(buffer)
        except OSError as exc:
            self._set_cause(exc)
            if self.protocol.closing:
                return False
            self._cut_tcp(_ABNORMAL, "connection lost while writing")
            raise self._closing_exception() from exc
        return True

    def _acquire_writer(self, idle: bool) -> bool:
        """The writer lock: ``idle`` now or never, else by the close deadline if set."""
        if idle:
            return self._write_lock.acquire(blocking=False)
        deadline = self._close_deadline
        return self._write_lock.acquire(timeout=-1 if deadline is None else deadline.lock_timeout())

    def _release_writer(self, idle: bool = False, replies: bool = True) -> None:
        """Release the writer lock; then close the socket if the connection was finished
        meanwhile (_finish leaves that to the holder), else send the ``replies`` queued."""
        self._write_lock.release()
        if self._tcp_closed:
            if self._write_lock.acquire(blocking=False):
                try:
                    self.socket.close()
                finally:
                    self._write_lock.release()
        elif replies and self.protocol.replies:
            self._flush_replies(idle)

    def _flush_replies(self, idle: bool) -> None:
        """Send the Protocol's replies (pongs, close echo, failing close), one per lock hold, then
        shut our side of TCP if it says so (§7.1.1). ``idle``: only what goes out at once."""
        protocol, sock = self.protocol, self.socket
        while protocol.replies:
            if idle and not wait_writable(sock, 0):
                return
            if not self._acquire_writer(idle):
                return
            try:
                if self._tcp_closed:
                    return
                frame = protocol.next_reply()
                if frame is None:
                    break
                if self._debug:
                    self.logger.debug("> reply %r", frame[:16])
                try:
                    self._write([frame])
                except ConnectionClosed:
                    return  # the reader sees the end
            finally:
                self._release_writer(replies=False)
        if protocol.eof_due and not self._shut_wr:
            self._shut_wr = True
            self._shutdown(socket.SHUT_WR)

    def _ping(self, payload: bytes, waiter: W, idle: bool) -> Optional[W]:
        """Send a ping; ``idle`` (the keepalive thread): give up, returning None, when
        the writer is busy, the socket's buffer is full or the connection is closing."""
        if not self._acquire_writer(idle):
            return None
        try:
            if payload in self._pings:
                raise ConcurrencyError("a ping with the same payload is waiting for its pong")
            if not self.protocol.closing and not self._tcp_closed:
                if idle and not wait_writable(self.socket, 0):
                    return None
                frame = self.protocol.send_ping(payload)  # (ValueError past 125 bytes)
                self._pings[payload] = (waiter, monotonic())
                if self._write([frame]):
                    return waiter
        finally:
            self._release_writer(idle)
        if idle:
            return None
        raise self._closed_exception()

    def _finish_if_unread(self) -> bool:
        """Finish now unless someone reads (the reader finishes then)."""
        if not self._read_lock.acquire(blocking=False):
            return False
        try:
            self._finish()
        finally:
            self._read_lock.release()
        return True

    def _cut_tcp(self, code: int, reason: str) -> None:
        """Fail the connection and shut TCP down, which wakes a blocked reader or
        writer; the reader, or the keepalive thread, then finishes."""
        with self._state_lock:
            if self._closed.is_set() or self._cut:
                return
            self._cut = True
        self.protocol.fail(code, reason)
        self._start_closing()
        self.logger.info("aborting connection with %d: %s", code, reason)
        self._shutdown(socket.SHUT_RDWR)
        keepalive.wake(self, 0.0)  # finish it as soon as the read lock is free

    def _start_closing(self) -> None:  # the close deadline: close_timeout from now (None: none)
        if self._close_deadline is None:
            self._close_deadline = deadline = Deadline(self.close_timeout)
            keepalive.wake(self, deadline.at or keepalive.NEVER)  # it finishes the connection then

    def _shutdown(self, how: int) -> None:
        with contextlib.suppress(OSError):  # socket.socket's: SSLSocket's would drop the TLS state
            socket.socket.shutdown(self.socket, how)

    def _finish(self) -> None:
        """Record the end and close the socket (read lock held), never under a sendall:
        if a writer holds the lock, TCP is shut down (its sendall fails at once) and it
        closes the socket as it lets go. Nothing here waits."""
        with self._state_lock:
            if self._closed.is_set():
                return
            self._close_exc = self._closing_exception()
            self._tcp_closed = True
            self._closed.set()
        keepalive.unregister(self)
        if not self._write_lock.acquire(blocking=False):
            self._shutdown(socket.SHUT_RDWR)
            if not self._write_lock.acquire(blocking=False):
                return
        try:
            self.socket.close()
        finally:
            self._write_lock.release()
        if self._debug:
            self.logger.debug("connection closed: %s", self._close_exc)

    # ---------------------------------------- the keepalive thread's side (keepalive.Keepable)
    keepalive_fileno: Callable[[], int]  # (these four: Connection's)
    keepalive_ping: Callable[[], Optional[Flag]]
    keepalive_timeout: Callable[[], None]
    bytes_taken: Callable[[], Optional[int]]

    def keepalive_tick(self, now: float) -> Optional[float]:
        """Pending replies, the end of cut or closing connections (never blocks): when to look again."""
        if self._closed.is_set():
            return keepalive.NEVER
        deadline = self._close_deadline
        if self._cut or (deadline is not None and deadline.passed()):
            if not self._finish_if_unread() and not self._cut:  # a reader is stuck (in a sendall)
                self._cut_tcp(_ABNORMAL, "close timeout")
            return now + keepalive.TICK
        if self.protocol.replies:  # (while the rest waits a tick, the pings go on: a stuck peer fails)
            self._send_replies()
        if self.protocol.closing:
            return deadline.at or keepalive.NEVER if deadline is not None else now + keepalive.TICK
        return None

    def wants_idle_reads(self) -> bool:
        """Watch the socket? Not once closed, nor while someone reads or the queue is full: the
        reader hands it back (_hand_back) as it lets go (asked twice, for one letting go now)."""
        for _ in range(2):
            if self._closed.is_set():
                return False
            if not (self._read_lock.locked() or self._queue_full()):
                return True
            self._handback = True
        return False

    def _queue_full(self) -> bool:  # back-pressure: no reading ahead past max_queue events
        return self.max_queue is not None and len(self._queue) >= self.max_queue

    def _left_unread(self) -> bool:  # a whole frame, or bytes TLS decrypted (socket not readable)
        return self.protocol.frame_buffered or (self._tls and cast(ssl.SSLSocket, self.socket).pending() > 0)

    def _hand_back(self) -> None:  # a reader let go while the keepalive thread waited
        self._handback = False
        keepalive.watch(self)

    def _read_aside(self) -> None:
        """read_idle()'s blocking reads of whole TLS records while a writer is busy and records
        come, in a thread of its own: a record without data (a KeyUpdate) waits for the next."""
        try:
            with self._read_lock:
                more = not self._closed.is_set()
                while more:
                    self._pump(NOW, idle=True)
                    self._send_replies()
                    more = not (self._closed.is_set() or self._queue_full()) and \
                        self._write_lock.locked() and data_ready(self.socket, NOW)
        except Exception as exc:  # (a peek's OSError: read_idle meets it again, and ends it)
            if not isinstance(exc, OSError):
                self.logger.exception("reading aside failed on %r", self)
        self._hand_back()

    def read_idle(self) -> bool:
        """The socket is readable: read what is there, answer control frames, queue
        data (never blocks). False: stop watching (see wants_idle_reads)."""
        if not self._read_lock.acquire(blocking=False):
            self._handback = True
            if not self._read_lock.acquire(blocking=False):
                return False
        try:
            self._parse_asked = False
            if self._closed.is_set():
                return False
            try:  # a writer busy: half a TLS record is read once it lets go; a whole one aside
                busy = self._tls and self._write_lock.locked()
                whole = busy and not self._tls_partial and data_ready(self.socket, NOW)
                stalled = busy and not whole and wait_readable(self.socket, 0)
            except OSError as exc:  # reset by the peer, say: the peek consumed the error
                self._set_cause(exc)
                self.protocol.receive_eof()
                self._finish()
                return False
            if whole:
                threading.Thread(target=self._read_aside, name="simplews-tls-read", daemon=True).start()
                return False
            self._pump(NOW, idle=True)  # what a reader left is parsed even then
            self._send_replies()  # one pong for the pings of a turn (§5.5.3)
            if stalled:  # the socket stays readable meanwhile: again in a tick
                keepalive.wake(self, monotonic() + keepalive.TICK)
                return False
            if self._left_unread():  # (TLS: one read at most, what it decrypted beyond next turn)
                keepalive.watch(self)
        finally:
            self._read_lock.release()
        return self.wants_idle_reads()
