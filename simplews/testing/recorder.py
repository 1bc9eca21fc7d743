"""The record of every frame one side sent, exactly as it was on the wire.

``FrameSplitter`` cuts a byte stream into frames without judging them (no limit,
no protocol check, compressed payloads left as they are), so that a test sees what
its client really sent even when the Protocol has rejected it or stopped reading.
"""
from __future__ import annotations

import os
import struct
from typing import List, NamedTuple, Optional, Union

from simplews.frames import Opcode, apply_mask, frame_header

__all__ = ["RecordedFrame", "FrameSplitter", "Frame", "serialize_frame"]

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class RecordedFrame(NamedTuple):
    """One frame the other side sent. ``payload`` is unmasked but still compressed
    (``rsv1`` set); ``time`` is the ``time.monotonic()`` of the read that completed it.
    ``opcode`` is an ``Opcode`` when RFC 6455 defines it, else the plain int."""

    opcode: Union[Opcode, int]
    fin: bool
    rsv1: bool
    payload: bytes
    masked: bool
    time: float
    rsv2: bool = False
    rsv3: bool = False

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (errors replaced): handy in assertions."""
        return self.payload.decode("utf-8", "replace")


class Frame(NamedTuple):
    """One frame as it is on the wire (payload unmasked, still compressed)."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False



def serialize_frame(frame: Frame, mask: bool = False, mask_key: Optional[bytes] = None) -> bytes:
    """Serialize ``frame`` with any bits set, valid or not (tests send broken frames);
    a client masks (``mask=True``) with a random key (RFC 6455 §5.3)."""
    first = frame.opcode | (0x80 if frame.fin else 0) | (0x40 if frame.rsv1 else 0)
    first |= (0x20 if frame.rsv2 else 0) | (0x10 if frame.rsv3 else 0)
    payload = frame.payload
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        header = frame_header(0, len(payload), False, False, key)
        return bytes([first]) + header[1:] + apply_mask(payload, key)
    header = frame_header(0, len(payload), False, False)
    return bytes([first]) + header[1:] + payload


def _opcode(value: int) -> Union[Opcode, int]:
    try:
        return Opcode(value)
    except ValueError:
        return value


class FrameSplitter:
    """Incremental: ``feed()`` bytes, get back the frames they complete."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)

    def feed(self, data: Union[bytes, bytearray, memoryview], now: float) -> List[RecordedFrame]:
        self._buf += data
        frames: List[RecordedFrame] = []
        while True:
            frame = self._next(now)
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self, now: float) -> Optional[RecordedFrame]:
        buf = self._buf
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        length, pos = second & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = _U16.unpack_from(buf, 2)[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = _U64.unpack_from(buf, 2)[0], 10
        masked = bool(second & 0x80)
        mask = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            mask = bytes(buf[pos:pos + 4])
            pos += 4
        end = pos + length
        if len(buf) < end:
            return None
        payload = bytes(buf[pos:end])
        del buf[:end]
        if masked:
            payload = apply_mask(payload, mask)
        return RecordedFrame(_opcode(first & 0x0F), bool(first & 0x80), bool(first & 0x40), payload,
                             masked, now, bool(first & 0x20), bool(first & 0x10))
