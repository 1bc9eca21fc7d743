import os
import subprocess
import sys

import pytest

from simplews.exceptions import ProtocolError
from simplews.frames import (CloseCode, Opcode, _xor_mask, check_control_payload, frame_header,
                             is_valid_close_code, parse_close, serialize_close)
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


def test_rsv_bits_serialized():
    assert serialize_frame(Frame(Opcode.TEXT, b"", rsv1=True, rsv2=True, rsv3=True))[0] == 0xF1


def _mask_implementations():
    """The pure-Python masking, and the C accelerator when it was built."""
    implementations = [pytest.param(_xor_mask, id="python")]
    try:
        from simplews._speedups import apply_mask as c_apply_mask
    except ImportError:
        c_apply_mask = None
    implementations.append(pytest.param(c_apply_mask, id="c", marks=pytest.mark.skipif(
        c_apply_mask is None, reason="simplews._speedups was not built (no compiler)")))
    return implementations


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


def test_c_mask_rejects_a_bad_key():
    speedups = pytest.importorskip("simplews._speedups")
    with pytest.raises(ValueError):
        speedups.apply_mask(b"data", b"abc")
    with pytest.raises(TypeError):
        speedups.apply_mask("text", MASK)


def test_accelerator_is_used_unless_disabled():
    """SIMPLEWS_NO_EXTENSIONS=1 selects the pure-Python masking; otherwise the C one
    is used when it was built (CI builds it: a compiler is always present there)."""
    code = "import simplews.frames as f; print(f.apply_mask is f._xor_mask)"
    env = dict(os.environ, SIMPLEWS_NO_EXTENSIONS="1")
    pure = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert pure.stdout.strip() == "True"
    env.pop("SIMPLEWS_NO_EXTENSIONS")
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=60)
    try:
        import simplews._speedups  # noqa: F401
    except ImportError:
        assert default.stdout.strip() == "True"
    else:
        assert default.stdout.strip() == "False"


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
