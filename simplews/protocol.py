"""The sans-I/O WebSocket protocol (RFC 6455 §5-§7, RFC 7692 §6-§7).

``Protocol`` is fed bytes (``receive_data``) and hands out events (``next_event``); ``send_*()``
return the bytes to write. It never touches a socket, a thread or a clock. Its reader half
(``receive_*``, ``next_event``) and writer half (``send_*``, ``next_reply``) may run in two
threads at once; replies the reader decides on (pongs, the close echo, the failing close) wait
in ``replies`` for the writer half. It decides how the connection ends (RFC 6455 §7): ``fail()``,
``eof_due`` (when a server closes TCP), ``close_exc()``; after a close frame or a failure,
input is discarded. The rest of a large plain frame may be read straight into ``direct``
(then ``received_direct(n)``).
"""
from __future__ import annotations

import codecs
import struct
import zlib
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from .exceptions import (ConnectionClosed, ConnectionClosedError, ConnectionClosedOK,
                         PayloadTooBig, ProtocolError)
from .extensions import DeflateParams, Deflater, Inflater
from .events import Close, DataEvent, Event, Fragment, Message, Ping, Pong, Side, State
from .frames import (LARGE_PAYLOAD, MASK_PIECE, MASKS, SHORT_HEADERS, CloseCode, Opcode,
                     PayloadBuffer, apply_mask, check_control_payload, check_header, decode_utf8,
                     frame_header, frame_size, mask_frame, mask_in_pieces, mask_in_place, next_mask,
                     parse_close, phase_mask, refill_masks, serialize_close, take_message,
                     utf8_decoder)

__all__ = ["Side", "State", "Protocol", "Event", "Message", "Fragment", "Ping", "Pong", "Close",
           "DataEvent"]

Data = Union[bytes, bytearray, memoryview]

_U64 = struct.Struct("!Q")
_OK_CODES = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD)
DIRECT_MIN = 256 * 1024  # a plain frame with this much still to come is read straight in
DIRECT_MAX_UNLIMITED = 64 << 20  # (into a buffer of its length: without max_size, up to this)
#: Each fragment counts at least this many bytes against max_size (bounds the frame count);
#: a compressed one this many more than it inflates to.
MIN_FRAGMENT_COST = 16
_CONT, _TEXT, _BINARY = Opcode.CONT.value, Opcode.TEXT.value, Opcode.BINARY.value  # plain ints
_CLOSE, _PING, _PONG = Opcode.CLOSE.value, Opcode.PING.value, Opcode.PONG.value


class Protocol:
    """One side of an open WebSocket connection."""

    __slots__ = ("side", "max_size", "deflate", "streaming", "close_sent", "close_rcvd", "failure",
                 "failed", "eof", "closing", "discarding", "_client", "_deflater", "_inflater",
                 "_compress_out", "_buf", "_frame", "_msg_opcode", "_msg_compressed", "_msg_size",
                 "_msg_streamed", "_parts", "_decoder", "replies", "_pings", "_plain_below",
                 "_threshold", "direct", "_big", "_full", "__dict__")

    def __init__(self, side: Side, *, max_size: Optional[int] = 2 ** 20,
                 deflate: Optional[DeflateParams] = None, compress_level: int = 2,
                 mem_level: int = 8, compress_threshold: int = 0) -> None:
        self.side = side
        self.max_size = max_size
        self.deflate = deflate
        self._client = side is Side.CLIENT
        self._deflater = Deflater(deflate, compress_level, mem_level) if deflate else None
        self._inflater = Inflater(deflate) if deflate else None
        self._compress_out = False  # is the message being sent compressed?
        # RFC 7692 §6.1: messages under _threshold go out uncompressed, under _plain_below fast.
        self._threshold = compress_threshold if deflate else 0
        self._plain_below = min(126, compress_threshold) if deflate else 126
        self._buf = bytearray()  # what was received and not parsed yet
        self._frame: Optional[List[Any]] = None  # [opcode, fin, mask, remaining, offset]
        self._msg_opcode = 0  # 0: none, else TEXT or BINARY
        self._msg_compressed = False
        self._msg_size = 0
        self._msg_streamed = False
        self._parts = bytearray()  # the payload so far (raw UTF-8 for text, validated)
        self._decoder: Optional[codecs.IncrementalDecoder] = None
        self.streaming = False  # set before next_event(): the next message as Fragment events
        self.close_sent: Optional[Tuple[int, str]] = None
        self.close_rcvd: Optional[Tuple[int, str]] = None
        self.failure: Optional[ProtocolError] = None  # the peer's violation, raised once
        self.failed: Optional[Tuple[int, str]] = None  # why we failed the connection
        self.eof = False
        self.closing = False  # a close frame sent or received, or a failure: close_timeout applies
        self.discarding = False  # a close frame received or a failure: input dropped, TCP close left
        self.replies: List[Tuple[int, bytes]] = []  # for next_reply() (a few at most; read-only)
        self._pings: Dict[bytes, None] = {}
        self.direct: Optional[memoryview] = None  # where the next read goes: see received_direct
        self._big: Any = None  # a large plain frame's PayloadBuffer, read straight into
        self._full: Optional[memoryview] = None  # all of it

    @property
    def state(self) -> State:
        if self.eof or (self.close_sent and self.close_rcvd):
            return State.CLOSED
        if self.close_sent or self.close_rcvd or self.failed:
            return State.CLOSING
        return State.OPEN

    @property
    def in_message(self) -> bool:  # is a data message partly received?
        return self._msg_opcode != 0

    @property
    def frame_buffered(self) -> bool:
        """Is a whole frame left in the buffer for next_event()? (O(1): its header only.)"""
        buf, frame = self._buf, self._frame
        if not buf or self.discarding:
            return False
        size = frame[3] if frame is not None else frame_size(buf)
        return size is not None and len(buf) >= size

    def receive_data(self, data: Data) -> None:
        """Bytes read from the network; dropped after a close frame or a failure
        (RFC 6455 §7.1.7: "MUST NOT ... process further data")."""
        if self.discarding:
            return
        direct = self.direct
        if direct is None:
            self._buf += data
        else:  # a large frame being read straight in: its bytes go there, the rest after
            size = min(len(data), len(direct))
            direct[:size] = data[:size]
            self.received_direct(size)
            self._buf += data[size:]

    def receive_eof(self) -> None:  # the peer closed TCP
        self.eof = True

    def next_event(self, more: Optional[List[Event]] = None, room: int = 0) -> Optional[Event]:
        """The next event, or None until more data arrives. A violation queues the
        failing close frame (RFC 6455 §7.1.7) and raises ProtocolError (PayloadTooBig
        for 1009); nothing is parsed after it or the peer's close frame. ``more``: the
        whole small messages right behind a whole small one go there (``room`` at most)."""
        buf = self._buf
        if not buf and self._full is None or self.discarding:
            return None
        try:
            if self._full is not None:
                return self._take_direct()
            if self._frame is None:  # a whole message first: frames.take_message, in C if built
                if not (self._msg_opcode or self.streaming):
                    data = take_message(buf, self._client, self.max_size)
                    if data is not None:
                        while buf and more is not None and room > 0 and not self.closing:
                            extra = take_message(buf, self._client, self.max_size)
                            if extra is None:
                                break
                            more.append(Message(extra))
                            room -= 1
                        return Message(data)
                self._frame = self._parse_header(buf)
                if self._frame is None:
                    return None
            return self._parse()
        except ProtocolError as exc:
            self.failure = exc
            self.fail(exc.close_code, str(exc))
            raise
        except zlib.error as exc:  # RFC 7692 §8: undecodable compressed data fails it (1007)
            error = ProtocolError(f"invalid compressed data: {exc}", CloseCode.INVALID_DATA)
            self.failure = error
            self.fail(error.close_code, str(error))
            raise error from None

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 §7.1.7): "MUST send a Close frame with an
        appropriate status code" (none for 1006) and "MUST NOT continue to attempt to
        process data". You must then send next_reply()'s frames if you can and close
        TCP: a server at once (``eof_due``), a client once the server has (or timeout).
        ValueError (and nothing done) for a code that may not be sent."""
        if self.failed is not None:
            return
        if code != CloseCode.ABNORMAL_CLOSURE and self.close_sent is None:
            reason = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
            self.replies.append((_CLOSE, serialize_close(code, reason)))
        self.failed = (code, reason)
        self.closing = True
        self.discarding = True  # (the buffer is the reader's: left for it to drop)

    @property
    def eof_due(self) -> bool:
        """Should we close our side of TCP now? RFC 6455 §7.1.1: after the closing
        handshake "the server MUST close the underlying TCP connection immediately"
        (after failing, once our close is out); a client waits for the server."""
        return (not self._client and self.close_sent is not None and not self.replies
                and (self.close_rcvd is not None or self.failed is not None))

    @property
    def handshake_done(self) -> bool:  # close frames sent and received, no failure
        return self.close_sent is not None and self.close_rcvd is not None and self.failed is None

    def close_exc(self) -> ConnectionClosed:
        """What the connection raises once closed (RFC 6455 §7.1.5, §7.1.6): OK when
        both close frames carried 1000, 1001 or none; else the peer's code, ours, or
        1006 when nobody sent one; a failure the peer caused is the cause."""
        received, sent = self.close_rcvd, self.close_sent
        exc: ConnectionClosed
        if received is not None and sent is not None and received[0] in _OK_CODES \
                and sent[0] in _OK_CODES:
            exc = ConnectionClosedOK(*received)
        elif received is not None:
            exc = ConnectionClosedError(*received)
        elif self.failed is not None:
            exc = ConnectionClosedError(*self.failed)
        else:
            exc = ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "")
        exc.__cause__ = self.failure
        return exc

    def _parse(self) -> Optional[Event]:
        buf = self._buf
        while True:
            frame = self._frame
            if frame is None:
                frame = self._parse_header(buf)
                if frame is None:
                    return None
            opcode, fin, mask, remaining, offset = frame
            available = len(buf)
            if opcode >= 8:
                # Control frames are at most 125 bytes: wait for the whole payload.
                if available < remaining:
                    self._frame = frame
                    return None
                payload = bytes(buf[:remaining])
                del buf[:remaining]
                self._frame = None
                if mask is not None:
                    payload = apply_mask(payload, mask)
                return self._control(opcode, payload)
            # Data frames are consumed as their bytes arrive, so that invalid UTF-8
            # fails fast even in the middle of a frame (RFC 6455 §8.1).
            if available >= remaining:
                take, done = remaining, True
            elif available and not (plain := self._msg_opcode == _BINARY and not (
                    self._msg_compressed or self._msg_streamed or self.streaming)):
                take, done = available, False
            else:
                # Nothing yet, or a plain binary frame still arriving: there is nothing to
                # check in it, so it is taken whole once complete, in one copy out of the
                # buffer instead of one per read and a join (max_size was checked); when
                # much is still to come, the reads go straight into its buffer.
                self._frame = frame
                if available and plain and remaining - available >= DIRECT_MIN and (
                        self.max_size is not None or remaining <= DIRECT_MAX_UNLIMITED):
                    self._start_direct(remaining)  # (memory for what a header claims: bounded)
                return None
            # One copy out of the buffer: masking reads straight from it.
            with memoryview(buf) as view, view[:take] as piece:
                chunk = bytes(piece) if mask is None else apply_mask(piece, phase_mask(mask, offset))
            del buf[:take]
            if done:
                self._frame = None
            else:
                frame[3] = remaining - take
                frame[4] = offset + take
                self._frame = frame
            event = self._data(chunk, done and fin)
            if event is not None:
                return event
            if not done:
                return None

    def _parse_header(self, buf: bytearray) -> Optional[List[Any]]:
        """RFC 6455 §5.2: the frame header, checked, or None if incomplete (a whole small
        message was offered to take_message() first)."""
        size = len(buf)
        if size < 2:
            return None
        first, second = buf[0], buf[1]
        length = second & 0x7F
        pos = 2
        if length == 126:
            if size < 4:
                return None
            length = (buf[2] << 8) | buf[3]
            pos = 4
        elif length == 127:
            if size < 10:
                return None
            length = _U64.unpack_from(buf, 2)[0]
            if length >> 63:
                raise ProtocolError("64-bit payload length with its most significant bit set")
            pos = 10
        mask = None
        if second & 0x80:
            if size < pos + 4:
                return None
            mask = buf[pos:pos + 4]
            pos += 4
            if self._client:
                # §5.1: "A client MUST close a connection if it detects a masked frame."
                raise ProtocolError("masked frame from the server")
        elif not self._client:
            # §5.1: the server MUST close the connection upon an unmasked frame.
            raise ProtocolError("unmasked frame from the client")
        opcode = first & 0x0F
        fin = first & 0x80 != 0
        self._check_header(opcode, fin, first & 0x70, length)
        del buf[:pos]
        return [opcode, fin, mask, length, 0]

    def _check_header(self, opcode: int, fin: bool, rsv: int, length: int) -> None:
        check_header(opcode, fin, rsv, length, bool(self._msg_opcode), self._inflater is not None)
        if opcode >= 8:
            return
        if opcode != _CONT:  # a new message
            self._msg_opcode = opcode
            self._msg_compressed = rsv != 0
            self._msg_size = 0
            self._msg_streamed = self.streaming
        max_size = self.max_size
        if max_size is None:
            return
        if opcode == _CONT or not fin:  # bookkeeping costs too: the frame count is bounded
            if self._msg_compressed:  # (it may inflate to nothing, whatever its length)
                self._msg_size += MIN_FRAGMENT_COST
            elif length < MIN_FRAGMENT_COST:
                self._msg_size += MIN_FRAGMENT_COST - length
        if self._msg_size + (0 if self._msg_compressed else length) > max_size:
            raise PayloadTooBig(f"message over max_size ({max_size} bytes)")

    def _data(self, chunk: bytes, last: bool) -> Optional[Event]:
        """Add payload to the current message; the event it completes, if any."""
        data = chunk
        max_size = self.max_size
        if self._msg_compressed:
            assert self._inflater is not None
            limit = None if max_size is None else max_size - self._msg_size
            data = self._inflater.decompress(chunk, last, limit)
        self._msg_size += len(data)
        parts, text = self._parts, self._msg_opcode == _TEXT
        if max_size is not None and self._msg_size > max_size:  # (only compressed data gets here)
            if text:  # §8.1 first, on what is within max_size: 1007 or 1009 however it was split
                within = data[:len(data) - (self._msg_size - max_size)]
                decode_utf8(within, self._decoder or utf8_decoder(), False)
            raise PayloadTooBig(f"message over max_size ({max_size} bytes)")
        if last and not parts and not self._msg_streamed and self._decoder is None:
            self._msg_opcode = 0  # a message in one piece: no assembly
            return Message(decode_utf8(data) if text else data)
        piece: Union[bytes, str] = data
        if text:
            decoder = self._decoder
            if decoder is None:
                decoder = self._decoder = utf8_decoder()
            piece = decode_utf8(data, decoder, last)
        if self._msg_streamed:
            if last:
                self._end_message()
                return Fragment(piece, True)
            return Fragment(piece, False) if piece else None
        # One buffer of raw bytes, not a list of pieces: memory stays within max_size
        # however the message is cut (text is validated above, decoded once at the end).
        parts += data
        if not last:
            return None
        message = Message(parts.decode("utf-8") if text else bytes(parts))
        self._end_message()
        return message

    def _start_direct(self, size: int) -> None:
        """Have the rest of a large plain frame read straight into the bytes its message
        is returned in (``direct``; frames.PayloadBuffer): no copy once it is complete."""
        self._big = PayloadBuffer(size)
        self._full = self.direct = memoryview(self._big)
        buf = self._buf
        have = len(buf)
        self.direct[:have] = buf
        buf.clear()
        self.received_direct(have)

    def received_direct(self, size: int) -> None:
        """``size`` bytes were read into ``direct``: unmasked now (§5.3), still in the CPU's cache."""
        direct, full, frame = self.direct, self._full, self._frame
        assert direct is not None and full is not None and frame is not None
        if frame[2] is not None:
            with direct[:size] as piece:
                mask_in_place(piece, frame[2], len(full) - len(direct))
        self.direct = direct[size:] if size < len(direct) else None

    def _take_direct(self) -> Optional[Event]:
        if self.direct is not None:
            return None
        frame, full = self._frame, self._full
        assert frame is not None and full is not None
        self._frame = self._full = None
        full.release()
        chunk, self._big = self._big.take(), None  # (every view of it is gone by now)
        return self._data(chunk, frame[1])

    def _end_message(self) -> None:
        self._msg_opcode = 0
        self._parts = bytearray()
        self._decoder = None
        self.streaming = False

    def take_partial(self) -> Optional[Union[str, bytes]]:
        """Switch a partly assembled message to streaming: what was assembled so far
        (text: its whole characters; the decoder keeps an unfinished one)."""
        if not self._msg_opcode or self._msg_streamed:
            return None
        self._msg_streamed = True
        parts, self._parts = self._parts, bytearray()
        if self._msg_opcode == _TEXT:
            return codecs.utf_8_decode(parts, "strict", False)[0]
        return bytes(parts)

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == _PING:
            # §5.5.2: answer with a pong carrying the same payload. §5.5.3: "the endpoint
            # MAY elect to send a Pong frame for only the most recently processed Ping
            # frame": a peer that pings while our writer is stuck queues one pong, not many.
            replies = self.replies
            if replies and replies[-1][0] == _PONG:
                replies.pop()
            replies.append((_PONG, payload))
            return Ping(payload)
        if opcode == _PONG:
            # §5.5.3: a pong may answer a ping; it acknowledges the earlier ones too.
            pings = list(self._pings)
            acknowledged = tuple(pings[:pings.index(payload) + 1]) if payload in self._pings else ()
            for key in acknowledged:
                del self._pings[key]
            return Pong(payload, acknowledged)
        code, reason = parse_close(payload)  # §5.5.1, §7.4: may raise 1002/1007
        self.close_rcvd = (code, reason)
        self.closing = self.discarding = True  # §5.5.1: nothing the peer sends after its close counts
        self._buf.clear()
        if self.close_sent is None:  # §5.5.1: answer a close with a close, echoing its code
            self.replies.append((_CLOSE, serialize_close(code)))
        return Close(code, reason)

    # ----------------------------------------------------------- writer half

    def send_data(self, opcode: int, data: Data, fin: bool = True) -> Iterable[Data]:
        """One data frame (TEXT or BINARY starts a message, CONT continues it) as buffers
        to write in order, once (a client's large payload is masked as they are taken);
        compressed here, in wire order."""
        size = len(data)
        if type(data) is memoryview and (size != data.nbytes or not data.contiguous):
            data = data.cast("B")  # §5.2's length counts bytes (TypeError: not contiguous)
            size = len(data)
        if size < self._plain_below and fin and opcode != _CONT:
            # The fast path: a whole small message, its 2-byte header built here (§5.2).
            if not self._client:
                return [SHORT_HEADERS[opcode][size] + data]
            return [mask_frame(SHORT_HEADERS[opcode][size | 0x80], data, MASKS, refill_masks)]
        rsv1 = False
        deflater = self._deflater
        if opcode != _CONT:
            self._compress_out = deflater is not None and deflater.enabled \
                and (not fin or size >= self._threshold)
            rsv1 = self._compress_out  # RFC 7692 §6: RSV1 on the first frame only
        if self._compress_out:
            data = deflater.compress(data, fin)  # type: ignore[union-attr]
        return self._frame_bytes(opcode, data, fin, rsv1)

    def send_ping(self, data: bytes = b"") -> bytes:
        """A ping; its payload is remembered until a pong acknowledges it."""
        check_control_payload(data)
        self._pings[bytes(data)] = None
        return b"".join(self._frame_bytes(_PING, data, True, False))

    def send_pong(self, data: bytes = b"") -> bytes:
        check_control_payload(data)
        return b"".join(self._frame_bytes(_PONG, data, True, False))

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bytes:
        """Our close frame (RFC 6455 §5.5.1); b"" if one was sent already."""
        if self.close_sent is not None:
            return b""
        payload = serialize_close(code, reason)
        self.close_sent = (code, reason)
        self.closing = True
        return b"".join(self._frame_bytes(_CLOSE, payload, True, False))

    def next_reply(self) -> Optional[bytes]:
        """The next reply frame (pong, close echo, failing close), or None; nothing
        after our close frame (RFC 6455 §5.5.1)."""
        while self.replies:
            opcode, payload = self.replies.pop(0)
            if self.close_sent is not None:
                continue
            if opcode == _CLOSE:
                code = int.from_bytes(payload[:2], "big") if payload else CloseCode.NO_STATUS_RCVD
                self.close_sent = (code, payload[2:].decode("utf-8", "replace"))
                self.closing = True
            return b"".join(self._frame_bytes(opcode, payload, True, False))
        return None

    def _frame_bytes(self, opcode: int, payload: Data, fin: bool, rsv1: bool) -> Iterable[Data]:
        if self._client:
            mask = next_mask()
            header = frame_header(opcode, len(payload), fin, rsv1, mask)
            if len(payload) > MASK_PIECE:
                return mask_in_pieces(header, payload, mask)
            payload = apply_mask(payload, mask)
        else:
            header = frame_header(opcode, len(payload), fin, rsv1)
        if len(payload) >= LARGE_PAYLOAD:
            return [header, payload]
        return [header + payload if type(payload) is bytes else b"".join((header, payload))]
