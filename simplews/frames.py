"""RFC 6455 §5 frames: opcodes, close codes, header serialization, masking, close payloads.

Parsing lives in ``protocol.py`` (it is incremental and stateful); this module
holds the stateless pieces that both directions share.
"""
from __future__ import annotations

import codecs
import enum
import mmap
import os
import struct
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

from .exceptions import ProtocolError

__all__ = [
    "Opcode",
    "CloseCode",
    "apply_mask",
    "frame_header",
    "parse_close",
    "serialize_close",
    "check_control_payload",
    "is_valid_close_code",
    "decode_utf8",
    "check_header",
    "refill_masks",
    "MASKS",
    "SHORT_HEADERS",
    "take_message",
    "mask_frame",
    "mask_in_place",
    "PayloadBuffer",
    "LARGE_PAYLOAD",
]


class Opcode(enum.IntEnum):
    """RFC 6455 §5.2 opcodes."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    """RFC 6455 §7.4.1 status codes (plus the IANA-registered 1012-1014)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015

    @property
    def description(self) -> str:
        """What the code means, for people: "going away", "message too big", ..."""
        return _CLOSE_CODE_DESCRIPTIONS[self]


_CLOSE_CODE_DESCRIPTIONS = {
    1000: "normal closure", 1001: "going away", 1002: "protocol error", 1003: "unsupported data",
    1005: "no status code", 1006: "abnormal closure, no close frame", 1007: "invalid data",
    1008: "policy violation", 1009: "message too big", 1010: "mandatory extension missing",
    1011: "internal error", 1012: "service restart", 1013: "try again later", 1014: "bad gateway",
    1015: "TLS handshake failure",
}


_H_SHORT = struct.Struct("!BB")
_H_MEDIUM = struct.Struct("!BBH")
_H_LONG = struct.Struct("!BBQ")


#: What apply_mask() takes: a received frame's payload and mask are slices of the read buffer.
BytesLike = Union[bytes, bytearray, memoryview]
MaskKey = Union[bytes, bytearray]  # not a memoryview: _xor_mask() repeats it with *


def _xor_mask(data: BytesLike, mask: MaskKey) -> bytes:
    """RFC 6455 §5.3: XOR ``data`` with the repeated 4-byte ``mask``, the whole
    payload at once as one big integer (no per-byte Python loop)."""
    size = len(data)
    if not size:
        return b""
    key = mask * (size // 4 + 1)
    if len(key) != size:
        key = key[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


LARGE_PAYLOAD = 16 * 1024  # payloads this large are copied through a memoryview, sent apart
MASK_PIECE = 512 * 1024  # a multiple of 4: each piece starts at the mask's first byte; half an L2


def mask_in_pieces(header: bytes, payload: BytesLike, mask: MaskKey) -> Iterator[BytesLike]:
    """``header``, then ``payload`` masked MASK_PIECE bytes at a time as the caller takes
    them: each piece is sent while it is still in the CPU's cache (a 4 MiB payload
    masked whole is written to memory and read back by the kernel)."""
    yield header
    view = memoryview(payload).cast("B")
    for start in range(0, len(view), MASK_PIECE):
        yield apply_mask(view[start:start + MASK_PIECE], mask)


def phase_mask(mask: MaskKey, phase: int) -> MaskKey:
    """The mask as it applies from the payload's byte ``phase`` on (RFC 6455 §5.3: byte
    i is XORed with the mask's byte i % 4)."""
    shift = phase & 3
    return mask[shift:] + mask[:shift] if shift else mask


def _mask_in_place(buffer: memoryview, mask: MaskKey, phase: int) -> None:
    """XOR ``buffer`` in place with ``mask`` starting at its byte ``phase & 3``."""
    buffer[:] = _xor_mask(buffer, phase_mask(mask, phase))


def frame_size(buf: BytesLike) -> Optional[int]:
    """The size (header and payload, RFC 6455 §5.2) of the frame ``buf`` starts with;
    None while its length is incomplete. Nothing is checked: see check_header()."""
    size = len(buf)
    if size < 2:
        return None
    length, header = buf[1] & 0x7F, 2 + (buf[1] >> 7) * 4  # (the mask key's 4 bytes)
    if length == 126:
        return None if size < 4 else header + 2 + (buf[2] << 8 | buf[3])
    if length == 127:
        return None if size < 10 else header + 8 + int.from_bytes(buf[2:10], "big")
    return header + length


class _PayloadBuffer(mmap.mmap):
    """A large payload's buffer, read (and unmasked) into as it arrives; take() returns
    it as bytes: a copy here, none with the C accelerator's PayloadBuffer. An anonymous
    mapping, whose pages cost memory only once written, as the C one's: a header may
    claim far more than ever comes (a bytearray was zero-filled at once)."""

    length: int

    def __new__(cls, size: int) -> _PayloadBuffer:
        self = super().__new__(cls, -1, max(1, size))  # (a mapping is never empty)
        self.length = size
        return self

    def take(self) -> bytes:
        data = self[:self.length]
        self.close()
        return data


def _take_message(buf: bytearray, client: bool, max_size: Optional[int]) -> Union[bytes, str, None]:
    """The parser's shortcut: if ``buf`` starts with a whole final, uncompressed TEXT or
    BINARY frame (first byte 0x81 or 0x82), masked as the receiving side requires (RFC
    6455 §5.1), within ``max_size`` and, for text, valid UTF-8 (§8.1), remove it and
    return its payload (str for text). Else None and ``buf`` as it was: the general
    parser takes the frame and raises what is wrong. No message may be in progress."""
    size = len(buf)
    if size < 2:
        return None
    first, second = buf[0], buf[1]
    if (first != 0x81 and first != 0x82) or (second >= 0x80) == client:
        return None
    length, pos = second & 0x7F, 2
    if length == 126:
        if size < 4:
            return None
        length, pos = (buf[2] << 8) | buf[3], 4
    elif length == 127:
        if size < 10:
            return None
        length, pos = _H_LONG.unpack_from(buf)[2], 10  # with its top bit set: too long
    mask = None if client else buf[pos:pos + 4]
    start = pos if client else pos + 4
    end = start + length
    if size < end or max_size is not None and length > max_size:
        return None
    if length < LARGE_PAYLOAD:  # slicing copies, but costs less than a memoryview
        payload = bytes(buf[start:end]) if mask is None else apply_mask(buf[start:end], mask)
    else:
        with memoryview(buf) as view, view[start:end] as piece:
            payload = bytes(piece) if mask is None else apply_mask(piece, mask)
    data: Union[bytes, str] = payload
    if first == 0x81:
        try:
            data = payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    del buf[:end]
    return data


def _mask_frame(header: bytes, data: BytesLike, masks: List[bytes], refill: Callable[[], bytes]) -> bytes:
    """A client's frame (§5.3): ``header``, a key (``masks.pop()``, or ``refill()`` when
    empty) and ``data`` masked with it, as one bytes (see MASKS)."""
    try:
        mask = masks.pop()
    except IndexError:
        mask = refill()
    return header + mask + apply_mask(data, mask)


apply_mask: Callable[[BytesLike, MaskKey], bytes] = _xor_mask
mask_frame: Callable[[bytes, BytesLike, List[bytes], Callable[[], bytes]], bytes] = _mask_frame
take_message: Callable[[bytearray, bool, Optional[int]], Union[bytes, str, None]] = _take_message
mask_in_place: Callable[[memoryview, MaskKey, int], None] = _mask_in_place
PayloadBuffer: Callable[[int], Any] = _PayloadBuffer  # memoryview() writes into it; take(): bytes
if not os.environ.get("SIMPLEWS_NO_EXTENSIONS"):
    try:  # the optional C accelerator built by setup.py when a compiler is present
        from ._speedups import (PayloadBuffer as _CPayloadBuffer, apply_mask as _c_apply_mask,
                                mask_frame as _c_mask_frame, mask_in_place as _c_mask_in_place,
                                take_message as _c_take_message)
    except ImportError:  # pragma: no cover - depends on the build
        pass
    else:
        apply_mask, mask_frame, take_message = _c_apply_mask, _c_mask_frame, _c_take_message
        mask_in_place, PayloadBuffer = _c_mask_in_place, _CPayloadBuffer


def frame_header(opcode: int, length: int, fin: bool = True, rsv1: bool = False,
                 mask: Optional[bytes] = None) -> bytes:
    """The header of a frame (RFC 6455 §5.2): 7-, 16- or 64-bit length, then the mask key."""
    first = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = _H_SHORT.pack(first, mask_bit | length)
    elif length < 0x10000:
        header = _H_MEDIUM.pack(first, mask_bit | 126, length)
    else:
        header = _H_LONG.pack(first, mask_bit | 127, length)
    return header + mask if mask is not None else header


def is_valid_close_code(code: int) -> bool:
    """RFC 6455 §7.4: codes an endpoint may receive in a close frame.

    1000-1003 and 1007-1014 are defined (1012-1014 by the IANA registry),
    3000-4999 are for libraries and applications; 1004, 1005, 1006 and 1015
    must never be sent, and the rest of 0-2999 is unassigned.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def parse_close(payload: bytes) -> Tuple[int, str]:
    """RFC 6455 §5.5.1: an empty payload (code 1005) or a 2-byte code and a UTF-8 reason."""
    if not payload:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("close reason is not valid UTF-8", CloseCode.INVALID_DATA) from None
    return code, reason


def check_header(opcode: int, fin: bool, rsv: int, length: int, in_message: bool,
                 deflate: bool) -> None:
    """A received frame header's rules (ProtocolError, 1002, when broken): ``rsv`` holds
    the RSV bits (0x70), ``in_message`` whether a fragmented message is in progress,
    ``deflate`` whether permessage-deflate was negotiated (it defines RSV1)."""
    if rsv & 0x30:
        # §5.2: RSV2/RSV3 must be 0 unless an extension defines them; none does here.
        raise ProtocolError("reserved bits RSV2/RSV3 set")
    if opcode >= 8:
        if opcode not in (Opcode.CLOSE, Opcode.PING, Opcode.PONG):
            raise ProtocolError(f"reserved control opcode {opcode:#x}")  # §5.2
        if not fin:
            raise ProtocolError("fragmented control frame")  # §5.5
        if length > 125:
            raise ProtocolError("control frame payload over 125 bytes")  # §5.5
        if rsv:
            raise ProtocolError("RSV1 set on a control frame")  # RFC 7692 §6.1
    elif opcode == Opcode.CONT:
        if not in_message:
            raise ProtocolError("continuation frame without a message to continue")  # §5.4
        if rsv:
            raise ProtocolError("RSV1 set on a continuation frame")  # RFC 7692 §6.1
    elif opcode not in (Opcode.TEXT, Opcode.BINARY):
        raise ProtocolError(f"reserved data opcode {opcode:#x}")  # §5.2
    elif in_message:
        raise ProtocolError("new data frame inside a fragmented message")  # §5.4
    elif rsv and not deflate:
        raise ProtocolError("RSV1 set without permessage-deflate")  # §5.2


def check_control_payload(payload: BytesLike) -> None:
    """RFC 6455 §5.5: "All control frames MUST have a payload length of 125 bytes or less"."""
    if len(payload) > 125:
        raise ValueError("a control frame's payload is at most 125 bytes")


def serialize_close(code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bytes:
    """A close payload; code 1005 means "no code" and gives an empty payload."""
    if code == CloseCode.NO_STATUS_RCVD:
        return b""
    if not is_valid_close_code(code):  # RFC 6455 §7.4.1: 1004-1006, 1015 "MUST NOT be set"
        raise ValueError(f"{code} is not a close code an endpoint may send")
    data = code.to_bytes(2, "big") + reason.encode("utf-8")
    if len(data) > 125:
        raise ValueError("close reason too long: a control frame payload is at most 125 bytes")
    return data


utf8_decoder = codecs.getincrementaldecoder("utf-8")


def decode_utf8(data: Union[bytes, bytearray], decoder: Optional[codecs.IncrementalDecoder] = None,
                last: bool = True) -> str:
    """UTF-8 text, whole or incrementally; invalid UTF-8 fails with 1007 (RFC 6455 §8.1)."""
    try:
        if decoder is None:
            return data.decode("utf-8")
        text = decoder.decode(data, last)
        pending = decoder.getstate()[0]  # CPython waits for a surrogate's third byte:
        if len(pending) > 1 and pending[0] == 0xED and pending[1] >= 0xA0:  # ED A0-BF
            raise UnicodeDecodeError("utf-8", pending, 0, 2, "invalid continuation byte")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"invalid UTF-8 in text message: {exc.reason}", CloseCode.INVALID_DATA) from None
    return text


#: Masking keys not used yet, shared by every client connection of the process (list.pop()
#: is atomic: no key goes out twice); refill_masks() when empty.
MASKS: List[bytes] = []
MASK_POOL_SIZE = 256  # bytes of os.urandom() per refill: 64 masking keys
if hasattr(os, "register_at_fork"):  # a forked child must not use its parent's next keys
    os.register_at_fork(after_in_child=MASKS.clear)


def refill_masks() -> bytes:
    """§5.3: a fresh, unpredictable key per frame, from one os.urandom() per 64 keys."""
    pool = os.urandom(MASK_POOL_SIZE)
    MASKS.extend([pool[i:i + 4] for i in range(4, MASK_POOL_SIZE, 4)])
    return pool[:4]


def next_mask() -> bytes:  # (inlined on the fast path of Protocol.send_data)
    try:
        return MASKS.pop()
    except IndexError:
        return refill_masks()


#: The 2-byte headers of final, uncompressed TEXT and BINARY frames with a 7-bit length,
#: by opcode, then by the second byte (the length, plus 0x80 when masked).
SHORT_HEADERS = {opcode: [bytes((0x80 | opcode, second)) for second in range(256)]
                 for opcode in (Opcode.TEXT.value, Opcode.BINARY.value)}
