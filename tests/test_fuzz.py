"""Seeded, bounded fuzz tests (issue 12, "And keep them fixed").

1. Mutated client frame sequences, sent over a raw socket after a valid handshake,
   against a real simplews server (echo handler, max_size=1024, close_timeout=1 s).
   An independent model of RFC 6455 / RFC 7692 reads the very bytes that are sent and
   predicts the server's answers: the echoes and pongs that the valid part of the
   stream calls for, then the end (our close echoed, a close frame with 1002 / 1007 /
   1009, or nothing because the stream is incomplete and we close ourselves).
2. Mutated HTTP answers to simplews.connect()'s opening handshake, from a raw server:
   the only outcomes are a working connection (closed again), InvalidHandshake,
   TimeoutError, OSError or ConnectionClosed, each within its timeout.
3. After each run: no thread, file descriptor or traced-memory growth.

Environment:
  SIMPLEWS_FUZZ_SEED     the seed: an integer, or "random" (default 12)
  SIMPLEWS_FUZZ_SECONDS  time budget of each test (default 2.5)
  SIMPLEWS_FUZZ_CASES    a fixed number of cases per test instead of a time budget
  SIMPLEWS_FUZZ_CASE     replay one case: its index, as a failure names it

A failure names the seed, the case and the bytes; replay it with
  SIMPLEWS_FUZZ_SEED=<seed> SIMPLEWS_FUZZ_CASE=<case> pytest tests/test_fuzz.py -k <test>
"""
from __future__ import annotations

import base64
import codecs
import contextlib
import gc
import hashlib
import os
import random
import socket
import struct
import threading
import time
import tracemalloc
import traceback
import zlib
from collections import Counter
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import simplews

from support import fuzz_seed, open_fds
from conftest import TIMEOUT

DEFAULT_SEED = 12
DEFAULT_SECONDS = 2.5
MAX_SIZE = 1024
CLOSE_TIMEOUT = 1.0
MARGIN = 3.0  # what a loaded machine may add to any timeout before we call it a hang
QUIET = 0.3  # how long a server may take to fail a connection when it also may wait
IO_TIMEOUT = 5.0
MAX_FAILURES = 5
MEMORY_SLACK = 4 << 20
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TAIL = b"\x00\x00\xff\xff"
#: simplews charges each fragment under 16 bytes as 16 against max_size, and a compressed
#: one 16 more than it inflates to (a bound on the frame count of a message); the RFCs have
#: no such limit, so past it the model allows both.
FRAGMENT_COST = 16


# --------------------------------------------------------------------- harness


def replaying() -> bool:
    return bool(os.environ.get("SIMPLEWS_FUZZ_CASE", "").strip())


def case_indices(min_cases: int) -> Iterator[int]:
    """The case numbers to run: one (a replay), a fixed number, or as many as the time
    budget allows but at least ``min_cases``."""
    only = os.environ.get("SIMPLEWS_FUZZ_CASE", "").strip()
    if only:
        yield int(only)
        return
    cases = os.environ.get("SIMPLEWS_FUZZ_CASES", "").strip()
    if cases:
        yield from range(int(cases))
        return
    seconds = float(os.environ.get("SIMPLEWS_FUZZ_SECONDS", "").strip() or DEFAULT_SECONDS)
    end = time.monotonic() + seconds
    index = 0
    while index < min_cases or time.monotonic() < end:
        yield index
        index += 1


@contextlib.contextmanager
def bounded_resources():
    """No thread, file descriptor or traced memory left over by the block (the threads
    and the descriptors get TIMEOUT seconds to go)."""
    gc.collect()
    threads = set(threading.enumerate())
    fds = open_fds()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        memory = tracemalloc.get_traced_memory()[0]
        yield
        deadline = time.monotonic() + TIMEOUT
        while True:
            extra = [t.name for t in threading.enumerate() if t not in threads]
            now_fds = open_fds()
            if (not extra and now_fds <= fds) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert not extra, f"threads left running after the fuzz run: {extra}"
        assert now_fds <= fds, f"file descriptors: {fds} before the fuzz run, {now_fds} after"
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - memory
        assert grown < MEMORY_SLACK, f"traced memory grew by {grown / 2**20:.1f} MiB over the fuzz run"
    finally:
        if started:
            tracemalloc.stop()


def hexdump(data: bytes, limit: int = 600) -> str:
    text = data[:limit].hex()
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else f" ({len(data)} bytes)")


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def xor_mask(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    size = len(data)
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(size, "little")


class Mismatch(Exception):
    """The server did something that the model does not allow."""


# ============================================================ 1. frames -> server

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RESERVED_OPCODES = (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)
#: Codes a client sends in a valid close here (never 1011: from the server, that one
#: means the handler crashed).
CLIENT_CLOSE_CODES = (1000, 1001, 1003, 1008, 3000, 4000, 4999, None)
INVALID_CLOSE_CODES = (0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535)
INVALID_UTF8 = (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82",
                b"\xf8\x88\x80\x80\x80", b"\xc3(", b"\xe0\x80\xaf", b"\xfe\xfe\xff\xff")
ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,;!?-_"
WIDE = "\u00e9\u00fc\u00df\u20ac\u4e2d\u6587\U0001d11e\U0001f600\u0800\uffff\U0010ffff\u0080"
ALPHABET_UTF8 = ALPHABET.encode()
WIDE_UTF8 = [char.encode("utf-8") for char in WIDE]
OFFERS = (
    None,
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate",
    "permessage-deflate; client_no_context_takeover",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; client_max_window_bits=9",
    "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12",
    "permessage-deflate; server_max_window_bits=8",
)


def valid_close_code(code: int) -> bool:
    """RFC 6455 §7.4 and the IANA registry: what an endpoint may receive."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class F:
    """One client frame to send; ``length``/``form`` override the length field."""

    __slots__ = ("opcode", "payload", "fin", "rsv1", "rsv2", "rsv3", "masked", "length", "form")

    def __init__(self, opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False) -> None:
        self.opcode = opcode
        self.payload = payload
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = self.rsv3 = False
        self.masked = True
        self.length: Optional[int] = None
        self.form: Optional[int] = None  # 7, 16 or 64 bits

    def encode(self, rng: random.Random) -> bytes:
        first = (0x80 if self.fin else 0) | (0x40 if self.rsv1 else 0) | (0x20 if self.rsv2 else 0)
        first |= (0x10 if self.rsv3 else 0) | (self.opcode & 0x0F)
        length = len(self.payload) if self.length is None else self.length
        length = min(max(length, 0), 2 ** 64 - 1)
        form = self.form or 7
        if length >= 126 and form == 7:
            form = 16
        if length >= 65536:
            form = 64
        mask_bit = 0x80 if self.masked else 0
        if form == 7:
            head = bytes((first, mask_bit | length))
        elif form == 16:
            head = bytes((first, mask_bit | 126)) + length.to_bytes(2, "big")
        else:
            head = bytes((first, mask_bit | 127)) + length.to_bytes(8, "big")
        if not self.masked:
            return head + self.payload
        key = bytes(rng.getrandbits(8) for _ in range(4))
        return head + key + xor_mask(self.payload, key)


class Negotiated:
    """What the handshake agreed on, from the client's side."""

    def __init__(self, extension: Optional[str], offer: Optional[str]) -> None:
        self.extension = extension
        self.deflate = bool(extension)
        params: Dict[str, Optional[str]] = {}
        for piece in (extension or "").split(";")[1:]:
            name, sep, value = piece.strip().partition("=")
            params[name.strip().lower()] = value.strip().strip('"') if sep else None
        offered: Dict[str, Optional[str]] = {}
        for piece in (offer or "").split(";")[1:]:
            name, sep, value = piece.strip().partition("=")
            offered[name.strip()] = value.strip() if sep else None
        #: Does the server drop its inflater's context after each message?
        self.client_reset = "client_no_context_takeover" in params
        bits = 15
        for value in (offered.get("client_max_window_bits"), params.get("client_max_window_bits")):
            if value:
                bits = min(bits, int(value))
        self.client_bits = max(bits, 9)  # zlib makes no raw deflate stream with a 256-byte window


class Compressor:
    """Our side of permessage-deflate: messages compressed with context takeover as
    agreed, in the three ways a peer may flush."""

    def __init__(self, negotiated: Negotiated) -> None:
        self.bits = negotiated.client_bits
        self.reset = negotiated.client_reset
        self.zobj = None

    def pieces(self, rng: random.Random, data: bytes, count: int) -> List[bytes]:
        if self.zobj is None:
            self.zobj = zlib.compressobj(rng.randint(0, 9), zlib.DEFLATED, -self.bits, rng.randint(1, 9))
        mode = rng.random()
        if mode < 0.15:  # one sync flush per fragment, the tail stripped from the last
            out = []
            parts = split(rng, data, count)
            for index, part in enumerate(parts):
                chunk = self.zobj.compress(part) + self.zobj.flush(zlib.Z_SYNC_FLUSH)
                if index == len(parts) - 1 and chunk.endswith(TAIL):
                    chunk = chunk[:-4]
                out.append(chunk)
        elif mode < 0.25:  # a final block (BFINAL=1): the next message starts a new stream
            out = split(rng, self.zobj.compress(data) + self.zobj.flush(zlib.Z_FINISH), count)
            self.zobj = None
        else:
            whole = self.zobj.compress(data) + self.zobj.flush(zlib.Z_SYNC_FLUSH)
            out = split(rng, whole[:-4] if whole.endswith(TAIL) else whole, count)
        if self.reset:
            self.zobj = None
        return out


def split(rng: random.Random, data: bytes, count: int) -> List[bytes]:
    """``data`` in ``count`` pieces at random places (empty pieces included)."""
    cuts = sorted(rng.randint(0, len(data)) for _ in range(count - 1))
    edges = [0] + cuts + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def random_text(rng: random.Random, size: int) -> bytes:
    """``size`` bytes of valid UTF-8: runs of ASCII and multi-byte characters."""
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.3:
            char = rng.choice(WIDE_UTF8)
            if len(out) + len(char) <= size:
                out += char
                continue
        out += bytes(rng.choices(ALPHABET_UTF8, k=min(size - len(out), rng.randint(1, 24))))
    return bytes(out)


def random_bytes(rng: random.Random, size: int, compressible: bool = False) -> bytes:
    if compressible and rng.random() < 0.7:
        unit = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
        return (unit * (size // len(unit) + 1))[:size]
    return rng.getrandbits(8 * size).to_bytes(size, "little") if size else b""


def message_size(rng: random.Random, fragmented: bool) -> int:
    """Valid sizes; fragmented messages stay 128 bytes under max_size (room for a
    bound that counts frames too)."""
    roll = rng.random()
    if roll < 0.25:
        return rng.randint(0, 8)
    if roll < 0.7:
        return rng.randint(9, 125)
    if roll < 0.9:
        return rng.randint(126, MAX_SIZE - 200)
    if fragmented:
        return rng.randint(MAX_SIZE - 200, MAX_SIZE - 128)
    return rng.choice((MAX_SIZE, rng.randint(MAX_SIZE - 200, MAX_SIZE)))


def control_frame(rng: random.Random, opcode: Optional[int] = None) -> F:
    opcode = opcode or rng.choice((PING, PING, PONG))
    return F(opcode, random_bytes(rng, rng.choice((0, rng.randint(0, 20), rng.randint(0, 125)))))


def close_frame(rng: random.Random, code: Optional[int] = None, reason: Optional[bytes] = None) -> F:
    if code is None and reason is None:
        return F(CLOSE)
    if reason is None:
        reason = random_text(rng, rng.choice((0, rng.randint(0, 123))))
    return F(CLOSE, (code or 1000).to_bytes(2, "big") + reason)


def message(rng: random.Random, compressor: Optional[Compressor], opcode: Optional[int] = None,
            data: Optional[bytes] = None, fragments: Optional[int] = None,
            compress: Optional[bool] = None) -> List[F]:
    """The frames of one data message, with control frames between its fragments."""
    opcode = opcode or rng.choice((TEXT, TEXT, BINARY))
    if fragments is None:
        fragments = 1 if rng.random() < 0.6 else rng.randint(2, 6)
    if compress is None:
        compress = compressor is not None and rng.random() < 0.6
    if data is None:
        size = message_size(rng, fragments > 1)
        data = random_text(rng, size) if opcode == TEXT else random_bytes(rng, size, compress)
    if compress and compressor is not None:
        pieces = compressor.pieces(rng, data, fragments)
    else:
        compress = False
        pieces = split(rng, data, fragments)
    frames = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        frames.append(F(opcode if index == 0 else CONT, piece, fin=last, rsv1=compress and index == 0))
        if not last and rng.random() < 0.2:
            frames.append(control_frame(rng))
    return frames


# What each case is about; the cycle makes every category come up in a short run.
FRAME_KINDS = ("valid", "utf8", "oversize", "protocol", "close", "bytes", "valid-open", "huge",
               "protocol", "mixed", "utf8", "oversize")


def generate(rng: random.Random, kind: str, negotiated: Negotiated) -> List[F]:
    compressor = Compressor(negotiated) if negotiated.deflate else None
    items: List[List[F]] = []
    for _ in range(rng.randint(0 if kind != "valid" else 1, 5)):
        items.append([control_frame(rng)] if rng.random() < 0.2 else message(rng, compressor))
    where = rng.randint(0, len(items))
    if kind == "utf8":
        if rng.random() < 0.2:  # in a close reason
            reason = random_text(rng, rng.randint(0, 20)) + rng.choice(INVALID_UTF8)
            items.insert(where, [close_frame(rng, rng.choice((1000, 1001, 3000)), reason[:123])])
        else:
            text = bytearray(random_text(rng, rng.randint(0, 300)))
            at = rng.randint(0, len(text))
            text[at:at] = rng.choice(INVALID_UTF8)
            items.insert(where, message(rng, compressor, TEXT, bytes(text)))
    elif kind == "oversize":
        size = rng.choice((MAX_SIZE + 1, rng.randint(MAX_SIZE + 1, 4 * MAX_SIZE)))
        compress = compressor is not None and rng.random() < 0.5
        opcode = rng.choice((TEXT, BINARY))
        data = random_text(rng, size) if opcode == TEXT else random_bytes(rng, size, compress)
        items.insert(where, message(rng, compressor, opcode, data, compress=compress))
    elif kind == "huge":
        frame = F(rng.choice((TEXT, BINARY, BINARY, PING, CONT)), random_bytes(rng, rng.randint(0, 30)))
        frame.length = rng.choice((65536, 2 ** 31, 2 ** 32 + 1, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1))
        frame.fin = rng.random() < 0.7
        if compressor is not None and frame.opcode in (TEXT, BINARY) and rng.random() < 0.5:
            frame.rsv1 = True
            if rng.random() < 0.5:
                frame.payload = zlib.compressobj(6, zlib.DEFLATED, -15).compress(bytes(4096))
        items.insert(where, [frame])
    elif kind == "close":
        roll = rng.random()
        if roll < 0.3:
            frame = F(CLOSE, rng.choice(INVALID_CLOSE_CODES).to_bytes(2, "big") + random_text(rng, 5))
        elif roll < 0.45:
            frame = F(CLOSE, bytes((rng.getrandbits(8),)))
        elif roll < 0.6:
            frame = F(CLOSE, (1000).to_bytes(2, "big") + random_bytes(rng, 130))  # over 125
        elif roll < 0.7:
            frame = close_frame(rng, rng.choice((1012, 1013, 1014, 1002, 1007, 1009, 1010)))
        else:
            frame = close_frame(rng, rng.choice(CLIENT_CLOSE_CODES))
        items.insert(where, [frame])
    frames = [frame for item in items for frame in item]
    if kind in ("protocol", "mixed"):
        for _ in range(rng.randint(1, 2)):
            rng.choice(FRAME_MUTATIONS)(rng, frames, compressor)
    if kind != "valid-open" and rng.random() < 0.85:
        frames.append(close_frame(rng, rng.choice(CLIENT_CLOSE_CODES)))
    return frames


def pick(rng: random.Random, frames: List[F], test: Callable[[F], bool] = lambda f: True) -> Optional[F]:
    candidates = [f for f in frames if test(f)]
    return rng.choice(candidates) if candidates else None


def mut_reserved_opcode(rng, frames, compressor):
    frame = pick(rng, frames) or frames.append(F(BINARY, b"x")) or frames[-1]
    frame.opcode = rng.choice(RESERVED_OPCODES)


def mut_rsv(rng, frames, compressor):
    frame = pick(rng, frames) or frames.append(F(TEXT, b"y")) or frames[-1]
    setattr(frame, rng.choice(("rsv1", "rsv2", "rsv3")), True)


def mut_unmasked(rng, frames, compressor):
    frame = pick(rng, frames) or frames.append(F(TEXT, b"z")) or frames[-1]
    frame.masked = False


def mut_big_control(rng, frames, compressor):
    frame = F(rng.choice((PING, PONG, CLOSE)), random_bytes(rng, rng.randint(126, 400)))
    frames.insert(rng.randint(0, len(frames)), frame)


def mut_fragmented_control(rng, frames, compressor):
    frame = pick(rng, frames, lambda f: f.opcode >= 8)
    if frame is None:
        frame = control_frame(rng)
        frames.insert(rng.randint(0, len(frames)), frame)
    frame.fin = False


def mut_continuation_without_start(rng, frames, compressor):
    starts = [0] + [i + 1 for i, f in enumerate(frames) if f.opcode in (TEXT, BINARY, CONT) and f.fin]
    frames.insert(rng.choice(starts), F(CONT, random_bytes(rng, rng.randint(0, 10)), fin=rng.random() < 0.7))


def mut_new_message_inside_fragmented(rng, frames, compressor):
    open_at = [i for i, f in enumerate(frames) if f.opcode in (TEXT, BINARY, CONT) and not f.fin]
    if open_at:
        at = rng.choice(open_at) + 1
    else:
        frames.append(F(TEXT, b"abc", fin=False))
        at = len(frames)
    frames.insert(at, F(rng.choice((TEXT, BINARY)), b"new"))


def mut_wrong_length(rng, frames, compressor):
    frame = pick(rng, frames) or frames.append(F(BINARY, b"12345")) or frames[-1]
    size = len(frame.payload)
    frame.length = max(0, rng.choice((size + rng.randint(-5, 5), rng.randint(0, 300), size * 2 + 1)))


def mut_rearrange(rng, frames, compressor):
    if len(frames) < 2:
        frames.append(F(CONT, b"tail"))
        return
    i = rng.randrange(len(frames) - 1)
    roll = rng.random()
    if roll < 0.4:
        frames[i], frames[i + 1] = frames[i + 1], frames[i]
    elif roll < 0.7:
        del frames[i]
    else:
        frames.insert(i, frames[i])


def mut_non_minimal_length(rng, frames, compressor):
    frame = pick(rng, frames, lambda f: len(f.payload) < 65536) or frames.append(F(PING, b"p")) or frames[-1]
    frame.form = rng.choice((16, 64))


FRAME_MUTATIONS = (mut_reserved_opcode, mut_rsv, mut_unmasked, mut_big_control, mut_fragmented_control,
                   mut_continuation_without_start, mut_new_message_inside_fragmented, mut_wrong_length,
                   mut_reserved_opcode, mut_rsv, mut_unmasked, mut_wrong_length, mut_rearrange,
                   mut_rearrange, mut_non_minimal_length)


def mutate_bytes(rng: random.Random, wire: bytes) -> bytes:
    data = bytearray(wire)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(("flip", "flip", "insert", "delete", "truncate", "overwrite"))
        at = rng.randint(0, max(0, len(data) - 1))
        if op == "flip" and data:
            data[at] ^= 1 << rng.randrange(8)
        elif op == "insert":
            data[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4)))
        elif op == "delete":
            del data[at:at + rng.randint(1, 4)]
        elif op == "truncate":
            del data[rng.randint(0, len(data)):]
        elif data:
            data[at] = rng.getrandbits(8)
    return bytes(data)


# ------------------------------------------------------------------- the model


class Expect:
    """What the server must do with a byte stream.

    ``outputs``: the echoes ("text"/"binary") and pongs that the bytes before ``cut``
    call for, all of them. Then, for the bytes from ``cut`` on, ``kind``:
      "close"       a valid close frame: the server echoes it (a code in ``codes``)
      "error"       a violation: a close frame with a code in ``codes``
      "maybe_error" an incomplete header that already breaks a rule: ``codes`` now,
                    or waiting for the rest (we then close TCP)
      "incomplete"  the stream stops, valid so far; ``boundary``: between frames
      "fuzzy"       what follows is not fixed by the RFCs (``why``)
    """

    __slots__ = ("outputs", "cut", "kind", "codes", "boundary", "why")

    def __init__(self) -> None:
        self.outputs: List[Tuple[str, object]] = []
        self.cut = 0
        self.kind = "incomplete"
        self.codes: Set[int] = set()
        self.boundary = True
        self.why = ""

    def end(self, kind: str, cut: int, codes=(), why: str = "", boundary: bool = False) -> "Expect":
        self.kind, self.cut, self.codes, self.why, self.boundary = kind, cut, set(codes), why, boundary
        return self

    def __repr__(self) -> str:
        outputs = [(k, v if len(v) < 40 else f"{v[:40]!r}...[{len(v)}]") for k, v in self.outputs]  # type: ignore
        return (f"Expect(outputs={outputs}, cut={self.cut}, kind={self.kind}, codes={sorted(self.codes)}, "
                f"boundary={self.boundary}, why={self.why!r})")


class _Message:
    __slots__ = ("opcode", "compressed", "size", "overhead", "parts", "decoder", "ended", "bad")

    def __init__(self, opcode: int, compressed: bool) -> None:
        self.opcode = opcode
        self.compressed = compressed
        self.size = 0
        self.overhead = 0  # what FRAGMENT_COST adds to size
        self.parts: List[bytes] = []
        self.decoder = codecs.getincrementaldecoder("utf-8")() if opcode == TEXT else None
        self.ended = False  # the deflate stream reached a final block
        self.bad = False  # invalid UTF-8 seen


def decode_strictly(decoder: codecs.IncrementalDecoder, data: bytes, final: bool) -> None:
    """decoder.decode(), failing as soon as the bytes it holds can no longer become a
    character (a surrogate's second byte, ED A0, say), as the server does (RFC 6455 §8.1:
    fail fast); Python's decoder waits for the rest of the sequence."""
    decoder.decode(data, final)
    pending = decoder.getstate()[0]
    if len(pending) > 1:  # (one byte: its lead was checked already)
        size = 3 if pending[0] < 0xF0 else 4
        (pending + b"\x80" * (size - len(pending))).decode("utf-8")  # UnicodeDecodeError


def inflate_frame_at_once(inflater, msg: _Message, data: bytes, tail: int, max_size: int):
    """The common case in one call: the frame inflates within the limits, its text is
    valid so far and no final block leaves bytes over. Returns the inflater to go on
    with and True; or, when something happens in this frame, a copy of the inflater as
    it was and False: the model then feeds the frame byte by byte, to see where."""
    backup = inflater.copy()
    state = msg.decoder.getstate() if msg.decoder is not None else None
    try:
        out = inflater.decompress(data, max_size + 1 - msg.size)
        fine = (not inflater.unconsumed_tail and msg.size + len(out) + msg.overhead <= max_size
                and (not inflater.eof or len(inflater.unused_data) <= tail))
        if fine and msg.decoder is not None:
            decode_strictly(msg.decoder, out, False)
    except (zlib.error, UnicodeDecodeError):
        fine = False
    if not fine:
        if msg.decoder is not None:
            msg.decoder.setstate(state)
        return backup, False
    msg.size += len(out)
    msg.parts.append(out)
    msg.ended = inflater.eof
    return inflater, True


def model(wire: bytes, deflate: bool, reset: bool, max_size: int) -> Expect:
    """RFC 6455 §5-§8 and RFC 7692 §6-§7 as a server must apply them to ``wire``."""
    expect = Expect()
    n = len(wire)
    pos = 0
    msg: Optional[_Message] = None
    inflater = None
    while True:
        start = pos
        if pos >= n:
            return expect.end("incomplete", n, boundary=True)
        b0 = wire[pos]
        fin, rsv1, opcode = bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F
        control = opcode >= 8
        errors: Set[int] = set()
        if b0 & 0x30:
            errors.add(1002)  # §5.2: RSV2/RSV3 without an extension that defines them
        if control:
            if opcode not in (CLOSE, PING, PONG) or not fin or rsv1:
                errors.add(1002)  # §5.2 reserved opcode, §5.5 fragmented, RFC 7692 §6.1
        elif opcode == CONT:
            if msg is None or rsv1:
                errors.add(1002)  # §5.4 nothing to continue; RFC 7692 §6.1
        elif opcode in (TEXT, BINARY):
            if msg is not None or (rsv1 and not deflate):
                errors.add(1002)  # §5.4 interleaved messages; §5.2 RSV1 unnegotiated
        else:
            errors.add(1002)
        available = n - pos
        header_size = 2
        length = None
        minimal = True
        if available >= 2:
            b1 = wire[pos + 1]
            masked, short = bool(b1 & 0x80), b1 & 0x7F
            if not masked:
                errors.add(1002)  # §5.1
            extra = 2 if short == 126 else 8 if short == 127 else 0
            header_size = 2 + extra + (4 if masked else 0)
            if control and available < 2 + extra and short > 125:
                errors.add(1002)  # §5.5, unless the length to come is 125 or less
            if available >= 2 + extra:
                length = int.from_bytes(wire[pos + 2:pos + 2 + extra], "big") if extra else short
                minimal = not ((short == 126 and length < 126) or (short == 127 and length < 65536))
                if control and length > 125:
                    errors.add(1002)  # §5.5: a control frame's payload is 125 bytes or less
                if length >> 63:
                    errors.add(1002)  # §5.2: the most significant bit must be 0
                compressed = (msg.compressed if msg is not None else False) if opcode == CONT \
                    else rsv1 and deflate
                in_message = not (opcode == CONT and msg is None)
                size = msg.size if opcode == CONT and msg is not None else 0
                data_frame = opcode in (TEXT, BINARY, CONT) and not compressed and in_message
                if data_frame and size + length > max_size:
                    errors.add(1009)
        if available < header_size:
            if errors:
                return expect.end("maybe_error", start, errors, "incomplete header that breaks a rule")
            return expect.end("incomplete", n)
        if errors:
            return expect.end("error", start, errors)
        if not minimal:
            return expect.end("fuzzy", start, why="length not in its minimal form (a sender's MUST)")
        assert length is not None
        overhead = 0
        if not control:
            size, overhead = (msg.size, msg.overhead) if opcode == CONT and msg is not None else (0, 0)
            if opcode == CONT or not fin:
                overhead += FRAGMENT_COST if compressed else max(0, FRAGMENT_COST - length)
            if size + overhead + (0 if compressed else length) > max_size:
                return expect.end("fuzzy", start, why="over max_size if each fragment costs 16 bytes")
        key = wire[pos + header_size - 4:pos + header_size]
        pos += header_size
        take = min(length, n - pos)
        payload = xor_mask(wire[pos:pos + take], key)
        pos += take
        complete = take == length
        if control:
            if not complete:
                return expect.end("incomplete", n)
            if opcode == PING:
                expect.outputs.append(("pong", payload))
            elif opcode == CLOSE:
                if len(payload) == 1:
                    return expect.end("error", start, {1002})
                if not payload:
                    return expect.end("close", start, {1005, 1000})
                code = int.from_bytes(payload[:2], "big")
                errors = set() if valid_close_code(code) else {1002}
                try:
                    payload[2:].decode("utf-8")
                except UnicodeDecodeError:
                    errors.add(1007)
                if errors:
                    return expect.end("error", start, errors)
                codes = {code, 1000}
                if 1012 <= code <= 1014:  # IANA-registered, not in RFC 6455
                    codes.add(1002)
                return expect.end("close", start, codes)
            continue
        if opcode != CONT:
            msg = _Message(opcode, rsv1)
        assert msg is not None
        msg.overhead = overhead
        last = fin and complete
        if msg.compressed:
            if inflater is None:
                inflater = zlib.decompressobj(-15)
            data = payload + (TAIL if last else b"")
            errors = set()
            if not msg.ended:
                inflater, done = inflate_frame_at_once(inflater, msg, data, len(data) - len(payload),
                                                       max_size)
                if done:
                    data = b""
            for i in range(len(data)):
                if msg.ended:
                    if i < len(payload):
                        return expect.end("fuzzy", start, why="compressed bytes after a final deflate block")
                    break
                try:
                    out = inflater.decompress(data[i:i + 1], max_size + 1 - msg.size)
                except zlib.error:
                    errors.add(1007)  # RFC 7692 §8: invalid compressed data
                    break
                msg.size += len(out)
                if msg.size > max_size:
                    errors.add(1009)
                    break
                if msg.size + msg.overhead > max_size and not errors:
                    return expect.end("fuzzy", start, why="over max_size if each fragment costs 16 bytes")
                msg.ended = inflater.eof
                msg.parts.append(out)
                if msg.decoder is not None and not msg.bad:
                    try:
                        decode_strictly(msg.decoder, out, False)
                    except UnicodeDecodeError:
                        msg.bad = True  # the server may see the overflow in the same read
                        errors.add(1007)
            if msg.decoder is not None and last and not msg.bad and not errors:
                try:
                    msg.decoder.decode(b"", True)
                except UnicodeDecodeError:
                    errors.add(1007)
            if errors:
                return expect.end("error", start, errors)
        else:
            msg.size += take
            msg.parts.append(payload)
            if msg.decoder is not None:
                try:
                    decode_strictly(msg.decoder, payload, last)
                except UnicodeDecodeError:
                    return expect.end("error", start, {1007})  # §8.1
        if not complete:
            return expect.end("incomplete", n)
        if fin:
            data = b"".join(msg.parts)
            expect.outputs.append(("text", data.decode("utf-8")) if msg.opcode == TEXT else ("binary", data))
            if msg.compressed and (msg.ended or reset):
                inflater = None
            msg = None


# --------------------------------------------------------- the wire, both ways


class Reader:
    """The server's frames, checked as strictly as a client must (RFC 6455 §5)."""

    def __init__(self, sock: socket.socket, deflate: bool) -> None:
        self.sock = sock
        self.deflate = deflate
        self.buf = bytearray()
        self.eof = False
        self.inflater = None
        self.partial: Optional[Tuple[int, bool, List[bytes]]] = None

    def _frame(self) -> Optional[Tuple[int, bytes]]:
        buf = self.buf
        if len(buf) < 2:
            return None
        if buf[1] & 0x80:
            raise Mismatch(f"the server sent a masked frame: {bytes(buf[:16]).hex()}")
        length, pos = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < pos + length:
            return None
        first, payload = buf[0], bytes(buf[pos:pos + length])
        del buf[:pos + length]
        return first, payload

    def _event(self, first: int, payload: bytes) -> Optional[tuple]:
        fin, rsv1, opcode = bool(first & 0x80), bool(first & 0x40), first & 0x0F
        if first & 0x30 or opcode in RESERVED_OPCODES:
            raise Mismatch(f"the server sent a frame with RSV2/3 or a reserved opcode: {first:#x}")
        if opcode >= 8:
            if not fin or rsv1 or len(payload) > 125:
                raise Mismatch(f"the server sent a bad control frame: {first:#x} {len(payload)} bytes")
            if opcode == CLOSE:
                if len(payload) == 1:
                    raise Mismatch("the server sent a close frame with a 1-byte payload")
                code = int.from_bytes(payload[:2], "big") if payload else 1005
                if payload and not valid_close_code(code):
                    raise Mismatch(f"the server sent close code {code}")
                try:
                    reason = payload[2:].decode("utf-8")
                except UnicodeDecodeError:
                    raise Mismatch(f"the server's close reason is not UTF-8: {payload!r}") from None
                return ("close", code, reason)
            return ("ping" if opcode == PING else "pong", payload)
        if opcode == CONT:
            if self.partial is None:
                raise Mismatch("the server sent a continuation frame without a message")
            if rsv1:
                raise Mismatch("the server set RSV1 on a continuation frame")
            self.partial[2].append(payload)
        else:
            if self.partial is not None:
                raise Mismatch("the server started a message inside another")
            if rsv1 and not self.deflate:
                raise Mismatch("the server set RSV1 without permessage-deflate")
            self.partial = (opcode, rsv1, [payload])
        if not fin:
            return None
        opcode, compressed, parts = self.partial
        self.partial = None
        data = b"".join(parts)
        if compressed:
            if self.inflater is None:
                self.inflater = zlib.decompressobj(-15)
            try:
                data = self.inflater.decompress(data + TAIL)
            except zlib.error as exc:
                raise Mismatch(f"the server's compressed message does not inflate: {exc}") from None
            if self.inflater.eof:
                self.inflater = None
        if opcode == TEXT:
            try:
                return ("text", data.decode("utf-8"))
            except UnicodeDecodeError:
                raise Mismatch("the server sent a text message that is not UTF-8") from None
        return ("binary", data)

    def next(self, deadline: float) -> Optional[tuple]:
        """The next event: ("text"|"binary"|"ping"|"pong", data), ("close", code, reason),
        ("eof",) or ("reset",); None at the deadline."""
        while True:
            raw = self._frame()
            if raw is not None:
                event = self._event(*raw)
                if event is not None:
                    return event
                continue
            if self.eof:
                if self.buf:
                    raise Mismatch(f"the server's stream ended inside a frame: {bytes(self.buf[:32]).hex()}")
                return ("eof",)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:
                self.eof = True
                return ("reset",)
            if not data:
                self.eof = True
            self.buf += data


def send_pieces(sock: socket.socket, data: bytes, rng: random.Random) -> None:
    """Send ``data`` whole or in random pieces, now and then with a short pause, so
    that the server sees frames cut at any place."""
    if not data:
        return
    if rng.random() < 0.5:
        sock.sendall(data)
        return
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 2, rng.randint(1, 16), rng.randint(1, 600)))
        sock.sendall(data[pos:pos + size])
        pos += size
        if rng.random() < 0.05:
            time.sleep(0.002)


def handshake(sock: socket.socket, port: int, offer: Optional[str], rng: random.Random) -> Negotiated:
    key = base64.b64encode(bytes(rng.getrandbits(8) for _ in range(16)))
    lines = [b"GET /fuzz HTTP/1.1", b"Host: 127.0.0.1:%d" % port, b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Key: " + key, b"Sec-WebSocket-Version: 13"]
    if offer:
        lines.append(b"Sec-WebSocket-Extensions: " + offer.encode())
    sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise Mismatch(f"the server closed during the handshake: {head!r}")
        head += data
    head, _, rest = head.partition(b"\r\n\r\n")
    if rest:
        raise Mismatch(f"the server sent bytes before any frame of ours: {rest!r}")
    status, *fields = head.split(b"\r\n")
    if not status.startswith(b"HTTP/1.1 101"):
        raise Mismatch(f"handshake refused: {head!r}")
    headers = {}
    for field in fields:
        name, _, value = field.partition(b":")
        headers[name.strip().lower()] = value.strip().decode("latin-1")
    if headers.get(b"sec-websocket-accept") != accept_key(key).decode():
        raise Mismatch(f"wrong Sec-WebSocket-Accept: {head!r}")
    extension = headers.get(b"sec-websocket-extensions")
    if extension and not offer:
        raise Mismatch(f"the server accepted an extension that was not offered: {extension}")
    return Negotiated(extension, offer)


def shut_wr(sock: socket.socket) -> None:
    """Our TCP close (FIN); the server may have closed (or reset) the connection already."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def client_close(rng: random.Random, code: Optional[int]) -> bytes:
    return close_frame(rng, code).encode(rng)


# ------------------------------------------------------------------ one case


def is_subsequence(items: List[bytes], sequence: List[bytes]) -> bool:
    it = iter(sequence)
    return all(any(item == other for other in it) for item in items)


def pongs_complete(pongs: List[bytes], pings: List[bytes]) -> bool:
    """RFC 6455 §5.5.2-§5.5.3: every ping is answered, or a pong answers a later ping (an
    endpoint may answer only the most recent of pings it has not answered yet); so the
    last ping is answered, by the last pong."""
    if not pings:
        return not pongs
    return bool(pongs) and pongs[-1] == pings[-1] and is_subsequence(pongs[:-1], pings[:-1])


def drive(sock: socket.socket, wire: bytes, expect: Expect, negotiated: Negotiated,
          rng: random.Random) -> str:
    """Send ``wire`` and hold the server to ``expect``; the outcome's category."""
    reader = Reader(sock, negotiated.deflate)
    limit = CLOSE_TIMEOUT + MARGIN

    # Phase 1: everything valid; every echo and pong must come back.
    send_pieces(sock, wire[:expect.cut], rng)
    want = [o for o in expect.outputs if o[0] != "pong"]
    want_pongs = [o[1] for o in expect.outputs if o[0] == "pong"]
    got: List[Tuple[str, object]] = []
    pongs: List[bytes] = []
    deadline = time.monotonic() + limit
    while len(got) < len(want) or not pongs_complete(pongs, want_pongs):
        event = reader.next(deadline)
        if event is None:
            raise Mismatch(f"no answer within {limit:.0f} s to valid frames: got {len(got)}/{len(want)} "
                           f"echoes and {len(pongs)}/{len(want_pongs)} pongs")
        if event[0] in ("text", "binary"):
            got.append(event)  # type: ignore[arg-type]
            if len(got) > len(want) or got[-1] != want[len(got) - 1]:
                raise Mismatch(f"echo #{len(got)} is {str(event)[:200]}, expected "
                               f"{str(want[len(got) - 1]) [:200] if len(got) <= len(want) else 'none'}")
        elif event[0] == "pong":
            pongs.append(event[1])
            if not is_subsequence(pongs, want_pongs):
                raise Mismatch(f"pongs {pongs!r} do not answer the pings {want_pongs!r} in order")
        elif event[0] == "close":
            raise Mismatch(f"the server closed with {event[1]} {event[2]!r} while the bytes so far were "
                           f"valid (after {len(got)} echoes, {len(pongs)} pongs)")
        else:
            raise Mismatch(f"unexpected {event[0]} from the server while the bytes so far were valid")
    echoed = "echo" if want else "noecho"

    def next_event(deadline: float) -> Optional[tuple]:
        """The next event but pongs that still answer the pings in order: with equal
        payloads, the pings looked answered before all of their pongs came."""
        while True:
            event = reader.next(deadline)
            if event is None or event[0] != "pong" or not is_subsequence(pongs + [event[1]], want_pongs):
                return event
            pongs.append(event[1])

    def expect_tcp_close(what: str) -> None:
        event = reader.next(time.monotonic() + limit)
        if event is None:
            raise Mismatch(f"no TCP close within {limit:.0f} s {what}")
        if event[0] not in ("eof", "reset"):
            raise Mismatch(f"{str(event)[:200]} from the server {what}, expected the TCP close")

    def after_close_frame() -> None:
        roll = rng.random()
        if roll < 0.4:
            with contextlib.suppress(OSError):
                sock.sendall(client_close(rng, 1000))
        elif roll < 0.7:
            shut_wr(sock)
        expect_tcp_close("after its close frame")

    # Phase 2: the rest, and how it ends.
    if expect.kind == "incomplete":
        if expect.boundary and rng.random() < 0.75:
            code = rng.choice(CLIENT_CLOSE_CODES)
            sock.sendall(client_close(rng, code))
            event = next_event(time.monotonic() + limit)
            codes = {1005 if code is None else code, 1000}
            if event is None or event[0] != "close" or event[1] not in codes:
                raise Mismatch(f"our close ({code}) after valid frames got {event}, expected a close "
                               f"with {sorted(codes)}")
            expect_tcp_close("after the closing handshake")
            return f"{echoed}+close-ok"
        shut_wr(sock)
        event = next_event(time.monotonic() + limit)
        if event is None or event[0] not in ("eof", "reset"):
            raise Mismatch(f"{event} from the server after our TCP close in the middle of a frame")
        return "incomplete+eof"
    # the server may close before it has read everything that follows the fault
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        send_pieces(sock, wire[expect.cut:], rng)
    if expect.kind in ("close", "error"):
        event = next_event(time.monotonic() + limit)
        if event is None:
            raise Mismatch(f"no close frame within {limit:.0f} s (expected {sorted(expect.codes)})")
        if event[0] != "close":
            raise Mismatch(f"{str(event)[:200]} instead of a close frame with {sorted(expect.codes)}")
        if event[1] not in expect.codes:
            raise Mismatch(f"close code {event[1]} {event[2]!r}, expected {sorted(expect.codes)}")
        after_close_frame()
        if expect.kind == "close":
            return f"{echoed}+close-ok"
        return f"close-{event[1]}"
    # "maybe_error" and "fuzzy": the server may also wait for more bytes.
    # After a fuzzy point anything valid may have come in, a close to echo included; but
    # never 1011 (the handler crashed: no client close here sends it).
    allowed = expect.codes if expect.kind == "maybe_error" else {
        c for c in range(5000) if valid_close_code(c) and c != 1011} | {1005}
    shut = False
    while True:
        event = next_event(time.monotonic() + (limit if shut else QUIET))
        if event is None:
            if shut:
                raise Mismatch(f"no TCP close within {limit:.0f} s after ours ({expect.kind})")
            shut_wr(sock)
            shut = True
            continue
        if event[0] in ("eof", "reset"):
            return f"{expect.kind}+eof"
        if event[0] == "close":
            if event[1] not in allowed:
                raise Mismatch(f"close code {event[1]} {event[2]!r}, expected one of {sorted(allowed)}")
            expect_tcp_close("after its close frame")
            return f"{expect.kind}+close-{event[1]}"
        if expect.kind == "maybe_error":
            raise Mismatch(f"{str(event)[:200]} from the server after an invalid header")


def run_frame_case(ports: Tuple[int, int], seed: int, index: int, stats: Counter) -> Optional[str]:
    rng = random.Random(f"frames:{seed}:{index}")
    kind = FRAME_KINDS[index % len(FRAME_KINDS)]
    offer = rng.choice(OFFERS)
    slow = rng.random() < 0.3
    port = ports[slow]
    wire = b""
    expect: Optional[Expect] = None
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # pieces go out as sent
    try:
        negotiated = handshake(sock, port, offer, rng)
        frames = generate(rng, kind, negotiated)
        wire = b"".join(frame.encode(rng) for frame in frames)
        if kind in ("bytes", "mixed"):
            wire = mutate_bytes(rng, wire)
        expect = model(wire, negotiated.deflate, negotiated.client_reset, MAX_SIZE)
        stats[drive(sock, wire, expect, negotiated, rng)] += 1
        stats["deflate" if negotiated.deflate else "plain"] += 1
        stats["slow handler" if slow else "fast handler"] += 1
    except (Mismatch, OSError) as exc:
        where = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return (f"frames case {index} (SIMPLEWS_FUZZ_SEED={seed} SIMPLEWS_FUZZ_CASE={index}), kind {kind}, "
                f"offer {offer!r}, {'slow' if slow else 'fast'} handler:\n  {where}\n  model: {expect}\n"
                f"  sent: {hexdump(wire)}")
    finally:
        sock.close()
    return None


def echo(ws: simplews.Connection) -> None:
    for message in ws:
        ws.send(message)


def slow_echo(ws: simplews.Connection) -> None:
    """An echo that lets go of the read lock for a while after each message: the
    keepalive thread reads ahead meanwhile (answers pings, queues messages, fails the
    connection) - the other path of DESIGN §2."""
    for message in ws:
        time.sleep(0.005)
        ws.send(message)


def test_fuzz_frames_against_server(record_property):
    seed = fuzz_seed(DEFAULT_SEED)
    record_property("simplews_fuzz_seed", seed)
    print(f"\nframes fuzz: SIMPLEWS_FUZZ_SEED={seed}")
    stats: Counter = Counter()
    failures: List[str] = []
    cases = 0
    started = time.monotonic()
    with bounded_resources():
        options = dict(max_size=MAX_SIZE, close_timeout=CLOSE_TIMEOUT, open_timeout=IO_TIMEOUT,
                       ping_interval=None)
        servers = [simplews.serve(handler, "127.0.0.1", 0, **options) for handler in (echo, slow_echo)]
        threads = [threading.Thread(target=server.serve_forever, name="fuzz-serve-forever")
                   for server in servers]
        for thread in threads:
            thread.start()
        try:
            ports = (servers[0].port, servers[1].port)
            for index in case_indices(min_cases=3 * len(FRAME_KINDS)):
                cases += 1
                failure = run_frame_case(ports, seed, index, stats)  # type: ignore[arg-type]
                if failure:
                    failures.append(failure)
                    if len(failures) >= MAX_FAILURES:
                        break
        finally:
            for server, thread in zip(servers, threads):
                server.shutdown()
                thread.join(TIMEOUT)
    summary = ", ".join(f"{name}: {count}" for name, count in sorted(stats.items()))
    print(f"frames fuzz: {cases} cases in {time.monotonic() - started:.1f} s; {summary}")
    record_property("simplews_fuzz_outcomes", summary)
    assert not failures, f"seed {seed}: {len(failures)} failing case(s)\n\n" + "\n\n".join(failures)
    if not replaying() and cases >= 3 * len(FRAME_KINDS):
        # Not vacuous: each way a connection can end came up.
        for category in ("close-1002", "close-1007", "close-1009", "echo+close-ok", "incomplete+eof"):
            assert stats[category], f"seed {seed}: no {category!r} outcome in {cases} cases ({summary})"
        assert stats["deflate"] and stats["plain"] and stats["slow handler"], summary


# ===================================================== 2. HTTP answers -> connect()

OK, FAIL, EITHER = "ok", "fail", "either"
ALLOWED_ERRORS = (simplews.InvalidHandshake, TimeoutError, OSError, simplews.ConnectionClosed)
SHORT_OPEN_TIMEOUT = 0.4  # for answers that may leave connect() waiting
LONG_OPEN_TIMEOUT = 3.0  # for answers that must succeed, even on a loaded machine
SERVER_IO = 3.0


class Answer:
    """The raw server's answer: a status line, header lines, what follows them; and how
    the server behaves after sending it."""

    def __init__(self, key: bytes, request: Dict[bytes, bytes], rng: random.Random) -> None:
        self.status = b"HTTP/1.1 101 Switching Protocols"
        self.headers: List[List[Optional[bytes]]] = [
            [b"Upgrade", b"websocket"], [b"Connection", b"Upgrade"],
            [b"Sec-WebSocket-Accept", accept_key(key)]]
        offer = request.get(b"sec-websocket-extensions")
        if offer is not None and rng.random() < 0.8:
            self.headers.append([b"Sec-WebSocket-Extensions", rng.choice((
                b"permessage-deflate", b"permessage-deflate; server_no_context_takeover",
                b"permessage-deflate; client_no_context_takeover",
                b"permessage-deflate; server_max_window_bits=10",
                b"permessage-deflate; client_max_window_bits=12"))])
        protocols = request.get(b"sec-websocket-protocol")
        if protocols is not None:
            self.headers.append([b"Sec-WebSocket-Protocol", rng.choice(protocols.split(b","))
                                 .strip()])
        self.body = b""
        self.pieces = 1
        self.after = "serve"  # serve | close | shut | hold | rst
        self.raw: Optional[bytes] = None  # bytes instead of the serialized answer

    def value(self, name: bytes) -> bytes:
        found = self.find(name)
        return found[0][1] if found else b""  # type: ignore[return-value]

    def find(self, name: bytes) -> List[List[Optional[bytes]]]:
        return [h for h in self.headers if h[1] is not None and h[0].lower() == name.lower()]  # type: ignore

    def remove(self, name: bytes) -> None:
        self.headers = [h for h in self.headers if not (h[1] is not None and h[0].lower() == name.lower())]  # type: ignore

    def set(self, name: bytes, value: bytes) -> None:
        found = self.find(name)
        if found:
            found[0][1] = value
        else:
            self.headers.append([name, value])

    def serialize(self) -> bytes:
        if self.raw is not None:
            return self.raw
        lines = [self.status] + [h[0] if h[1] is None else h[0] + b": " + h[1] for h in self.headers]  # type: ignore
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


def hs_case(rng: random.Random, kind: str, turn: int, port: int):
    """A case: connect()'s options, the answer's mutations (applied to each answer),
    the expected class and a description."""
    options = {"compression": rng.choice(("deflate", None)),
               "subprotocols": rng.choice((None, ["chat"], ["chat", "v2.fuzz"]))}
    ops: List[Tuple[str, Callable[[Answer, random.Random], None], str]] = []
    later = "valid"  # how the server answers connections after the first (redirects)
    ok_ops = list(OK_MUTATIONS)
    if kind == "valid":
        pass
    elif kind == "ok_variants":
        for name in rng.sample(ok_ops, rng.randint(1, 3)):
            ops.append((name, OK_MUTATIONS[name], OK))
    elif kind in FAIL_FAMILIES:
        name = rng.choice(sorted(FAIL_FAMILIES[kind]))
        ops.append((name, FAIL_FAMILIES[kind][name], FAIL))
    elif kind == "extensions":
        if options["compression"] is None:
            value = rng.choice((b"permessage-deflate", b"permessage-deflate; server_no_context_takeover"))
            ops.append((f"extension not offered {value!r}", lambda a, r, v=value: a.set(
                b"Sec-WebSocket-Extensions", v), FAIL))
        else:
            value, expected = EXTENSION_ANSWERS[turn % len(EXTENSION_ANSWERS)]
            ops.append((f"extension {value!r}", lambda a, r, v=value: a.set(b"Sec-WebSocket-Extensions", v),
                        expected))
    elif kind == "subprotocol":
        offered = options["subprotocols"]
        choices = [(b"other", FAIL), (b"chat, v2.fuzz", FAIL), (b"", FAIL), (b"CHAT", FAIL)]
        if offered:
            choices.append((offered[-1].encode(), OK))
        value, expected = choices[turn % len(choices)]
        ops.append((f"subprotocol {value!r}", lambda a, r, v=value: a.set(b"Sec-WebSocket-Protocol", v),
                    expected))
    elif kind == "content_length":
        length = CONTENT_LENGTHS[turn % len(CONTENT_LENGTHS)]
        status = rng.choice((400, 401, 403, 404, 500, 503, 200, 426))

        def content_length(a: Answer, r: random.Random, status=status, length=length) -> None:
            a.status = b"HTTP/1.1 %d Nope" % status
            a.headers = [[b"Content-Type", b"text/plain"], [b"Content-Length", length]]
            a.body = bytes(r.getrandbits(8) for _ in range(r.randint(0, 40)))
            a.after = r.choice(("close", "close", "shut", "hold"))
        ops.append((f"status {status}, Content-Length {length!r}", content_length, FAIL))
    elif kind == "redirect":
        location, expected = REDIRECTS[turn % len(REDIRECTS)]
        location = location.replace(b"{port}", str(port).encode())
        status = rng.choice((301, 302, 303, 307, 308))

        def redirect(a: Answer, r: random.Random, status=status, location=location) -> None:
            a.status = b"HTTP/1.1 %d Moved" % status
            a.headers = [[b"Location", location], [b"Content-Length", b"0"]]
            a.after = r.choice(("close", "shut"))
        ops.append((f"redirect {status} to {location!r}", redirect, expected))
        if location.endswith(b"/loop"):
            later = "same"
    elif kind == "truncate":
        def truncate(a: Answer, r: random.Random) -> None:
            head = a.serialize()
            a.raw = head[:r.randint(0, len(head) - 1)]
            a.after = r.choice(("close", "close", "shut", "hold", "rst"))
        ops.append(("truncated", truncate, FAIL))
    elif kind == "close_now":
        def close_now(a: Answer, r: random.Random) -> None:
            a.raw = b""
            a.after = r.choice(("close", "rst"))
        ops.append(("closed without an answer", close_now, FAIL))
    elif kind == "bytes":
        ops.append(("byte mutations", byte_mutations, EITHER))
    elif kind == "mixed":
        everything = [(n, f, OK) for n, f in OK_MUTATIONS.items()] + [
            (n, f, FAIL) for family in FAIL_FAMILIES.values() for n, f in family.items()] + [
            (n, f, EITHER) for n, f in EITHER_MUTATIONS.items()]
        # the OK ones first: "other reason phrase" after "status not 101" made it 101 again
        ops.extend(sorted(rng.sample(everything, rng.randint(2, 3)), key=lambda op: op[2] != OK))
        if rng.random() < 0.5:
            ops.append(("byte mutations", byte_mutations, EITHER))
    expected = OK
    for _, _, cls in ops:
        if cls == EITHER or (cls == FAIL and expected != EITHER):
            expected = cls
    return options, ops, expected, later


def byte_mutations(a: Answer, rng: random.Random) -> None:
    data = bytearray(a.serialize())
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data))
        roll = rng.random()
        if roll < 0.4:
            data[at] ^= 1 << rng.randrange(8)
        elif roll < 0.6:
            data[at:at] = bytes(rng.choice((rng.getrandbits(8), 0x80 | rng.getrandbits(7), 0x0A, 0x0D, 0x3A,
                                            0x20)) for _ in range(rng.randint(1, 3)))
        elif roll < 0.8:
            del data[at:at + rng.randint(1, 3)]
        else:
            data[at] = rng.getrandbits(8)
    a.raw = bytes(data)
    if rng.random() < 0.3:
        a.after = "close"


def _random_case(a: Answer, r: random.Random) -> None:
    for h in a.headers:
        h[0] = bytes(c ^ 0x20 if 0x41 <= (c & 0xDF) <= 0x5A and r.random() < 0.5 else c for c in h[0])  # type: ignore


def _ows(a: Answer, r: random.Random) -> None:
    for h in a.headers:
        if h[1] is not None:
            h[1] = r.choice((b"", b" ", b"\t", b"  ")) + h[1] + r.choice((b"", b" ", b"\t "))


def _extra_headers(a: Answer, r: random.Random) -> None:
    extra = [[b"Server", b"fuzz/1.0"], [b"Date", b"Thu, 01 Jan 1970 00:00:00 GMT"],
             [b"X-Fuzz", bytes(r.getrandbits(8) | 0x80 for _ in range(8))], [b"Set-Cookie", b"a=b; Path=/"],
             [b"Cache-Control", b"no-cache"], [b"X-Empty", b""]]
    for h in r.sample(extra, r.randint(1, len(extra))):
        a.headers.insert(r.randint(0, len(a.headers)), h)


def _slow(a: Answer, r: random.Random) -> None:
    a.pieces = r.randint(2, 6)


def _trailing_frame(a: Answer, r: random.Random) -> None:
    a.body = b"\x81\x05hello" + (b"\x89\x00" if r.random() < 0.5 else b"")


def _decline_extension(a: Answer, r: random.Random) -> None:
    a.remove(b"Sec-WebSocket-Extensions")


def _no_subprotocol(a: Answer, r: random.Random) -> None:
    a.remove(b"Sec-WebSocket-Protocol")


def _duplicate_upgrade(a: Answer, r: random.Random) -> None:
    name = r.choice((b"Upgrade", b"Connection"))
    a.headers.append([name, a.value(name)])


OK_MUTATIONS: Dict[str, Callable[[Answer, random.Random], None]] = {
    "header names in random case": _random_case,
    "whitespace around values": _ows,
    "extra headers": _extra_headers,
    "headers shuffled": lambda a, r: r.shuffle(a.headers),
    "Connection: keep-alive, Upgrade": lambda a, r: a.set(b"Connection", b"keep-alive, Upgrade"),
    "Upgrade: WebSocket": lambda a, r: a.set(b"Upgrade", r.choice((b"WebSocket", b"WEBSOCKET"))),
    "other reason phrase": lambda a, r: setattr(a, "status", r.choice((
        b"HTTP/1.1 101", b"HTTP/1.1 101 ", b"HTTP/1.1 101 Web Socket Protocol Handshake",
        b"HTTP/1.1 101 \xe9t\xe9 \x80"))),
    "answer sent in pieces": _slow,
    "frames right after the answer": _trailing_frame,
    "extension declined": _decline_extension,
    "no subprotocol": _no_subprotocol,
    "Upgrade or Connection twice": _duplicate_upgrade,
    "TCP closed right after the answer": lambda a, r: setattr(a, "after", "close"),
}


def _accept(value: Callable[[Answer, random.Random], bytes]) -> Callable[[Answer, random.Random], None]:
    return lambda a, r: a.set(b"Sec-WebSocket-Accept", value(a, r))


FAIL_FAMILIES: Dict[str, Dict[str, Callable[[Answer, random.Random], None]]] = {
    "accept": {
        "accept of another key": _accept(lambda a, r: accept_key(base64.b64encode(bytes(16)))),
        "accept empty": _accept(lambda a, r: b""),
        "accept with a byte more": _accept(lambda a, r: a.value(b"Sec-WebSocket-Accept") + b"="),
        "accept in other case": _accept(lambda a, r: a.value(b"Sec-WebSocket-Accept").swapcase()),
        "accept missing": lambda a, r: a.remove(b"Sec-WebSocket-Accept"),
        "accept twice": lambda a, r: a.headers.extend([[b"Sec-WebSocket-Accept", a.value(
            b"Sec-WebSocket-Accept")]] * (2 - len(a.find(b"Sec-WebSocket-Accept")))),
    },
    "upgrade": {
        "Upgrade missing": lambda a, r: a.remove(b"Upgrade"),
        "Upgrade: h2c": lambda a, r: a.set(b"Upgrade", r.choice((
            b"h2c", b"", b"websocket2", b"web socket", b"h2c, websocket", b"websocket, TLS/1.2"))),
        "Connection missing": lambda a, r: a.remove(b"Connection"),
        "Connection: close":
            lambda a, r: a.set(b"Connection", r.choice((b"close", b"keep-alive", b"upgrades"))),
    },
    "status": {
        "status not 101": lambda a, r: setattr(a, "status", b"HTTP/1.1 %d X" % r.choice((
            100, 102, 199, 200, 204, 300, 304, 400, 403, 404, 426, 500, 503, 600, 999))),
    },
    "status_line": {
        "bad status line": lambda a, r: setattr(a, "status", r.choice((
            b"HTTP/1.0 101 Switching Protocols", b"HTTP/2 101", b"http/1.1 101 x", b"HTTP/1.1 1O1 x",
            b"HTTP/1.1 10", b"HTTP/1.1 1010 X", b"ICY 101 OK", b"", b"HTTP/1.1", b" HTTP/1.1 101 x",
            b"HTTP/1.1  101 x", b"HTTP/1.1 +01 x", b"HTTP/1.1 \xb9\xb2\xb3 x",
            b"HTTP/1.1 \xd9\xa1\xd9\xa0\xd9\xa1",
            b"HTTP/1.1 101\tx", b"\x00HTTP/1.1 101 x"))),
    },
    "header_syntax": {
        "bad header line": lambda a, r: a.headers.insert(r.randint(0, len(a.headers)), [r.choice((
            b"Upgrade websocket", b"Upgrade : websocket", b"X-\x01: y", b"X: a\x00b", b"X: \x7f", b":",
            b": value", b"X-Fuzz", b"\x80\x81: y", b"X Y: z", b"X:\x0bz")), None]),
    },
    "huge": {
        "header block over 64 KiB": lambda a, r: a.headers.append([b"X-Big", b"b" * (70 * 1024)]),
        "over 256 headers": lambda a, r: a.headers.extend([b"X-%d" % i, b"v"] for i in range(300)),
    },
}

EITHER_MUTATIONS: Dict[str, Callable[[Answer, random.Random], None]] = {
    "Content-Length on the 101": lambda a, r: a.set(b"Content-Length", r.choice((b"0", b"5", b"\xb2"))),
    "interim 100 Continue first":
        lambda a, r: setattr(a, "status", b"HTTP/1.1 100 Continue\r\n\r\n" + a.status),
    "obs-fold line": lambda a, r: a.headers.append([b" folded", None]),
    "reset after the answer": lambda a, r: setattr(a, "after", "rst"),
    "LF line ends": lambda a, r: setattr(a, "raw", a.serialize().replace(b"\r\n", b"\n")),
}

EXTENSION_ANSWERS: List[Tuple[bytes, str]] = [
    (b"permessage-deflate; server_max_window_bits=16", FAIL),
    (b"permessage-deflate; server_max_window_bits=08", FAIL),
    (b"permessage-deflate; server_max_window_bits", FAIL),
    (b"permessage-deflate; client_max_window_bits", FAIL),
    (b"permessage-deflate; unknown_param", FAIL),
    (b"permessage-deflate; server_no_context_takeover=1", FAIL),
    (b"permessage-deflate; server_no_context_takeover; server_no_context_takeover", FAIL),
    (b"permessage-deflate, permessage-deflate", FAIL),
    (b"x-webkit-deflate-frame", FAIL),
    (b'permessage-deflate; server_max_window_bits="1 0"', FAIL),
    (b"permessage-deflate;;", FAIL),
    (b'"permessage-deflate"', FAIL),
    (b"permessage-deflate; client_max_window_bits=16", FAIL),
    (b"permessage-deflate; =", FAIL),
    (b'permessage-deflate; server_max_window_bits="\\', FAIL),
    (b"permessage-deflate; server_max_window_bits=\xb9\xb2", FAIL),
    (b"permessage-deflate; server_max_window_bits=99999999999999999999999", FAIL),
    (b"permessage-deflate; client_max_window_bits=8", OK),
    (b'permessage-deflate; server_max_window_bits="12"', OK),
    (b"permessage-deflate; server_max_window_bits=8", OK),
    (b"permessage-deflate ; server_no_context_takeover", EITHER),
    (b"PERMESSAGE-DEFLATE", EITHER),
    (b",", EITHER),
    (b"permessage-deflate,", EITHER),
]

CONTENT_LENGTHS = [b"\xb2", b"-1", b"abc", b"99999999999999999999", b"5, 5", b"", b"0x10", b"\xb9\xb3",
                   b"1e3", b" 7 ", b"00000000000000000003", b"\xd9\xa1\xd9\xa2", b"3\xb2", b"+5",
                   b"4294967296", b"\xbc"]

REDIRECTS: List[Tuple[bytes, str]] = [
    (b"ws://[::1/x", FAIL),
    (b"/next", OK),
    (b"http://[::1", FAIL),
    (b"ws://127.0.0.1:{port}/abs", OK),
    (b"ws://[zz]/", FAIL),
    (b"http://127.0.0.1:{port}/http", OK),
    (b"ws://127.0.0.1:99999/", FAIL),
    (b"//127.0.0.1:{port}/scheme-relative", OK),
    (b"ws://127.0.0.1:abc/", FAIL),
    (b"next?q=1", OK),
    (b"ftp://127.0.0.1:{port}/", FAIL),
    (b"ws://user:pa%20ss@127.0.0.1:{port}/auth", OK),
    (b"ws://127.0.0.1:{port}/#frag", FAIL),
    (b"", EITHER),
    (b"wss://127.0.0.1:{port}/tls", FAIL),
    (b"ws://127.0.0.1:{port}/\xff\xfe", EITHER),
    (b"ws://127.0.0.1:1/", FAIL),
    (b"ws://127.0.0.1:{port}/loop", FAIL),
    (b"ws://127.0.0.1:-1/", FAIL),
    (b"ws://[::1]:1/", FAIL),
    (b"ws://127.0.0.1:{port}\\back", EITHER),
    (b"ws://127.0.0.1:0/", FAIL),
    (b"http://[::1]x/", FAIL),
    (b"ws://127.0.0.1:{port}/" + b"a" * 5000, EITHER),
    (b"ws://[v1.x]/", FAIL),
    (b"\x00", EITHER),
]

HS_KINDS = ("valid", "ok_variants", "accept", "upgrade", "status", "redirect", "status_line",
            "content_length", "header_syntax", "extensions", "huge", "truncate", "subprotocol",
            "close_now", "bytes", "mixed", "redirect", "content_length")


class AnswerServer:
    """A listening socket on 127.0.0.1 whose connections get scripted answers: the first
    one the mutated answer, later ones (redirects) a valid 101 or the same again."""

    def __init__(self, make_answer: Callable[[int, bytes, Dict[bytes, bytes]], Answer]) -> None:
        self.make_answer = make_answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.sent: List[bytes] = []
        self.errors: List[str] = []
        self.thread = threading.Thread(target=self._run, name="fuzz-answer-server", daemon=True)
        self.thread.start()

    def stop(self) -> bool:
        self.stopping.set()
        self.thread.join(SERVER_IO + 2)
        self.listener.close()
        return not self.thread.is_alive()

    def _run(self) -> None:
        index = 0
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with sock:
                try:
                    self._handle(sock, index)
                except Exception:  # noqa: BLE001 (a bug of this test: reported, not hidden)
                    self.errors.append(traceback.format_exc())
            index += 1

    def _handle(self, sock: socket.socket, index: int) -> None:
        sock.settimeout(SERVER_IO)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 1 << 20:
                data = sock.recv(65536)
                if not data:
                    return
                head += data
        except OSError:
            return
        request: Dict[bytes, bytes] = {}
        for line in head.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            request[name.strip().lower()] = value.strip()
        answer = self.make_answer(index, request.get(b"sec-websocket-key", b""), request)
        data = answer.serialize()
        self.sent.append(data)
        try:
            for piece in split(random.Random(len(data)), data, answer.pieces):
                sock.sendall(piece)
                if answer.pieces > 1:
                    time.sleep(0.002)
            if answer.after == "rst":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if answer.after == "close":
                return
            if answer.after == "shut":
                shut_wr(sock)
            self._drain(sock, answer.after == "serve")
        except OSError:
            return

    def _drain(self, sock: socket.socket, serve: bool) -> None:
        """Read until the client closes TCP; in "serve", echo its close frame and shut
        our side down (RFC 6455 §7.1.1: the server closes first)."""
        end = time.monotonic() + SERVER_IO
        buf = b""
        sock.settimeout(0.05)
        while time.monotonic() < end and not self.stopping.is_set():
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return
            buf += data
            while serve and len(buf) >= 2:
                size, pos = buf[1] & 0x7F, 2
                if size == 126:
                    size, pos = (int.from_bytes(buf[2:4], "big"), 4) if len(buf) >= 4 else (None, 0)
                elif size == 127:
                    size, pos = (int.from_bytes(buf[2:10], "big"), 10) if len(buf) >= 10 else (None, 0)
                if size is None or len(buf) < pos + 4 + size:
                    break
                opcode, buf = buf[0] & 0x0F, buf[pos + 4 + size:]
                if opcode == CLOSE:
                    sock.sendall(b"\x88\x02\x03\xe8")
                    shut_wr(sock)
                    serve = False


def run_hs_case(seed: int, index: int, stats: Counter) -> Optional[str]:
    rng = random.Random(f"answers:{seed}:{index}")
    kind = HS_KINDS[index % len(HS_KINDS)]
    # This kind's how-manieth case: lists of values are taken in turn, not at random, so
    # that a short run covers their first entries (the known defects among them).
    turn = index // len(HS_KINDS) * HS_KINDS.count(kind) + HS_KINDS[:index % len(HS_KINDS)].count(kind)
    holder: Dict[str, object] = {}

    def make_answer(number: int, key: bytes, request: Dict[bytes, bytes]) -> Answer:
        answer_rng = random.Random(f"answers:{seed}:{index}:{number}")
        answer = Answer(key, request, answer_rng)
        if number == 0 or holder["later"] == "same":
            for _, function, _ in holder["ops"]:  # type: ignore[attr-defined]
                function(answer, answer_rng)
        return answer

    server = AnswerServer(make_answer)
    options, ops, expected, later = hs_case(rng, kind, turn, server.port)
    holder["ops"], holder["later"] = ops, later
    description = "; ".join(name for name, _, _ in ops) or "valid answer"
    open_timeout = LONG_OPEN_TIMEOUT if expected == OK else SHORT_OPEN_TIMEOUT
    result: Dict[str, object] = {}

    def client() -> None:
        started = time.monotonic()
        try:
            ws = simplews.connect(f"ws://127.0.0.1:{server.port}/fuzz", open_timeout=open_timeout,
                                  close_timeout=0.5, ping_interval=None, proxy=None, **options)
        except BaseException as exc:  # noqa: BLE001 (every exception is classified below)
            result["error"] = exc
            result["connect"] = time.monotonic() - started
            return
        result["connect"] = time.monotonic() - started
        result["subprotocol"] = ws.subprotocol
        try:
            ws.close()
        except BaseException as exc:  # noqa: BLE001 (classified below)
            result["close_error"] = exc

    thread = threading.Thread(target=client, name="fuzz-connect")
    thread.start()
    thread.join(open_timeout + CLOSE_TIMEOUT + MARGIN + 2)
    hung = thread.is_alive()
    stopped = server.stop()
    if hung:
        thread.join(TIMEOUT)
    sent = b" | ".join(server.sent)
    prefix = (f"answers case {index} (SIMPLEWS_FUZZ_SEED={seed} SIMPLEWS_FUZZ_CASE={index}), kind {kind}, "
              f"{description}; connect({options}), expected {expected}:\n  ")
    tail = f"\n  answer: {sent[:700]!r}{'...' if len(sent) > 700 else ''}"
    if hung:
        return prefix + "connect() or close() did not return" + tail
    if server.errors:
        return prefix + "the raw server failed: " + server.errors[0] + tail
    if not stopped:
        return prefix + "the raw server did not stop (the client kept its connection)" + tail
    if result["connect"] > open_timeout + MARGIN:  # type: ignore[operator]
        return prefix + f"connect() took {result['connect']:.1f} s with open_timeout={open_timeout}" + tail
    error = result.get("error")
    if "close_error" in result:
        exc = result["close_error"]
        return prefix + f"close() raised {type(exc).__name__}: {exc}" + _where(exc) + tail  # type: ignore
    if error is None:
        if expected == FAIL:
            return prefix + "connect() accepted the answer" + tail
        stats["connected"] += 1
        return None
    if not isinstance(error, ALLOWED_ERRORS):
        return prefix + f"{type(error).__name__}: {error}" + _where(error) + tail  # type: ignore
    if expected == OK:
        return prefix + f"connect() refused a valid answer: {type(error).__name__}: {error}" + tail
    category = next(c for c in ALLOWED_ERRORS if isinstance(error, c)).__name__
    if isinstance(error, simplews.InvalidStatus):
        category = "InvalidStatus"
    stats[category] += 1
    return None


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return "".join(f"\n    {os.path.basename(f.filename)}:{f.lineno} {f.name}: {f.line}" for f in frames[-3:])


def test_fuzz_handshake_answers_against_connect(record_property):
    seed = fuzz_seed(DEFAULT_SEED)
    record_property("simplews_fuzz_seed", seed)
    print(f"\nanswers fuzz: SIMPLEWS_FUZZ_SEED={seed}")
    stats: Counter = Counter()
    failures: List[str] = []
    cases = 0
    started = time.monotonic()
    with bounded_resources():
        for index in case_indices(min_cases=len(HS_KINDS) * 2):
            cases += 1
            failure = run_hs_case(seed, index, stats)
            if failure:
                failures.append(failure)
                if len(failures) >= 3 * MAX_FAILURES:
                    break
    summary = ", ".join(f"{name}: {count}" for name, count in sorted(stats.items()))
    print(f"answers fuzz: {cases} cases in {time.monotonic() - started:.1f} s; {summary}")
    record_property("simplews_fuzz_outcomes", summary)
    assert not failures, f"seed {seed}: {len(failures)} failing case(s)\n\n" + "\n\n".join(failures)
    if not replaying() and cases >= 2 * len(HS_KINDS):
        for category in ("connected", "InvalidHandshake", "InvalidStatus"):
            assert stats[category], f"seed {seed}: no {category!r} outcome in {cases} cases ({summary})"


# ================================================== reductions of fuzz findings


@contextlib.contextmanager
def echo_server(**options):
    options.setdefault("close_timeout", CLOSE_TIMEOUT)
    server = simplews.serve(echo, "127.0.0.1", 0, ping_interval=None, **options)
    thread = threading.Thread(target=server.serve_forever, name="fuzz-serve-forever")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(TIMEOUT)


def test_final_deflate_block_then_an_empty_last_fragment():
    """Found by the frames fuzz (seed 1763415099, case 362): a compressed message whose
    deflate stream ends (BFINAL=1, RFC 7692 §7.2.3.4) in a fragment before its last,
    empty one. The inflater restarted after the final block and took the 00 00 ff ff
    tail as the start of a new stream, in the middle of a stored block: the next
    compressed message failed with 1007 "invalid stored block lengths" (or 1007 for
    invalid UTF-8, or 1009, depending on what that message was)."""
    final = zlib.compressobj(6, zlib.DEFLATED, -15)
    one = final.compress(b"one") + final.flush(zlib.Z_FINISH)
    fresh = zlib.compressobj(6, zlib.DEFLATED, -15)
    two = fresh.compress(b"two") + fresh.flush(zlib.Z_SYNC_FLUSH)
    rng = random.Random(0)
    frames = [F(TEXT, one, fin=False, rsv1=True), F(CONT, b""), F(TEXT, two[:-4], rsv1=True)]
    with echo_server() as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT) as sock:
        handshake(sock, server.port, "permessage-deflate", rng)
        sock.sendall(b"".join(frame.encode(rng) for frame in frames))
        reader = Reader(sock, deflate=True)
        deadline = time.monotonic() + TIMEOUT
        assert [reader.next(deadline), reader.next(deadline)] == [("text", "one"), ("text", "two")]
        sock.sendall(client_close(rng, 1000))
        assert reader.next(deadline) == ("close", 1000, "")
        assert reader.next(deadline) in (("eof",), ("reset",))
