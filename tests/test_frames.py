import itertools
import os
import random
import subprocess
import sys

import pytest

from simplews.exceptions import ProtocolError
from simplews import frames
from simplews.frames import (MASK_PIECE, CloseCode, Opcode, _take_message, _xor_mask, check_control_payload,
                             frame_header, is_valid_close_code, mask_in_pieces, parse_close, serialize_close)
from simplews.testing.recorder import Frame, serialize_frame

MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


# RFC 6455 §5.7 examples
def test_rfc_single_unmasked_text():
    assert serialize_frame(Frame(Opcode.TEXT, b"Hello")) == bytes([0x81, 0x05]) + b"Hello"


def test_rfc_single_masked_text():
    expected = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert serialize_frame(Frame(Opcode.TEXT, b"Hello"), mask=True, mask_key=MASK) == expected


def test_rfc_fragmented_unmasked_text():
    assert serialize_frame(Frame(Opcode.TEXT, b"Hel", fin=False)) == bytes([0x01, 0x03]) + b"Hel"
    assert serialize_frame(Frame(Opcode.CONT, b"lo")) == bytes([0x80, 0x02]) + b"lo"


def test_rfc_ping_and_masked_pong():
    assert serialize_frame(Frame(Opcode.PING, b"Hello")) == bytes([0x89, 0x05]) + b"Hello"
    expected = bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert serialize_frame(Frame(Opcode.PONG, b"Hello"), mask=True, mask_key=MASK) == expected


def test_rfc_16_and_64_bit_lengths():
    assert serialize_frame(Frame(Opcode.BINARY, bytes(256)))[:4] == bytes([0x82, 0x7E, 0x01, 0x00])
    big = serialize_frame(Frame(Opcode.BINARY, bytes(65536)))
    assert big[:10] == bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
    assert len(big) == 10 + 65536


@pytest.mark.parametrize("length,header_size", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_header_length_boundaries(length, header_size):
    assert len(frame_header(Opcode.BINARY, length)) == header_size
    assert len(frame_header(Opcode.BINARY, length, mask=MASK)) == header_size + 4


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536])
@pytest.mark.parametrize("masked", [False, True])
def test_frame_size_is_known_once_the_length_is_and_counts_header_and_payload(length, masked):
    frame = frame_header(Opcode.BINARY, length, mask=MASK if masked else None) + bytes(length)
    header = len(frame) - length
    length_bytes = 2 if length < 126 else 4 if length < 65536 else 10
    for cut in range(length_bytes):
        assert frames.frame_size(frame[:cut]) is None
    for cut in (length_bytes, header, len(frame), len(frame) + 5):
        assert frames.frame_size(bytearray(frame[:cut] + b"\x81" * 5)) == len(frame)


def test_phase_mask_is_the_mask_from_byte_phase_on():
    payload = bytes(range(256))
    masked = frames._xor_mask(payload, MASK)
    for phase in range(9):
        assert frames._xor_mask(payload[phase:], frames.phase_mask(MASK, phase)) == masked[phase:]


def test_rsv_bits_serialized():
    assert serialize_frame(Frame(Opcode.TEXT, b"", rsv1=True, rsv2=True, rsv3=True))[0] == 0xF1


def _mask_implementations(c_name="apply_mask", python=_xor_mask):
    """The pure-Python function, and the C accelerator's when it was built."""
    try:
        from simplews import _speedups as speedups
    except ImportError:
        speedups = None
    c_function = getattr(speedups, c_name, None)
    return [pytest.param(python, id="python"), pytest.param(c_function, id="c", marks=pytest.mark.skipif(
        c_function is None, reason="simplews._speedups was not built (no compiler)"))]


@pytest.mark.parametrize("mask_frame", _mask_implementations("mask_frame", frames._mask_frame))
def test_mask_frame_takes_a_key_from_the_pool_or_refills_it(mask_frame):
    """A client's frame (RFC 6455 §5.3): the header, then a key popped from the pool (a
    new one from refill() when it is empty), then the payload masked with it."""
    pool, refills = [b"k111", b"k222"], []

    def refill():
        refills.append(1)
        return b"k333"

    pieces = (b"Hello", bytearray(b"Hello"), memoryview(b"xHello")[1:])
    for data, key in zip(pieces, [b"k222", b"k111", b"k333"]):
        assert mask_frame(b"\x81\x85", data, pool, refill) == b"\x81\x85" + key + _xor_mask(b"Hello", key)
    assert pool == [] and refills == [1]
    payload = random.Random(5).randbytes(70000)  # past the size masked without the GIL
    frame = mask_frame(b"HDR", payload, [MASK], refill)
    assert frame == b"HDR" + MASK + _xor_mask(payload, MASK) and type(frame) is bytes


FORK_CHECK = """
import os
from simplews import frames
frames.refill_masks()
pid = os.fork()
if pid == 0:  # the child: exit 0 only with an empty pool
    os._exit(0 if not frames.MASKS else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), len(frames.MASKS))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")
def test_a_forked_child_does_not_reuse_its_parents_masking_keys():
    # In a fresh interpreter: fork() in this one, which has threads, is unsafe.
    result = subprocess.run([sys.executable, "-c", FORK_CHECK], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["0", "63"], result.stderr  # the parent keeps its 63 keys


def test_mask_frame_in_c_checks_its_arguments():
    speedups = pytest.importorskip("simplews._speedups")
    with pytest.raises(ValueError, match="4 bytes"):
        speedups.mask_frame(b"H", b"data", [], lambda: b"abc")
    with pytest.raises(ZeroDivisionError):
        speedups.mask_frame(b"H", b"data", [], lambda: 1 / 0)
    with pytest.raises(TypeError):
        speedups.mask_frame(bytearray(b"H"), b"data", [MASK], None)
    with pytest.raises(TypeError):
        speedups.mask_frame(b"H", 42, [MASK], None)


@pytest.mark.parametrize("mask_fn", _mask_implementations())
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 127, 4096, 65537, 2 ** 20 + 3])
def test_mask_is_an_involution_and_matches_bytewise_xor(mask_fn, size):
    data = bytes((i * 7) & 0xFF for i in range(size))
    masked = mask_fn(data, MASK)
    key = MASK * (size // 4 + 1)
    assert masked == bytes(b ^ k for b, k in zip(data, key))
    assert mask_fn(masked, MASK) == data


@pytest.mark.parametrize("mask_fn", _mask_implementations())
def test_mask_accepts_any_buffer(mask_fn):
    expected = bytes(b ^ MASK[i % 4] for i, b in enumerate(b"Hello, world"))
    for data in (b"Hello, world", bytearray(b"Hello, world"), memoryview(b"xHello, world")[1:]):
        assert mask_fn(data, MASK) == expected
        assert type(mask_fn(data, MASK)) is bytes


@pytest.mark.parametrize("mask_fn", _mask_implementations())
@pytest.mark.parametrize("size", [0, 1, MASK_PIECE - 1, MASK_PIECE, MASK_PIECE + 3, 3 * MASK_PIECE + 2])
def test_masking_in_pieces_is_masking_whole(monkeypatch, mask_fn, size):
    monkeypatch.setattr(frames, "apply_mask", mask_fn)
    data = random.Random(size).randbytes(size)
    for payload in (data, bytearray(data), memoryview(b"x" + data)[1:]):
        pieces = list(mask_in_pieces(b"HEADER", payload, MASK))
        assert pieces[0] == b"HEADER" and all(len(piece) <= MASK_PIECE for piece in pieces[1:])
        assert len(pieces) == 1 + -(-size // MASK_PIECE)
        assert b"".join(pieces[1:]) == _xor_mask(data, MASK)


def test_masking_in_pieces_masks_as_pieces_are_taken(monkeypatch):
    masked = []
    monkeypatch.setattr(frames, "apply_mask", lambda piece, mask: masked.append(len(piece)) or bytes(piece))
    pieces = mask_in_pieces(b"H", bytes(3 * MASK_PIECE), MASK)
    assert next(pieces) == b"H" and masked == []
    next(pieces)
    assert masked == [MASK_PIECE]  # one piece masked, sent, then the next


def _in_place_implementations():
    """(mask_in_place, PayloadBuffer): pure Python, and the C accelerator when built."""
    pairs = [pytest.param((frames._mask_in_place, frames._PayloadBuffer), id="python")]
    try:
        from simplews import _speedups as speedups
    except ImportError:
        speedups = None
    c_pair = (getattr(speedups, "mask_in_place", None), getattr(speedups, "PayloadBuffer", None))
    pairs.append(pytest.param(c_pair, id="c", marks=pytest.mark.skipif(speedups is None, reason="not built")))
    return pairs


@pytest.mark.parametrize("implementation", _in_place_implementations())
@pytest.mark.parametrize("size", [0, 1, 5, 4096, 65537, 2 ** 20 + 3])
def test_a_payload_buffer_unmasked_in_place_piece_by_piece_is_the_masked_payload(implementation, size):
    mask_in_place, payload_buffer = implementation
    data = random.Random(size).randbytes(size)
    masked = _xor_mask(data, MASK)
    buffer = payload_buffer(size)
    with memoryview(buffer) as view:
        position = 0
        for step in itertools.cycle([1, 7, 4096, 65535]):  # pieces out of the mask's step
            if position >= size:
                break
            piece = view[position:position + step]
            piece[:] = masked[position:position + len(piece)]
            mask_in_place(piece, MASK, position)
            piece.release()
            position += step
    taken = buffer.take()
    assert type(taken) is bytes and taken == data


@pytest.mark.parametrize("implementation", _in_place_implementations())
@pytest.mark.parametrize("phase", [sys.maxsize, sys.maxsize - 2, -1, -(sys.maxsize + 1)])
def test_mask_in_place_takes_any_phase_by_its_low_two_bits(implementation, phase):
    """The C version added the phase to each of 0-3 as a signed integer: undefined
    behaviour near sys.maxsize (UBSan: signed integer overflow)."""
    mask_in_place = implementation[0]
    data = bytearray(b"abcdefgh")
    mask_in_place(data, MASK, phase)
    assert bytes(data) == _xor_mask(b"abcdefgh", (MASK * 2)[phase & 3:][:4])


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS in /proc")
@pytest.mark.parametrize("implementation", _in_place_implementations())
def test_a_payload_buffer_costs_memory_only_as_it_is_written(implementation):
    """A frame header claiming 64 MiB (15 bytes, max_size=None) made the pure-Python buffer
    zero-fill 64 MiB at once: 256 MiB of RSS for four such headers."""
    payload_buffer = implementation[1]

    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    buffers = [payload_buffer(64 << 20) for _ in range(4)]
    for buffer in buffers:
        with memoryview(buffer) as view:
            view[:1] = b"x"
    assert rss() - before < 16 << 20
    for buffer in buffers:
        with memoryview(buffer) as view:
            assert view[:2] == b"x\x00"


def test_the_c_payload_buffer_is_handed_out_once_and_only_when_no_view_is_left():
    speedups = pytest.importorskip("simplews._speedups")
    buffer = speedups.PayloadBuffer(8)
    view = memoryview(buffer)
    piece = view[2:4]
    view[:] = b"abcdefgh"
    view.release()
    with pytest.raises(BufferError):  # a view that could still write into the bytes
        buffer.take()
    piece.release()
    taken = buffer.take()
    assert taken == b"abcdefgh"
    with pytest.raises(BufferError):
        buffer.take()
    with pytest.raises(BufferError):
        memoryview(buffer)
    with pytest.raises(ValueError):
        speedups.PayloadBuffer(-1)
    with pytest.raises(BufferError):  # a read-only buffer
        speedups.mask_in_place(b"data", MASK, 0)
    with pytest.raises(ValueError):
        speedups.mask_in_place(bytearray(4), b"abc", 0)


def test_c_mask_rejects_a_bad_key():
    speedups = pytest.importorskip("simplews._speedups")
    with pytest.raises(ValueError):
        speedups.apply_mask(b"data", b"abc")
    with pytest.raises(TypeError):
        speedups.apply_mask("text", MASK)


def test_accelerator_is_used_unless_disabled():
    """SIMPLEWS_NO_EXTENSIONS=1 selects the pure-Python masking and message parser;
    otherwise the C ones are used when built (CI builds them: a compiler is always there)."""
    code = ("from simplews import frames as f; "
            "print(f.apply_mask is f._xor_mask, f.take_message is f._take_message, "
            "f.mask_in_place is f._mask_in_place, f.PayloadBuffer is f._PayloadBuffer)")
    env = dict(os.environ, SIMPLEWS_NO_EXTENSIONS="1")
    pure = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert pure.stdout.strip() == "True True True True"
    env.pop("SIMPLEWS_NO_EXTENSIONS")
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=60)
    try:
        import simplews._speedups  # noqa: F401
    except ImportError:
        assert default.stdout.strip() == "True True True True"
    else:
        assert default.stdout.strip() == "False False False False"


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes(code):
    assert is_valid_close_code(code)
    assert parse_close(serialize_close(code, "bye")) == (code, "bye")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_invalid_close_codes_fail_with_1002(code):
    assert not is_valid_close_code(code)
    with pytest.raises(ProtocolError) as info:
        parse_close(code.to_bytes(2, "big"))
    assert info.value.close_code == 1002


def test_close_payload_rules():
    assert parse_close(b"") == (CloseCode.NO_STATUS_RCVD, "")
    with pytest.raises(ProtocolError) as info:
        parse_close(b"\x03")
    assert info.value.close_code == 1002
    with pytest.raises(ProtocolError) as info:
        parse_close(b"\x03\xe8\xff\xfe")
    assert info.value.close_code == 1007
    assert serialize_close(CloseCode.NO_STATUS_RCVD) == b""
    with pytest.raises(ValueError):
        serialize_close(1000, "x" * 124)


def test_every_close_code_has_a_description():
    assert CloseCode.GOING_AWAY.description == "going away"
    assert all(code.description for code in CloseCode)


@pytest.mark.parametrize("code", [0, 999, 1004, 1006, 1015, 2999, 5000, 70000])
def test_serialize_close_refuses_codes_that_may_not_be_sent(code):
    with pytest.raises(ValueError):
        serialize_close(code)


def test_control_payloads_are_at_most_125_bytes():
    check_control_payload(b"x" * 125)
    with pytest.raises(ValueError):
        check_control_payload(b"x" * 126)


def _take_message_implementations():
    """The pure-Python small-message parser, and the C one when it was built."""
    try:
        from simplews._speedups import take_message as c_take_message
    except ImportError:
        c_take_message = None
    return [pytest.param(_take_message, id="python"),
            pytest.param(c_take_message, id="c", marks=pytest.mark.skipif(
                c_take_message is None, reason="simplews._speedups was not built (no compiler)"))]


def _wire(first, payload, masked, length_field=None):
    """A frame with any first byte, optionally a forced 7-bit length field (126/127)."""
    size = len(payload)
    if length_field == 127 or size >= 0x10000:
        header = bytes([first, 127 | (0x80 if masked else 0)]) + size.to_bytes(8, "big")
    elif length_field == 126 or size >= 126:
        header = bytes([first, 126 | (0x80 if masked else 0)]) + size.to_bytes(2, "big")
    else:
        header = bytes([first, size | (0x80 if masked else 0)])
    if not masked:
        return header + payload
    return header + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("take", _take_message_implementations())
@pytest.mark.parametrize("client", [False, True])
def test_take_message_takes_a_whole_message_and_nothing_else(take, client):
    masked = not client  # RFC 6455 §5.1: a server receives masked frames
    for payload, length_field in [(b"", None), (b"hello", None), (bytes(200), None),
                                  ("é€😀".encode() * 100, 127), (bytes(70000), None)]:
        for first in (0x81, 0x82):
            frame = _wire(first, payload, masked, length_field)
            buf = bytearray(frame + b"\x89\x00rest")
            data = take(buf, client, None)
            assert data == (payload.decode() if first == 0x81 else payload)
            assert type(data) is (str if first == 0x81 else bytes)
            assert buf == b"\x89\x00rest"
            for cut in range(len(frame)):  # incomplete: left alone
                buf = bytearray(frame[:cut])
                assert take(buf, client, None) is None and buf == frame[:cut]
            assert take(bytearray(frame), client, len(payload)) is not None
            if payload:  # over max_size: the parser raises 1009
                assert take(bytearray(frame), client, len(payload) - 1) is None
    refused = [_wire(0x82, b"x", not masked),  # masked the wrong way: 1002
               _wire(0x01, b"x", masked), _wire(0x02, b"x", masked),  # fragments
               _wire(0xC1, b"x", masked), _wire(0x91, b"x", masked),  # RSV bits
               _wire(0x80, b"x", masked), _wire(0x89, b"x", masked),  # continuation, ping
               _wire(0x81, b"\xed\xa0\x80", masked), _wire(0x81, b"\xff", masked),  # invalid UTF-8
               bytes([0x82, 0xFF if masked else 0x7F]) + (1 << 63).to_bytes(8, "big") + bytes(20)]
    for frame in refused:
        buf = bytearray(frame)
        assert take(buf, client, None) is None and buf == frame


@pytest.mark.parametrize("seed", range(4))
def test_c_take_message_agrees_with_the_python_one(seed):
    """Seeded random buffers (valid, truncated, corrupted frames, after bytes already
    taken from the front): the C parser returns and leaves what the Python one does."""
    speedups = pytest.importorskip("simplews._speedups")
    rng = random.Random(seed)
    firsts = [0x81, 0x82, 0x01, 0x80, 0xC1, 0x89, 0xA2]
    for _ in range(3000):
        client = rng.random() < 0.5
        payload = (rng.choice(["abc€", "😀", "x"]) * rng.randrange(60)).encode()
        if rng.random() < 0.3:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
        wire = bytearray(_wire(rng.choice(firsts), payload, rng.random() < 0.8 - 0.6 * client,
                               rng.choice([None, None, 126, 127])))
        for _ in range(rng.randrange(3)):
            wire[rng.randrange(len(wire))] = rng.randrange(256)
        wire = wire[:rng.randrange(len(wire) + 1)] if rng.random() < 0.3 else wire
        prefix = bytes(rng.randrange(4))
        max_size = rng.choice([None, len(payload), max(0, len(payload) - 1), 10 ** 6, -1, 2 ** 70, -2 ** 70])
        results = []
        for take in (_take_message, speedups.take_message):
            buf = bytearray(prefix + wire)
            del buf[:len(prefix)]  # the bytearray's start moved, as after a parsed frame
            data = take(buf, client, max_size)
            results.append((type(data), data, bytes(buf)))
        assert results[0] == results[1], (client, bytes(wire), max_size)


def test_c_take_message_rejects_bad_arguments():
    speedups = pytest.importorskip("simplews._speedups")
    with pytest.raises(TypeError):
        speedups.take_message(b"\x82\x00", True, None)  # not a bytearray
    with pytest.raises(TypeError):
        speedups.take_message(bytearray(b"\x82\x00"), True)
    with pytest.raises(TypeError):
        speedups.take_message(bytearray(b"\x82\x00"), True, "10")
