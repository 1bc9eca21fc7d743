"""One end of a WebSocket connection that a test steers: what FakeServer's peers and
RawClient share.

Threads. Each end has one reader thread of its own, started once its socket is
connected (for a FakeServer peer it runs the opening handshake first). It alone reads
the socket: it records every frame, feeds the Protocol's reader half, queues messages
for ``recv()`` (so what arrives before the test asks is kept), answers pings and close
frames, and at the end it alone closes the socket. The test's threads write (send,
ping, close, send_raw...) under the write lock, which the reader takes for its replies.
No simplews Connection is involved, so nothing else (such as the process-wide
keepalive thread) answers for this end: ``stop_reading()`` really stalls it.

Stopping: a flag and a byte on a wake-up socket pair, which the reader waits on with
its socket; a TCP shutdown as the last resort for a reader stuck inside a TLS record.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import struct
import threading
from collections import deque
from time import monotonic
from typing import Deque, Dict, Iterable, List, Optional, Tuple, Union

from simplews._io import LONGEST_WAIT
from simplews.exceptions import ConnectionClosed, ConnectionClosedError, ProtocolError
from simplews.frames import CloseCode, Opcode
from simplews.protocol import Close, Event, Message, Pong, Protocol, Side

from .recorder import Frame, FrameSplitter, RecordedFrame, serialize_frame

__all__ = ["WireEnd", "DEFAULT_TIMEOUT", "Sendable"]

logger = logging.getLogger("simplews.testing")

DEFAULT_TIMEOUT = 5.0  # what a test waits for at most, unless it says otherwise
JOIN_TIMEOUT = 2.0  # for a reader thread to notice it must stop
Data = Union[str, bytes, bytearray, memoryview]
Sendable = Union[Data, Iterable[Data]]


def _deadline(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else monotonic() + timeout


def remaining(deadline: Optional[float]) -> Optional[float]:
    """Seconds to ``deadline`` (None: no limit), at most LONGEST_WAIT: what a wait takes."""
    return None if deadline is None else min(max(0.0, deadline - monotonic()), LONGEST_WAIT)


def _tcp_shutdown(sock: socket.socket, how: int) -> None:
    """shutdown() on the file descriptor itself: SSLSocket.shutdown() would also drop
    its TLS state under a reader's feet."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, how)


class WireEnd:
    """One end of a connection: a socket, a sans-I/O Protocol and one reader thread.

    ``frames`` lists every frame the other side sent (a ``RecordedFrame``), in order;
    ``close_code`` / ``close_reason`` are its close frame's, None until one came.
    Set ``answer_pings = False`` to keep reading but leave pings unanswered.
    """

    side = Side.SERVER

    def __init__(self, sock: socket.socket, *, name: str, max_size: Optional[int]) -> None:
        self.sock = sock
        self.protocol: Optional[Protocol] = None
        self.max_size = max_size
        self.frames: List[RecordedFrame] = []
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self.answer_pings = True
        self.error: Optional[BaseException] = None  # a protocol violation or network error seen
        self._splitter = FrameSplitter()
        self._messages: Deque[Union[str, bytes]] = deque()
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._paused = False
        self._reader_paused = False
        self._ended = False  # no more messages: a close frame came and was answered, or TCP is gone
        self._done = False  # the reader has finished and closed the socket
        self._fin_sent = False
        self._linger0 = False
        self._pongs: Dict[bytes, List[threading.Event]] = {}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ------------------------------------------------------------ what tests call

    @property
    def closed(self) -> bool:
        """Is the TCP connection closed (and the reader thread finished)?"""
        return self._done

    def send(self, message: Sendable) -> None:
        """Send a message like Connection.send: str is text, bytes-like is binary, any other
        iterable is one fragmented message, a frame per item. Raises ConnectionClosed once
        this end sent its close frame or lost TCP."""
        protocol = self._require_protocol()
        if isinstance(message, (str, bytes, bytearray, memoryview)):
            pieces: List[Data] = [message]
        else:
            pieces = list(message)
        if not pieces:
            return
        text = isinstance(pieces[0], str)
        kinds = (str,) if text else (bytes, bytearray, memoryview)
        if not all(isinstance(piece, kinds) for piece in pieces):  # before any frame goes out
            raise TypeError("the fragments of one message must all be str or all bytes-like")
        payloads = [piece.encode("utf-8") if isinstance(piece, str) else bytes(piece) for piece in pieces]
        opcode = Opcode.TEXT if text else Opcode.BINARY
        with self._write_lock:
            self._check_open(protocol)
            for index, data in enumerate(payloads):
                last = index == len(payloads) - 1
                for buffer in protocol.send_data(opcode if index == 0 else Opcode.CONT, data, last):
                    self._write(buffer)

    def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False,
                   rsv2: bool = False, rsv3: bool = False, masked: Optional[bool] = None) -> None:
        """Send one frame as given, checked by nothing and unknown to the Protocol (a close
        frame sent this way does not count as ours). ``masked`` defaults to the side's rule:
        a client masks, a server does not."""
        mask = (self.side is Side.CLIENT) if masked is None else masked
        self.send_raw(serialize_frame(Frame(opcode, bytes(payload), fin, rsv1, rsv2, rsv3), mask=mask))

    def send_raw(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Write bytes straight to the socket: broken frames, half a frame, anything."""
        with self._write_lock:
            if self._done or self._fin_sent:
                raise self._closed_exc()
            self._write(data)

    def recv(self, timeout: Optional[float] = DEFAULT_TIMEOUT) -> Union[str, bytes]:
        """The next message the other side sent (str for text, bytes for binary), in order,
        including those that came before this call. Raises TimeoutError if none comes
        within ``timeout`` (None: wait for ever), ConnectionClosed once the connection
        is over and every message has been taken."""
        deadline = _deadline(timeout)
        with self._cond:
            while not self._messages:
                if self._ended:
                    raise self._closed_exc()
                left = remaining(deadline)
                if left == 0:
                    raise TimeoutError(f"{self!r}: no message within {timeout} s")
                self._cond.wait(left)
            return self._messages.popleft()

    def expect(self, expected: Union[str, bytes], timeout: Optional[float] = DEFAULT_TIMEOUT
               ) -> Union[str, bytes]:
        """recv() and check: AssertionError (with both values) if the message differs."""
        message = self.recv(timeout)
        if message != expected:
            raise AssertionError(f"expected {expected!r}, received {message!r}")
        return message

    def wait_frame(self, opcode: Optional[int] = None, *, after: int = 0,
                   timeout: Optional[float] = DEFAULT_TIMEOUT) -> RecordedFrame:
        """The first frame in ``frames[after:]`` with ``opcode`` (any if None), waiting
        for it if needed: e.g. ``wait_frame(Opcode.PING)`` for a client's keepalive ping."""
        deadline = _deadline(timeout)
        with self._cond:
            while True:
                for frame in self.frames[after:]:
                    if opcode is None or frame.opcode == opcode:
                        return frame
                left = remaining(deadline)
                if self._done or left == 0:
                    raise TimeoutError(f"{self!r}: no frame with opcode {opcode} within {timeout} s")
                self._cond.wait(left)

    def ping(self, data: Optional[bytes] = None) -> threading.Event:
        """Send a ping (4 random bytes unless ``data`` is given): an Event set when the
        other side's pong for it arrives."""
        protocol = self._require_protocol()
        payload = os.urandom(4) if data is None else bytes(data)
        waiter = threading.Event()
        with self._write_lock:
            self._check_open(protocol)
            self._pongs.setdefault(payload, []).append(waiter)
            self._write(protocol.send_ping(payload))
        return waiter

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "",
              timeout: Optional[float] = DEFAULT_TIMEOUT) -> None:
        """Close as a well-behaved endpoint does: send a close frame, wait for the other
        side's (a server then closes TCP; a client waits for the server to), within
        ``timeout``, after which TCP is closed anyway. Does nothing if already closed."""
        protocol = self._require_protocol()
        deadline = _deadline(timeout)
        if self._write_lock.acquire(timeout=-1 if timeout is None else timeout):  # (a send may be stuck)
            try:
                if self._done or self._fin_sent:
                    return
                frame = protocol.send_close(code, reason)
                if frame:
                    self._write_quietly(frame)
            finally:
                self._write_lock.release()
        if not self.wait_done(remaining(deadline)):
            logger.info("%r: no closing handshake within %s s: closing TCP", self, timeout)
            self._stop()

    def drop(self) -> None:
        """Close TCP with no close frame (a FIN): the other side sees an abnormal closure,
        1006. What it sends afterwards is still read and recorded until it closes too.
        A send() stuck meanwhile (the other side reads nothing) fails: ConnectionClosed."""
        with self._cond:  # (not the write lock: a stuck send() holds it)
            if self._done or self._fin_sent:
                return
            self._fin_sent = True
        _tcp_shutdown(self.sock, socket.SHUT_WR)
        logger.debug("%r: dropped", self)

    def reset(self) -> None:
        """Reset TCP (SO_LINGER 0, then close: an RST): the other side gets ECONNRESET."""
        if self._done:
            return
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._linger0 = True
        self._stop()
        logger.debug("%r: reset", self)

    def stop_reading(self) -> None:
        """Stop reading the socket: pings go unanswered and what the other side sends
        waits in the kernel's buffers (a stalled peer). Returns once the reader is idle."""
        with self._cond:
            self._paused = True
        self._wake()
        deadline = monotonic() + JOIN_TIMEOUT
        with self._cond:
            while not (self._reader_paused or self._done or self._stopping):
                left = deadline - monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self!r}: the reader did not pause")
                self._cond.wait(left)

    def resume_reading(self) -> None:
        """Undo stop_reading(): what was held back is read and answered now."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def wait_closed(self, timeout: Optional[float] = DEFAULT_TIMEOUT) -> Tuple[int, str]:
        """Wait until TCP is closed; the other side's close code and reason (1006 and ""
        if it sent no close frame). TimeoutError if still open after ``timeout``."""
        if not self.wait_done(timeout):
            raise TimeoutError(f"{self!r}: still open after {timeout} s")
        if self.close_code is None:
            return CloseCode.ABNORMAL_CLOSURE, ""
        return self.close_code, self.close_reason or ""

    # --------------------------------------------------------------- writing

    def _require_protocol(self) -> Protocol:
        if self.protocol is None:
            raise RuntimeError(f"{self!r}: no WebSocket connection (the handshake did not complete)")
        return self.protocol

    def _check_open(self, protocol: Protocol) -> None:  # under the write lock
        if self._done or self._fin_sent or protocol.close_sent is not None:
            raise self._closed_exc()

    def _write(self, data: Union[bytes, bytearray, memoryview]) -> None:  # under the write lock
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._closed_exc() from exc

    def _write_quietly(self, data: bytes) -> bool:  # under the write lock
        try:
            self.sock.sendall(data)
        except OSError as exc:
            logger.debug("%r: write failed: %s", self, exc)
            return False
        return True

    def _closed_exc(self) -> ConnectionClosed:
        if self.protocol is None:
            return ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "")
        return self.protocol.close_exc()

    def _flush(self, protocol: Protocol) -> None:
        """Send the replies the Protocol decided on (pongs, the close echo, a failing close)."""
        with self._write_lock:
            while True:
                reply = protocol.next_reply()
                if reply is None:
                    break
                if self._done or self._fin_sent:
                    continue
                if not self.answer_pings and reply[0] & 0x0F == Opcode.PONG:
                    continue
                if not self._write_quietly(reply):
                    break

    def close_gracefully(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> bool:
        """Send a close frame if it can go out at once (never blocks): is a closing
        handshake worth waiting for? (Not while stop_reading() holds: none would be read.)"""
        protocol = self.protocol
        if protocol is None or self._done or self._fin_sent:
            return False
        if not self._write_lock.acquire(timeout=0.1):
            return False
        try:
            if protocol.close_sent is not None:
                return not self._paused
            if not select.select([], [self.sock], [], 0)[1]:
                return False
            return self._write_quietly(protocol.send_close(code, reason)) and not self._paused
        except (OSError, ValueError):
            return False
        finally:
            self._write_lock.release()

    # --------------------------------------------------------------- the reader

    def _open(self) -> Optional[bytes]:
        """The reader's first step: the bytes read past the handshake, or None if there is
        no WebSocket connection to read (refused, failed, stopped)."""
        return b""

    def _run(self) -> None:
        try:
            leftover = self._open()
            if leftover is not None:
                self._read_loop(leftover)
        except Exception:
            logger.exception("%r: reader failed", self)
        finally:
            self._finish()

    def _read_loop(self, leftover: bytes) -> None:
        if leftover and self._received(leftover):
            return
        sock = self.sock
        while True:
            with self._cond:
                if self._paused and not self._stopping:
                    self._reader_paused = True
                    self._cond.notify_all()
                    while self._paused and not self._stopping:
                        self._cond.wait()
                    self._reader_paused = False
                if self._stopping:
                    return
            pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
            if not pending and not self._wait_socket():
                continue  # woken up: look at the flags again
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                continue
            except OSError as exc:
                logger.debug("%r: read failed: %s", self, exc)
                self.error = self.error or exc
                return
            if not data or self._received(data):
                return

    def _wait_socket(self, write: bool = False, deadline: Optional[float] = None) -> bool:
        """Wait for the socket (readable, or writable) until ``deadline``: False if woken up
        (stop, pause) or out of time."""
        if self._stopping:
            return False
        reading = [self._wake_r] if write else [self._wake_r, self.sock]
        ready = select.select(reading, [self.sock] if write else [], [], remaining(deadline))
        if self._wake_r in ready[0]:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        return self.sock in ready[0] or self.sock in ready[1]

    def _received(self, data: bytes) -> bool:
        """Handle bytes read: is this end done with the connection (close TCP now)?"""
        protocol = self.protocol
        assert protocol is not None
        frames = self._splitter.feed(data, monotonic())
        if frames:
            with self._cond:
                self.frames.extend(frames)
                self._cond.notify_all()
        protocol.receive_data(data)
        while True:
            try:
                event = protocol.next_event()
            except ProtocolError as exc:
                logger.info("%r: protocol error: %s", self, exc)
                self.error = exc
                break
            if event is None:
                break
            self._on_event(event)
        self._flush(protocol)
        if protocol.close_rcvd is not None or protocol.failed is not None:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
        return protocol.eof_due

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Message):
            with self._cond:
                self._messages.append(event.data)
                self._cond.notify_all()
        elif isinstance(event, Pong):
            for payload in event.acknowledged:
                for waiter in self._pongs.pop(payload, ()):
                    waiter.set()
        elif isinstance(event, Close):
            self.close_code, self.close_reason = event.code, event.reason

    def _finish(self) -> None:
        """Close the socket (the reader's last act): FIN, or RST after reset() (then a FIN
        first only if a send() is stuck: it must let go of the socket for the close)."""
        locked = self._linger0 and self._write_lock.acquire(timeout=0.1)
        if not locked:
            _tcp_shutdown(self.sock, socket.SHUT_RDWR)  # also fails a sendall blocked on a full buffer
            locked = self._write_lock.acquire(timeout=JOIN_TIMEOUT)
        try:
            self.sock.close()
        finally:
            if locked:
                self._write_lock.release()
        with self._cond:
            self._done = self._ended = True
            self._wake_r.close()
            self._wake_w.close()
            self._cond.notify_all()
        logger.debug("%r: closed", self)

    # --------------------------------------------------------------- stopping

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
            if not self._done:
                with contextlib.suppress(OSError):
                    self._wake_w.send(b"\0")

    def wait_done(self, timeout: Optional[float]) -> bool:
        """Wait up to ``timeout`` for the reader to finish: has it?"""
        deadline = _deadline(timeout)
        with self._cond:
            while not self._done:
                left = remaining(deadline)
                if left == 0:
                    return False
                self._cond.wait(left)
        return True

    def start_reader(self) -> None:
        """Start the reader thread (its owner does, once the socket is connected)."""
        self._thread.start()

    def signal_stop(self) -> None:
        """Ask the reader to close the connection now (the first half of _stop)."""
        with self._cond:
            self._stopping = True
        self._wake()

    def _stop(self) -> None:
        """Close the connection now, whatever its state, and join the reader."""
        self.signal_stop()
        self.join()

    def join(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Wait for the reader to finish (after signal_stop), cutting TCP if it is stuck."""
        if self._thread.ident is None:  # never started: nothing reads, close here
            if not self._done:
                self._finish()
            return
        if self._thread is threading.current_thread():
            return
        self._thread.join(timeout)
        if self._thread.is_alive():  # stuck in a TLS record or a write: cut TCP under it
            _tcp_shutdown(self.sock, socket.SHUT_RDWR)
            self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("%r: the reader thread did not stop", self)
