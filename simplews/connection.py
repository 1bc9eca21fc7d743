"""Connection: a WebSocket connection's public API (DESIGN §3), client or server side,
and broadcast(), over the engine in _transport.py (Transport, its base class).

Theory of operation
-------------------
The Protocol decides (what a frame means, what to answer, when the connection has
failed, when a server closes TCP, what a closed connection raises); Transport carries
its decisions out through one read pump (_pump), one write funnel (every write is one
_write under the writer lock) and one close path (abort, _finish).

Threads. The application's threads call recv() / send() / close(); there is no reader
thread. The keepalive thread (keepalive.py) sends the pings, finishes what its close
deadline ends, and reads sockets nobody reads (a reader it finds holding the read lock
hands the connection back as it lets go: _handback). It never blocks: it try-acquires
locks, writes only what the socket takes, reads only what is there, and handles at most
IDLE_CONTROLS control frames of one connection a turn. A reader never waits for a writer
either: a pong goes out if the writer lock is free and the socket has room, else as the
writer lets go or within a keepalive tick.

Locks, and what each guards:

- read lock: the Protocol's reader half (receive_data, next_event), the read buffer,
  the read-ahead queue's producer side, and the right to finish the connection
  (_finish). recv() holds it while it waits for data.
- writer lock: the Protocol's writer half (send_*, next_reply, the compressor) and
  every write to the socket, one frame per acquisition, so that a pong or a close
  goes out between the fragments of a large message.
- message lock: held over a fragmented message (its frames stay together) and a
  broadcast; a one-frame send() takes only the writer lock, and while the message lock
  is held, waits for it.
- state lock: the closed flag and the cut flag, each set once.

Who closes the file descriptor: once finished (the closed flag set under the read
lock: nobody reads after that), the writer lock's holder, never under a sendall: _finish
closes it if the lock is free, else shuts TCP down (a blocked sendall fails at once) and
the writer closes it as it lets go of the lock (_release_writer).

Closing. Once the Protocol is closing (a close frame sent or received, a failure),
close_timeout bounds the rest: the server closes TCP when the Protocol says so (eof_due,
RFC 6455 §7.1.1), the client waits for it, past the deadline TCP is cut. A sender finding
the connection closing waits for the end (bounded alike) and raises what the closing
decided. Sockets stay blocking (another thread may be in sendall): timeouts are polls.
The one exception: a read that must not wait (the keepalive thread's, a deadline) on a
TLS socket makes it non-blocking for that read, holding the writer lock too (_recv_now):
half a TLS record, or a record without data (a KeyUpdate), must be taken in, not waited
on; while a writer holds the lock, only a whole record, peeked at, is read, blocking: by
the keepalive thread in a thread of its own (_read_aside), which a KeyUpdate may hold.
"""
from __future__ import annotations

import contextlib
import logging
import numbers
import os
import threading
from time import monotonic
from typing import Any, Iterable, Iterator, List, Optional, Union, cast

from . import keepalive
from ._io import LONGEST_WAIT, Deadline, Flag, bytes_acked, wait_writable
from ._transport import Transport
from .exceptions import ConcurrencyError, ConnectionClosed, ConnectionClosedOK, ProtocolError
from .frames import CloseCode, Opcode, frame_header, next_mask
from .protocol import Event, Fragment, Message, Side, State

__all__ = ["Connection", "broadcast", "check_options"]

Data = Union[str, bytes]
_BINARY_TYPES = (bytes, bytearray, memoryview)
_TEXT, _BINARY, _CONT = Opcode.TEXT.value, Opcode.BINARY.value, Opcode.CONT.value
_ABNORMAL = CloseCode.ABNORMAL_CLOSURE
_END = object()  # the end of a fragmented message's items


def check_options(*, open_timeout: Optional[float], close_timeout: Optional[float],
                  ping_interval: Optional[float], ping_timeout: Optional[float],
                  max_size: Optional[int], max_queue: Optional[int], **more: Optional[int]) -> None:
    """Refuse, at connect() or serve(), the limits no connection could keep: TypeError
    for a non-number, ValueError for a negative (or NaN) one. Timeouts and
    ``ping_interval`` (0: no pings) are seconds from 0 to LONGEST_WAIT (24.8 days: the
    longest wait of poll(), threads and sockets); ``max_size`` is an int >= 0;
    ``max_queue`` (and ``more``: max_connections) an int >= 1; None: no limit."""
    seconds = {"open_timeout": open_timeout, "close_timeout": close_timeout,
               "ping_interval": ping_interval, "ping_timeout": ping_timeout}
    counts = {"max_size": (max_size, 0), "max_queue": (max_queue, 1), **{k: (v, 1) for k, v in more.items()}}
    for name, value in seconds.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
        if value is not None and not 0 <= value <= LONGEST_WAIT:
            raise ValueError(f"{name} must be 0 to {LONGEST_WAIT:.0f} s (None: no limit): {value!r}")
    for name, (count, least) in counts.items():
        if count is not None and (isinstance(count, bool) or not isinstance(count, numbers.Integral)):
            raise TypeError(f"{name} must be an int or None, not {type(count).__name__}")
        if count is not None and count < least:
            raise ValueError(f"{name} must be {least} or more: {count!r}")


class Connection(Transport):
    """An open WebSocket connection, client or server side: what connect() returns and
    a server's handler receives. send() and ping() are safe from several threads."""

    __slots__ = ()
    _write_by = 0.0  # a broadcast's write must end by then (monotonic; 0: none; see _send_now)

    # ----------------------------------------------------------------- state

    @property
    def state(self) -> State:
        """OPEN, CLOSING (a close frame sent or received) or CLOSED."""
        return State.CLOSED if self._closed.is_set() else self.protocol.state

    @property
    def close_code(self) -> Optional[int]:
        """The peer's close code (1005: none given; 1006: no close frame), or the code
        we failed the connection with; None while the connection is open."""
        return self._close_exc.code if self._close_exc is not None else None

    @property
    def close_reason(self) -> Optional[str]:
        """The reason that came with close_code; None while the connection is open."""
        return self._close_exc.reason if self._close_exc is not None else None

    # ------------------------------------------------------------- receiving

    def recv(self, timeout: Optional[float] = None) -> Data:
        """The next message: ``str`` for text, ``bytes`` for binary. Raises TimeoutError
        after ``timeout`` seconds (the connection stays usable), ConnectionClosedOK or
        ConnectionClosedError once closed, ProtocolError (PayloadTooBig) when the peer's
        data fails the connection."""
        event: Optional[Event]  # (None only from the pump in idle mode)
        queue = self._queue  # the common cases first, with one call less:
        if queue:  # read ahead (popped without the lock: list.pop is atomic)
            try:
                if type(queue[0]) is not Message:  # recv_streaming()'s: left in place
                    raise ConcurrencyError(_STREAMING)
                event = queue.pop(0)
            except IndexError:  # a thread in recv_streaming() took the last one meanwhile
                raise ConcurrencyError(_STREAMING) from None
            if self._handback:  # the queue has room again
                self._hand_back()
        elif timeout is None:
            self._read_lock.acquire()  # (not "with": that costs ~90 ns more)
            try:
                if queue:  # (read ahead meanwhile: rare)
                    _leave_pieces(queue)
                event = queue.pop(0) if queue else self._pump(None)
                if type(event) is not Message:  # (put back before another reader can read)
                    raise self._streamed(event)
            finally:
                self._read_lock.release()
            if self._handback:  # the keepalive thread may watch the socket again
                self._hand_back()
        else:
            event = self._next_data_event(timeout, streaming=False)
        if type(event) is not Message:
            raise self._streamed(event)
        return event.data

    def _streamed(self, event: Optional[Event]) -> ConcurrencyError:
        """recv() took a piece of a message that recv_streaming() is reading (the pump's,
        or one another thread let through): put it back first, for recv_streaming()."""
        self._queue.insert(0, cast(Event, event))
        return ConcurrencyError(_STREAMING)

    def recv_streaming(self, timeout: Optional[float] = None) -> Iterator[Data]:
        """The pieces of the next message as they arrive (one per frame, or more when a
        frame arrives in parts); ``timeout`` applies to each piece."""
        while True:
            event = self._next_data_event(timeout, streaming=True)
            if isinstance(event, Message):
                yield event.data
                return
            fragment = cast(Fragment, event)
            yield fragment.data
            if fragment.last:
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
            if not streaming:
                _leave_pieces(queue)
            event = queue.pop(0)
            if self._handback:  # the queue has room again
                self._hand_back()
            return event
        deadline = Deadline(timeout)
        if not self._read_lock.acquire(timeout=deadline.lock_timeout()):
            raise TimeoutError("timed out waiting for a message")
        try:
            if queue and not streaming:
                _leave_pieces(queue)
            read = queue.pop(0) if queue else self._pump(deadline, streaming=streaming)
            if not streaming and type(read) is not Message:
                raise self._streamed(read)
            return cast(Event, read)
        finally:
            self._read_lock.release()
            if self._handback:  # the keepalive thread may watch the socket again
                self._hand_back()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --------------------------------------------------------------- sending

    def send(self, message: Union[Data, bytearray, memoryview, Iterable[Data]]) -> None:
        """Send a message: ``str`` as text, bytes-like as binary; any other iterable of
        str or bytes-like sends one fragmented message, one frame per item."""
        data: Union[bytes, bytearray, memoryview]
        if type(message) is str or isinstance(message, str):
            opcode, data = _TEXT, message.encode("utf-8")
        elif isinstance(message, _BINARY_TYPES):
            opcode, data = _BINARY, message
        elif isinstance(message, Iterable) and not isinstance(message, dict):
            self._send_fragments(iter(message))
            return
        else:
            raise TypeError(f"cannot send {type(message).__name__}: str, bytes or an iterable of them")
        self._write_lock.acquire()  # one frame: the writer lock is enough, unless
        if self._message_lock.locked():  # a fragmented message may be between frames
            self._write_lock.release()
            with self._message_turn():
                self._write_lock.acquire()
                self._send_frame(opcode, data, True)
        else:
            self._send_frame(opcode, data, True)

    @contextlib.contextmanager
    def _message_turn(self) -> Iterator[None]:
        """Hold the message lock; ConcurrencyError for a send() from the iterable of this
        thread's own fragmented send(), which would wait for itself forever."""
        thread = threading.get_ident()
        if self._message_owner == thread:
            raise ConcurrencyError("send() called from the iterable of a fragmented send()")
        with self._message_lock:
            self._message_owner = thread
            try:
                yield
            finally:
                self._message_owner = 0

    def _send_fragments(self, items: Iterator[Any]) -> None:
        with self._message_turn():
            previous = next(items, _END)
            if previous is _END:  # an empty iterable: no message
                return
            text = isinstance(previous, str)
            opcode = _TEXT if text else _BINARY
            try:
                last = False
                while not last:  # each item is sent once the next is known (or the end)
                    item = next(items, _END)
                    last = item is _END
                    frame_data = _fragment_bytes(previous, text)
                    self._write_lock.acquire()
                    self._send_frame(opcode, frame_data, last)
                    opcode, previous = _CONT, item
            except BaseException as exc:
                if opcode == _CONT and not isinstance(exc, ConnectionClosed):
                    # A message cut in the middle cannot be finished: whatever stopped the
                    # iterable, the peer must not take our next message as its continuation.
                    self.abort(CloseCode.INTERNAL_ERROR, "incomplete fragmented message")
                raise

    def _send_frame(self, opcode: int, data: Union[bytes, bytearray, memoryview], fin: bool) -> None:
        """Write one data frame; the caller took the writer lock, released here."""
        try:
            protocol = self.protocol
            if not protocol.closing and not self._tcp_closed:
                buffers = protocol.send_data(opcode, data, fin)
                if self._debug:
                    self.logger.debug("> %s %d bytes%s", Opcode(opcode).name, len(data),
                                      "" if fin else " (fin=0)")
                if self._write(buffers):
                    return
        finally:
            self._release_writer()
        raise self._closed_exception()  # the connection is closing

    def _send_now(self, opcode: int, data: bytes, frame: Iterable[Any], timeout: float,
                  wait: float = 0.0) -> bool:
        """broadcast()'s send: the whole message now, or nothing and False while another
        message or writer is busy (``wait``: seconds to wait for them), the socket has no
        room or the connection is closing. ``frame``: the message framed for a server
        without compression (RFC 6455 §5.3: only a client masks). A write still going on
        ``timeout`` s later is cut by the keepalive thread (SO_SNDTIMEO would bound each
        send() call, not the write: a slow reader's progress restarts it)."""
        if not self._message_lock.acquire(timeout=wait):
            return False
        try:
            if not self._write_lock.acquire(timeout=wait):
                return False
            try:
                protocol = self.protocol
                if protocol.closing or self._tcp_closed or not wait_writable(self.socket, 0):
                    return False
                if protocol.side is Side.CLIENT or protocol.deflate is not None:
                    frame = protocol.send_data(opcode, data)
                self._write_by = monotonic() + timeout
                keepalive.wake(self, self._write_by)
                try:
                    return self._write(frame)
                finally:
                    self._write_by = 0.0
            finally:
                self._release_writer()
        finally:
            self._message_lock.release()

    def ping(self, data: Union[str, bytes, None] = None) -> threading.Event:
        """Send a ping; the returned Event is set when its pong arrives (RFC 6455 §5.5.2)."""
        payload = os.urandom(4) if data is None else data.encode() if isinstance(data, str) else bytes(data)
        waiter = self._ping(payload, threading.Event(), idle=False)
        assert waiter is not None
        return waiter

    def pong(self, data: Union[str, bytes] = b"") -> None:
        """Send an unsolicited pong (RFC 6455 §5.5.3)."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._write_lock.acquire()
        try:
            if not self.protocol.closing and not self._tcp_closed \
                    and self._write([self.protocol.send_pong(payload)]):
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
        deadline = Deadline(self.close_timeout)
        if not self.send_close(code, reason, self.close_timeout):
            self.abort(_ABNORMAL, "close timeout: the peer takes no close frame")
        if self._read_lock.acquire(timeout=deadline.lock_timeout()):
            try:
                while not self._closed.is_set():  # drop data until the peer's close
                    self._pump(deadline)
            except (ConnectionClosed, ProtocolError):
                pass
            except TimeoutError:
                self.abort(_ABNORMAL, "close timeout")
                self._finish()
            finally:
                self._read_lock.release()
        if not self._closed.wait(deadline.remaining()):
            self.abort(_ABNORMAL, "close timeout")

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "",
                   timeout: Optional[float] = None) -> bool:
        """Start the closing handshake without waiting for the peer's answer: send our
        close frame once the writer is free and the socket has room, within ``timeout``
        seconds (None: no limit). False if it could not (nothing sent: abort() gives up
        on the connection). For a server closing many connections at once; close()
        is the usual way."""
        deadline = Deadline(timeout)
        if not self._write_lock.acquire(timeout=deadline.lock_timeout()):
            return False
        try:
            if self._tcp_closed or self.protocol.close_sent is not None:
                return True
            remaining = deadline.remaining()
            if remaining is not None and not wait_writable(self.socket, remaining):
                return False
            self.logger.debug("> CLOSE %d %s", code, reason)
            self._write([self.protocol.send_close(code, reason)])
            self._start_closing()
        finally:
            self._release_writer()
        self._flush_replies(True)  # a server answering a close shuts TCP down now
        return True

    def abort(self, code: int = CloseCode.ABNORMAL_CLOSURE, reason: str = "") -> None:
        """Give up without waiting: the Protocol fails the connection with ``code`` (RFC
        6455 §7.1.7), its close frame goes out if the writer and the socket have room
        (none for 1006), TCP is cut; blocked senders and readers fail at once."""
        if self._closed.is_set() or self._cut:
            return
        self.protocol.fail(code, reason)  # queues the close frame that the flush sends
        self._flush_replies(True)
        self._cut_tcp(code, reason)
        self._finish_if_unread()

    def keepalive_fileno(self) -> int:
        return self.socket.fileno()

    def keepalive_ping(self) -> Optional[Flag]:
        """The keepalive thread's ping, or None if it cannot go out now (again next tick)."""
        try:  # (a Flag costs a tenth of a threading.Event; next_mask: no syscall)
            return self._ping(next_mask(), Flag(), idle=True)
        except (ConnectionClosed, ConcurrencyError):
            return None

    def bytes_taken(self) -> Optional[int]:
        """While the socket is full, the bytes the peer's TCP has acknowledged so far; None
        while it has room (a writer busy compressing, say) or where that is not known."""
        return None if wait_writable(self.socket, 0) else bytes_acked(self.socket)

    def keepalive_timeout(self) -> None:
        self.abort(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

    def keepalive_tick(self, now: float) -> Optional[float]:
        if self._write_by and now >= self._write_by:  # a broadcast's write stalled
            self._cut_tcp(_ABNORMAL, "broadcast: the write stalled")
        return super().keepalive_tick(now)

    def __repr__(self) -> str:
        return f"<Connection {self.protocol.side.value} {self.remote_address} {self.state.name}>"


_STREAMING = "recv() called while recv_streaming() is in a message"


def _leave_pieces(queue: List[Event]) -> None:
    """recv() takes no piece of a message that recv_streaming() reads: it stays first."""
    first = next(iter(queue), None)  # (not queue[0]: another thread may pop meanwhile)
    if first is not None and type(first) is not Message:
        raise ConcurrencyError(_STREAMING)


def _fragment_bytes(item: Any, text: bool) -> Union[bytes, bytearray, memoryview]:
    if text:
        if not isinstance(item, str):
            raise TypeError("a fragmented text message must contain only str")
        return item.encode("utf-8")
    if not isinstance(item, _BINARY_TYPES):
        raise TypeError("a fragmented binary message must contain only bytes-like items")
    return item


_broadcast_logger = logging.getLogger("simplews.broadcast")
BROADCAST_RETRY = 0.01  # seconds, in all, that broadcast() waits for busy connections' locks


def broadcast(connections: Iterable[Connection], message: Union[str, bytes, bytearray, memoryview],
              *, write_timeout: float = 1.0) -> List[Connection]:
    """Send ``message`` (str: text, bytes-like: binary) to every connection that can take
    it now, and return those that did not; e.g. ``broadcast(server.connections, "news")``
    (``Server.connections``: a copy of the set of a server's open connections).

    Policy: never wait for one connection. A connection is skipped, left open and
    without this message, when it cannot take the message at once: another thread is
    sending on it, its socket's send buffer is full (a client that reads slowly or not
    at all), or it is closing or closed. Those are tried once more at the end, waiting
    10 ms in all for a sender to let go (one whose write is over may not have run yet).
    A message that has started to go out cannot be withdrawn: if it is not all out
    within ``write_timeout`` seconds, the connection is closed (1006). Skipped and closed
    connections are returned and logged (INFO, logger "simplews.broadcast"); the caller
    may close the ones that keep lagging.

    The message is framed once and the same bytes go to every server connection
    without compression; client connections (masked) and compressed ones (RFC 7692)
    frame it themselves. It is sent in one frame.
    """
    if isinstance(message, str):
        opcode, data = Opcode.TEXT, message.encode("utf-8")
    else:
        opcode, data = Opcode.BINARY, bytes(message)
    frame = [frame_header(opcode, len(data)) + data]  # RFC 6455 §5.2: FIN, not masked

    def sent(connection: Connection, wait: float) -> bool:
        try:
            return connection._send_now(opcode, data, frame, write_timeout, wait)
        except ConnectionClosed:
            return False

    skipped = [connection for connection in connections if not sent(connection, 0.0)]
    if skipped:  # a sender whose write is over may not have run yet to let go of the locks
        deadline = Deadline(BROADCAST_RETRY)
        skipped = [c for c in skipped if not sent(c, deadline.remaining() or 0.0)]
    if skipped:
        _broadcast_logger.info("broadcast skipped %d connection(s): %s", len(skipped),
                    ", ".join(repr(c) for c in skipped[:10]) + (", ..." if len(skipped) > 10 else ""))
    return skipped
