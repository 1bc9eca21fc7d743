"""Connection: the threaded I/O around the sans-I/O Protocol (DESIGN §2).

Theory of operation
-------------------
The Protocol decides (what a frame means, what to answer, when the connection
has failed); this module moves bytes and keeps the threads out of each other's way.

Threads. The application's threads call recv() / send() / close(); there is no
reader thread. The one keepalive thread of the process (keepalive.py) reads only
connections nobody is reading, sends the periodic pings, and finishes connections
whose close deadline has passed.

Locks, and what each guards:

- read lock: the Protocol's reader half (receive_data, next_event), the read
  buffer, the read-ahead queue's producer side, and the right to finish the
  connection (_finish). recv() holds it while it waits for data; the keepalive
  thread only ever try-acquires it.
- writer lock: the Protocol's writer half (send_*, next_reply, the compressor) and
  every write to the socket, one frame per acquisition, so that a pong or a close
  goes out between the fragments of a large message. The keepalive thread only
  try-acquires it and writes only when the socket has room (a control frame fits).
- message lock: one outgoing data message at a time (its fragments stay together).
- state lock: the closed flag and the abort code, set once.

Who may close the file descriptor: once the connection is finished (closed flag
set, by a holder of the read lock; nobody reads the socket after that), the holder
of the writer lock, never while a sendall may use it: _finish closes it if the
lock is free, else shuts TCP down (a blocked sendall fails at once) and the
writer closes it as it releases the lock (_unlock_writer).

Closing. A close frame received or sent, or a failure, sets a close deadline
(close_timeout). Until then the server closes TCP first once the closing
handshake is done (RFC 6455 §7.1.1) and the client waits for it; past it, the
keepalive tick cuts TCP. A sender that finds the handshake under way waits for its
end (bounded by the same deadline) and raises what it decided.

The socket stays blocking for its whole life (another thread may be in sendall);
timeouts are waits on the descriptor with a monotonic deadline.
"""
from __future__ import annotations

import logging
import mmap
import os
import socket
import ssl
import threading
from time import monotonic
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from . import keepalive
from ._io import wait_readable, wait_writable
from .exceptions import (ConcurrencyError, ConnectionClosed, ConnectionClosedError,
                         ConnectionClosedOK, ProtocolError)
from .frames import CloseCode, Opcode
from .http11 import Request, Response
from .protocol import Close, Event, Fragment, Message, Ping, Pong, Protocol, Side, State

__all__ = ["Connection"]

Data = Union[str, bytes]
_BINARY_TYPES = (bytes, bytearray, memoryview)
_TEXT, _BINARY, _CONT = Opcode.TEXT.value, Opcode.BINARY.value, Opcode.CONT.value
_OK_CODES = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD)
READ_SIZE = 256 * 1024
SMALL_READ_SIZE = 1024


def _tls_record_ready(sock: ssl.SSLSocket) -> bool:
    """Would reading ``sock`` return without blocking? True when decrypted bytes are
    pending or a whole TLS record (or EOF) waits in the kernel: peeked on the raw
    socket, so that a peer sending half a record cannot block the keepalive thread.
    Raises the socket's error (a peek consumes it: the caller must keep it)."""
    if sock.pending():
        return True
    flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
    try:
        head = socket.socket.recv(sock, 5, flags)
        if len(head) < 5:
            return not head  # b"" is EOF: reading returns at once
        size = 5 + int.from_bytes(head[3:5], "big")
        return len(socket.socket.recv(sock, size, flags)) >= size
    except BlockingIOError:
        return False


class _Flag:
    """A one-shot event, lighter than threading.Event (one lock, no Condition): the
    lock is held from creation until set() releases it for good."""

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Set the flag; call it once (the caller serializes)."""
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._lock.release()
        return self._set


class Connection:
    """An open WebSocket connection, client or server side (DESIGN §3)."""

    # Slots keep idle connections small; "__dict__" still lets users attach attributes.
    __slots__ = (
        "socket", "protocol", "request", "response", "subprotocol", "close_timeout",
        "ping_interval", "ping_timeout", "max_queue", "logger", "local_address",
        "remote_address", "latency", "_debug", "_tls", "_read_lock", "_write_lock",
        "_message_lock", "_state_lock", "_queue", "_read_buffer", "_read_view", "_pings",
        "_closed", "_tcp_closed", "_shut_wr", "_close_exc", "_close_deadline", "_abort_code",
        "_cause",
        "_failure_reported", "__dict__", "__weakref__",
    )

    def __init__(self, sock: socket.socket, protocol: Protocol, *, request: Request,
                 response: Response, subprotocol: Optional[str] = None,
                 close_timeout: Optional[float] = 10, ping_interval: Optional[float] = 20,
                 ping_timeout: Optional[float] = 20, max_queue: Optional[int] = 16,
                 logger: Optional[logging.Logger] = None, leftover: bytes = b"") -> None:
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
        self.local_address: Any = sock.getsockname()
        self.remote_address: Any = sock.getpeername()
        #: Seconds between the last keepalive ping and its pong.
        self.latency = 0.0
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._message_lock = threading.Lock()  # one outgoing data message at a time
        self._state_lock = threading.Lock()
        self._queue: List[Event] = []  # read ahead by the keepalive thread (at most max_queue)
        # Reads start in a small buffer; the first read that fills it switches to a
        # large one (see _receive_once), so that idle connections stay small.
        self._read_buffer: Any = bytearray(SMALL_READ_SIZE)
        self._read_view = memoryview(self._read_buffer)
        self._pings: Dict[bytes, Tuple[threading.Event, float]] = {}
        self._closed = _Flag()  # set once the TCP connection is closed
        self._tcp_closed = False  # the same, as a plain attribute for the hot path
        self._shut_wr = False  # we shut our sending side down (a server's close, §7.1.1)
        self._close_exc: Optional[ConnectionClosed] = None
        self._close_deadline: Optional[float] = None  # set when we wait for the TCP close
        self._abort_code: Optional[Tuple[int, str]] = None
        self._cause: Optional[OSError] = None  # the network error that ended it, if one did
        self._failure_reported = False
        if leftover:
            protocol.receive_data(leftover)
        keepalive.register(self)

    # ----------------------------------------------------------------- state

    @property
    def state(self) -> State:
        return State.CLOSED if self._closed.is_set() else self.protocol.state

    @property
    def close_code(self) -> Optional[int]:
        """The peer's close code (1005: none given; 1006: no close frame), or the code
        we failed the connection with; None while the connection is open."""
        return self._close_exc.code if self._close_exc is not None else None

    @property
    def close_reason(self) -> Optional[str]:
        return self._close_exc.reason if self._close_exc is not None else None

    def _closing_exception(self) -> ConnectionClosed:
        """What a closed connection raises, derived from the closing handshake: a new
        instance each time, since a raised exception keeps its traceback, whose frames
        keep this connection (a stored one raised would tie them into a cycle that only
        the garbage collector frees)."""
        if self._close_exc is not None:
            exc = type(self._close_exc)(self._close_exc.code, self._close_exc.reason)
        else:
            exc = self._derive_close()
        exc.__cause__ = self._cause
        return exc

    def _derive_close(self) -> ConnectionClosed:
        protocol = self.protocol
        received, sent = protocol.close_rcvd, protocol.close_sent
        if received is not None and sent is not None and received[0] in _OK_CODES \
                and sent[0] in _OK_CODES:
            return ConnectionClosedOK(*received)  # the closing handshake completed
        if received is not None:
            return ConnectionClosedError(*received)
        if protocol.failure is not None:  # we failed it, whether or not our close got out
            return ConnectionClosedError(protocol.failure.close_code, str(protocol.failure))
        if self._abort_code is not None:
            return ConnectionClosedError(*self._abort_code)
        return ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "")

    def _set_cause(self, exc: OSError) -> None:
        """Remember the first network error, to chain it to the ConnectionClosedError the
        user sees; without its traceback, whose frames would hold this connection."""
        if self._cause is None and not self._closed.is_set():
            self._cause = exc.with_traceback(None)

    def _closed_exception(self) -> ConnectionClosed:
        """For a sender that finds the closing handshake started: wait for it to end
        (at most close_timeout; whoever reads finishes it), so that every thread sees
        the exception the handshake decides, then return that."""
        if not self._closed.is_set():
            self._closed.wait(self.close_timeout)
        return self._closing_exception()

    # ------------------------------------------------------------- receiving

    def recv(self, timeout: Optional[float] = None) -> Data:
        """The next message: ``str`` for text, ``bytes`` for binary. Raises TimeoutError
        after ``timeout`` seconds (the connection stays usable), ConnectionClosedOK or
        ConnectionClosedError once closed, ProtocolError (PayloadTooBig) when the peer's
        data fails the connection."""
        if timeout is None and not self._queue:  # the common case, with one call less
            with self._read_lock:
                event = self._queue.pop(0) if self._queue else self._read_event(None)
        else:
            event = self._next_data_event(timeout, streaming=False)
        if type(event) is not Message:
            raise ConcurrencyError("recv() called while recv_streaming() is in a message")
        return event.data  # type: ignore[union-attr]

    def recv_streaming(self, timeout: Optional[float] = None) -> Iterator[Data]:
        """The pieces of the next message as they arrive (one per frame, or more when a
        frame arrives in parts); ``timeout`` applies to each piece."""
        while True:
            event = self._next_data_event(timeout, streaming=True)
            if type(event) is Message:
                yield event.data  # type: ignore[union-attr]
                return
            yield event.data  # type: ignore[union-attr]
            if event.last:  # type: ignore[union-attr]
                return

    def __iter__(self) -> Iterator[Data]:
        """Messages until the connection closes; a normal close ends the loop."""
        try:
            while True:
                yield self.recv()
        except ConnectionClosedOK:
            return

    def _next_data_event(self, timeout: Optional[float], streaming: bool) -> Event:
        queue = self._queue
        if queue:
            return queue.pop(0)
        deadline = None if timeout is None else monotonic() + timeout
        if not self._read_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise TimeoutError("timed out waiting for a message")
        try:
            if queue:
                return queue.pop(0)
            return self._read_event(deadline, streaming)
        finally:
            self._read_lock.release()

    def _read_event(self, deadline: Optional[float], streaming: bool = False) -> Event:
        """The next data event, handling control frames on the way (read lock held)."""
        protocol = self.protocol
        if streaming and protocol.in_message:
            partial = protocol.take_partial()
            if partial:  # else the message's bytes are still in the buffer: parsed below
                return Fragment(partial, False)
        while True:
            if self._close_deadline is not None:
                self._wait_tcp_close()
                failure = protocol.failure
                if failure is not None and not self._failure_reported:
                    self._failure_reported = True  # raised once, where it was found or not
                    raise failure
                raise self._closing_exception()
            protocol.streaming = streaming
            try:
                event = protocol.next_event()
            except ProtocolError as exc:
                self._failure_reported = True
                self._on_failure(exc)
                raise
            if event is None:
                if self._tcp_closed or protocol.failure is not None:
                    raise self._closing_exception()
                # Read once from the socket into the protocol.
                sock = self.socket
                if deadline is not None and not (self._tls and sock.pending()):
                    if not wait_readable(sock, deadline - monotonic()):
                        raise TimeoutError("timed out waiting for a message")
                if not self._receive_once():
                    raise self._closing_exception()
            cls = type(event)
            if cls is Message or cls is Fragment:
                if self._debug:
                    self._log_data("<", event)
                return event
            self._handle_control(event)

    def _receive_once(self) -> bool:
        """One read from the socket into the protocol (read lock held); False at the
        end of the stream, the connection then finished."""
        try:
            size = self.socket.recv_into(self._read_buffer)
        except OSError as exc:
            self._set_cause(exc)
            size = 0
        if not size:
            self._on_eof()
            return False
        self.protocol.receive_data(self._read_view[:size])
        if size == SMALL_READ_SIZE and len(self._read_buffer) == SMALL_READ_SIZE:
            # Busy: a large buffer now, an anonymous mapping whose pages cost memory
            # only once a read writes to them (bytearray(n) would zero-fill them all).
            self._read_buffer = mmap.mmap(-1, READ_SIZE)
            self._read_view = memoryview(self._read_buffer)
        return True

    def _handle_control(self, event: Event, blocking: bool = True) -> None:
        """Ping, Pong, Close: answer, acknowledge, close (read lock held). With
        ``blocking=False`` (the keepalive thread) a reply that cannot go out at once
        waits for a later tick."""
        if self._debug:
            self.logger.debug("< %r", event)
        cls = type(event)
        if cls is Ping:
            self._send_replies(blocking)
        elif cls is Pong:
            now = monotonic()
            for payload in event.acknowledged:  # type: ignore[attr-defined]
                waiter = self._pings.pop(payload, None)
                if waiter is not None:
                    self.latency = now - waiter[1]
                    waiter[0].set()
        elif cls is Close:
            self._send_replies(blocking)  # the echo (RFC 6455 §5.5.1)
            self._start_tcp_close()

    def _on_failure(self, exc: ProtocolError) -> None:
        """The peer broke the protocol: send the failing close (waiting for a busy
        writer at most until the close deadline), then close TCP."""
        self.logger.info("failing connection with %d: %s", exc.close_code, exc)
        self._start_tcp_close()
        self._flush_replies()
        self._wait_tcp_close()

    def _on_eof(self) -> None:
        self.protocol.receive_eof()
        self._finish()

    # ------------------------------------------------------- closing TCP

    def _start_tcp_close(self) -> None:
        """The closing handshake is over (or failed): RFC 6455 §7.1.1, the server closes
        TCP first; the client waits for it (both bounded by close_timeout)."""
        if self._close_deadline is None:
            self._close_deadline = monotonic() + (self.close_timeout or 0)
        # Not before our close frame is out: the keepalive thread may have had to leave
        # the echo for a later tick (a full send buffer); it calls this again then.
        if self.protocol.side is Side.SERVER and not self.protocol.has_replies:
            try:
                self.socket.shutdown(socket.SHUT_WR)
                self._shut_wr = True
            except OSError:
                pass

    def _server_may_close_now(self) -> bool:
        """RFC 6455 §7.1.1: after sending and receiving a close frame, "the server MUST
        close the underlying TCP connection immediately". True once it may: the closing
        handshake completed, our side is shut down and nothing the client sent is left
        unread (closing over unread bytes would reset the connection: what came after
        the close, e.g. a TLS alert, is read and dropped first). A peek, no wait."""
        protocol = self.protocol
        if not self._shut_wr or protocol.close_rcvd is None or protocol.failure is not None:
            return False
        try:
            return not socket.socket.recv(self.socket, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True  # nothing pending
        except OSError:
            return True  # reset by the peer: nothing left to wait for

    def _wait_tcp_close(self) -> None:
        """Discard what the peer still sends until it closes TCP or time is up, then
        close our end (read lock held). A server closes as soon as it may."""
        if self.protocol.side is Side.SERVER and not self._shut_wr:
            # The keepalive thread may have read the close and left the echo: send it
            # (waiting for one another thread is writing), then shut our side down.
            self._flush_replies()
        deadline = self._close_deadline or monotonic()
        sock, buffer = self.socket, self._read_buffer
        while not self._closed.is_set() and not self._server_may_close_now():
            if not (self._tls and sock.pending()) and not wait_readable(sock, deadline - monotonic()):
                break
            try:
                if not sock.recv_into(buffer):
                    break
            except OSError:
                break
        self._finish()

    def _poll_tcp_close(self) -> None:
        """The keepalive thread's version of _wait_tcp_close: read what is there, finish
        on EOF, after the deadline or when a server may close, never wait (read lock held)."""
        sock = self.socket
        try:
            while not self._server_may_close_now():
                if not (_tls_record_ready(sock) if self._tls else wait_readable(sock, 0)):
                    if monotonic() < (self._close_deadline or 0):
                        return  # look again next tick
                    break
                if not sock.recv_into(self._read_buffer):
                    break  # EOF
        except OSError:
            pass
        self._finish()

    def _finish(self) -> None:
        """Close the socket and record how the connection ended (read lock held)."""
        with self._state_lock:
            if self._closed.is_set():
                return
            self._close_exc = self._closing_exception()
            self._tcp_closed = True
            self._closed.set()
        keepalive.unregister(self)
        # No sendall may be using the descriptor when it is closed. A writer blocked in
        # one fails once TCP is shut down; the writer then closes the socket as it
        # releases the lock (_release_writer). Nothing here waits for the lock.
        if not self._write_lock.acquire(blocking=False):
            try:
                self.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if not self._write_lock.acquire(blocking=False):
                return  # the writer closes it (it checks _tcp_closed after releasing)
        try:
            self.socket.close()
        finally:
            self._write_lock.release()
        if self._debug:
            self.logger.debug("connection closed: %s", self._close_exc)

    def _cut(self, code: int, reason: str) -> bool:
        """Record why the connection is being aborted and cut TCP, which wakes a blocked
        reader or writer; the reader, or the keepalive tick, then finishes. False if it
        was already closed or aborted."""
        with self._state_lock:
            if self._closed.is_set() or self._abort_code is not None:
                return False
            self._abort_code = (code, reason)
        self.logger.info("aborting connection with %d: %s", code, reason)
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def abort(self, code: int = CloseCode.ABNORMAL_CLOSURE, reason: str = "") -> None:
        """Give up on the connection without waiting for anything: a close frame with
        ``code`` if the writer is free and the socket has room (none for 1006), then
        TCP is cut. A blocked sender or reader fails at once. The caller must not hold
        the writer lock."""
        if self._closed.is_set() or self._abort_code is not None:
            return
        if self._write_lock.acquire(blocking=False):
            try:
                if code != CloseCode.ABNORMAL_CLOSURE and wait_writable(self.socket, 0):
                    frame = self.protocol.send_close(code, reason)
                    if frame:
                        self.socket.sendall(frame)
            except OSError:
                pass
            finally:
                self._release_writer(blocking=False)
        if self._cut(code, reason) and self._read_lock.acquire(blocking=False):
            try:
                self._finish()
            finally:
                self._read_lock.release()

    # --------------------------------------------------------------- sending

    def send(self, message: Union[Data, bytearray, memoryview, Iterable[Data]]) -> None:
        """Send a message: ``str`` as text, bytes-like as binary; any other iterable of
        str or bytes-like sends one fragmented message, one frame per item."""
        if type(message) is str or isinstance(message, str):
            opcode, data = _TEXT, message.encode("utf-8")
        elif isinstance(message, _BINARY_TYPES):
            opcode, data = _BINARY, message
        elif isinstance(message, Iterable) and not isinstance(message, dict):
            self._send_fragments(iter(message))
            return
        else:
            raise TypeError(f"cannot send {type(message).__name__}: str, bytes or an iterable of them")
        with self._message_lock:
            self._send_frame(opcode, data, True)

    def _send_fragments(self, items: Iterator[Any]) -> None:
        with self._message_lock:
            previous = next(items, None)
            if previous is None:
                return
            text = isinstance(previous, str)
            opcode = _TEXT if text else _BINARY
            try:
                for item in items:
                    self._send_frame(opcode, _fragment_bytes(previous, text), False)
                    opcode, previous = _CONT, item
                self._send_frame(opcode, _fragment_bytes(previous, text), True)
            except BaseException as exc:
                if opcode == _CONT and not isinstance(exc, ConnectionClosed):
                    # A message cut in the middle cannot be finished: whatever stopped the
                    # iterable, the peer must not take our next message as its continuation.
                    self.abort(CloseCode.INTERNAL_ERROR, "incomplete fragmented message")
                raise

    def _send_frame(self, opcode: int, data: Union[bytes, bytearray, memoryview], fin: bool) -> None:
        self._write_lock.acquire()
        try:
            protocol = self.protocol
            if protocol.close_sent is None and protocol.close_rcvd is None and not self._tcp_closed:
                buffers = protocol.send_data(opcode, data, fin)
                if self._debug:
                    self.logger.debug("> %s %d bytes%s", Opcode(opcode).name, len(data),
                                      "" if fin else " (fin=0)")
                if self._write(buffers):
                    return
        finally:
            self._release_writer()
        raise self._closed_exception()  # the closing handshake has started

    def _write(self, buffers: List[Any]) -> bool:
        """Write buffers (writer lock held). A failed write aborts the connection and
        raises its exception, unless a close is under way (the peer may close TCP once
        it has our close or we have its): then False, and the caller, having released
        the lock, raises _closed_exception()."""
        try:
            for buffer in buffers:
                self.socket.sendall(buffer)
            return True
        except OSError as exc:
            protocol = self.protocol
            if protocol.close_rcvd is not None or protocol.close_sent is not None \
                    or protocol.failure is not None:
                return False
            self._set_cause(exc)
            self._cut(CloseCode.ABNORMAL_CLOSURE, "connection lost while writing")
            raise self._closing_exception() from exc

    def _acquire_writer(self, blocking: bool) -> bool:
        """Take the writer lock for replies: at once or not at all (the keepalive
        thread), else waiting at most until the close deadline once one is set."""
        if not blocking:
            return self._write_lock.acquire(blocking=False)
        deadline = self._close_deadline
        if deadline is None:
            return self._write_lock.acquire()
        return self._write_lock.acquire(timeout=max(0.0, deadline - monotonic()))

    def _unlock_writer(self) -> None:
        """Release the writer lock; close the socket if the connection was finished
        while the lock was taken (_finish leaves that to the lock's holder)."""
        self._write_lock.release()
        if self._tcp_closed and self._write_lock.acquire(blocking=False):
            try:
                self.socket.close()
            finally:
                self._write_lock.release()

    def _release_writer(self, blocking: bool = True) -> None:
        """Release the writer lock, then send what the keepalive thread read but could
        not answer while the lock was taken (a pong, a close echo): now, not at its next
        tick. With ``blocking=False`` (the keepalive thread) only what goes out at once."""
        self._unlock_writer()
        if self.protocol.has_replies and not self._tcp_closed:
            self._flush_replies(blocking)

    def _flush_replies(self, blocking: bool = True) -> None:
        """Send the queued replies; once a close echo is out, the server may close TCP."""
        self._send_replies(blocking)
        if self._close_deadline is not None:
            self._start_tcp_close()

    def _send_replies(self, blocking: bool = True) -> None:
        """Write the pongs and close frames the protocol queued, one per lock hold;
        with ``blocking=False`` (the keepalive thread) leave them while a writer is busy
        or the socket's buffer is full."""
        protocol = self.protocol
        while True:
            if not blocking and not wait_writable(self.socket, 0):
                return
            if not self._acquire_writer(blocking):
                return
            try:
                if self._tcp_closed:
                    return
                frame = protocol.next_reply()
                if frame is None:
                    return
                if self._debug:
                    self.logger.debug("> reply %r", frame[:16])
                try:
                    self.socket.sendall(frame)
                except OSError:
                    return  # the reader sees the connection end
            finally:
                self._unlock_writer()

    def ping(self, data: Union[str, bytes, None] = None) -> threading.Event:
        """Send a ping; the returned Event is set when its pong arrives (RFC 6455 §5.5.2)."""
        payload = os.urandom(4) if data is None else data.encode() if isinstance(data, str) else bytes(data)
        waiter = self._ping(payload, blocking=True)
        assert waiter is not None
        return waiter

    def _ping(self, payload: bytes, blocking: bool) -> Optional[threading.Event]:
        """Send a ping; with ``blocking=False`` (the keepalive thread) give up, returning
        None, when the writer is busy or the socket's buffer is full."""
        if not self._write_lock.acquire(blocking):
            return None
        try:
            if payload in self._pings:
                raise ConcurrencyError("a ping with the same payload is waiting for its pong")
            if self.protocol.close_sent is None and not self._closed.is_set():
                if not blocking and not wait_writable(self.socket, 0):
                    return None
                waiter = threading.Event()
                self._pings[payload] = (waiter, monotonic())
                if self._write([self.protocol.send_ping(payload)]):
                    return waiter
        finally:
            self._release_writer(blocking)
        if not blocking:  # the keepalive thread: the closing handshake needs no ping
            return None
        raise self._closed_exception()

    def pong(self, data: Union[str, bytes] = b"") -> None:
        """Send an unsolicited pong (RFC 6455 §5.5.3)."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._write_lock.acquire()
        try:
            if self.protocol.close_sent is None and not self._closed.is_set():
                if self._write([self.protocol.send_pong(payload)]):
                    return
        finally:
            self._release_writer()
        raise self._closed_exception()

    # --------------------------------------------------------------- closing

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start (or finish) the closing handshake, wait for the peer's close frame and
        for TCP to close, within close_timeout. Harmless when already closed."""
        if self._closed.is_set():
            return
        timeout = self.close_timeout
        deadline = None if timeout is None else monotonic() + timeout
        if not self.send_close(code, reason, timeout):
            self.abort(CloseCode.ABNORMAL_CLOSURE, "close timeout: the peer takes no close frame")
        if self._read_lock.acquire(timeout=-1 if timeout is None else timeout):
            try:
                self._drain_until_closed(deadline)
            finally:
                self._read_lock.release()
        remaining = None if deadline is None else max(0.0, deadline - monotonic())
        if not self._closed.wait(remaining):
            self.abort(CloseCode.ABNORMAL_CLOSURE, "close timeout")

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "",
                   timeout: Optional[float] = None) -> bool:
        """Start the closing handshake without waiting for the peer's answer: send our
        close frame once the writer is free and the socket has room, within ``timeout``
        seconds (None: no limit). False if it could not (nothing sent: abort() gives up
        on the connection). For a server closing many connections at once; close()
        is the usual way."""
        deadline = None if timeout is None else monotonic() + timeout
        if not self._write_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        if self._tcp_closed:
            self._unlock_writer()
            return True
        if deadline is not None and not wait_writable(self.socket, deadline - monotonic()):
            self._unlock_writer()
            return False
        try:
            frame = self.protocol.send_close(code, reason)
            if frame:
                self.logger.debug("> CLOSE %d %s", code, reason)
                self.socket.sendall(frame)
        except OSError as exc:
            self._set_cause(exc)  # the reader sees the end; the user sees why
        finally:
            self._release_writer()
        return True

    def _drain_until_closed(self, deadline: Optional[float]) -> None:
        """Read (dropping data messages) until the connection is closed (read lock held)."""
        while not self._closed.is_set():
            try:
                self._read_event(deadline)
            except (ConnectionClosed, ProtocolError):
                return
            except TimeoutError:
                self.abort(CloseCode.ABNORMAL_CLOSURE, "close timeout")
                self._finish()
                return

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ------------------------------------------------------------ keepalive

    # The keepalive thread's side (keepalive.Keepable): none of it blocks.

    def keepalive_fileno(self) -> int:
        return self.socket.fileno()

    def keepalive_tick(self, now: float) -> bool:
        """Pending replies, the end of aborted or closing connections; False once the
        connection is closing or closed (no more pings)."""
        if self._closed.is_set():
            return False
        if self._abort_code is not None or (
                self._close_deadline is not None and now >= self._close_deadline):
            if self._read_lock.acquire(blocking=False):
                try:
                    self._finish()
                finally:
                    self._read_lock.release()
            elif self._abort_code is None:  # a reader is stuck (in a reply's sendall, say)
                self._cut(CloseCode.ABNORMAL_CLOSURE, "close timeout")
            return False
        if self.protocol.has_replies:
            self._flush_replies(blocking=False)
        return self._close_deadline is None and self.protocol.close_sent is None

    def keepalive_ping(self) -> Optional[threading.Event]:
        try:
            return self._ping(os.urandom(4), blocking=False)
        except (ConnectionClosed, ConcurrencyError):
            return None

    def keepalive_timeout(self) -> None:
        self.abort(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

    def wants_idle_reads(self) -> bool:
        """Should the keepalive thread watch this socket? Not while someone reads it,
        nor while the queue is full (TCP back-pressure), nor once closed."""
        return not (self._closed.is_set() or self._read_lock.locked()
                    or (self.max_queue is not None and len(self._queue) >= self.max_queue))

    def read_idle(self) -> bool:
        """The keepalive thread found the socket readable: read what is there if nobody
        else reads, answer control frames, queue data. False: stop watching for now."""
        if not self._read_lock.acquire(blocking=False):
            return False
        try:
            if self._closed.is_set():
                return False
            if self._close_deadline is not None:
                self._poll_tcp_close()
                return not self._closed.is_set()
            sock = self.socket
            try:
                ready = _tls_record_ready(sock) if self._tls else wait_readable(sock, 0)
            except OSError as exc:  # reset by the peer, say
                self._set_cause(exc)
                self._on_eof()
                return False
            if not ready:
                return not self._tls  # half a TLS record: look again next tick
            return self._receive_once() and self._queue_events()
        finally:
            self._read_lock.release()

    def _queue_events(self) -> bool:
        protocol, queue = self.protocol, self._queue
        while self.max_queue is None or len(queue) < self.max_queue:
            try:
                event = protocol.next_event()
            except ProtocolError as exc:
                # Never wait for the writer here (the keepalive thread): the failing close
                # goes out now if it can, else at the writer's release or a later tick,
                # and close_timeout bounds it all (the tick finishes the connection).
                self.logger.info("failing connection with %d: %s", exc.close_code, exc)
                self._flush_replies(blocking=False)
                self._start_tcp_close()
                return True
            if event is None:
                return True
            if type(event) is Message or type(event) is Fragment:
                queue.append(event)
            else:
                self._handle_control(event, blocking=False)
                if type(event) is Close:
                    return True
        return False

    def _log_data(self, direction: str, event: Event) -> None:
        data = event.data  # type: ignore[attr-defined]
        kind = "TEXT" if isinstance(data, str) else "BINARY"
        self.logger.debug("%s %s %r [%d]", direction, kind, data[:64], len(data))

    def __repr__(self) -> str:
        return f"<Connection {self.protocol.side.value} {self.remote_address} {self.state.name}>"


def _fragment_bytes(item: Any, text: bool) -> Union[bytes, bytearray, memoryview]:
    if text:
        if not isinstance(item, str):
            raise TypeError("a fragmented text message must contain only str")
        return item.encode("utf-8")
    if not isinstance(item, _BINARY_TYPES):
        raise TypeError("a fragmented binary message must contain only bytes-like items")
    return item
