"""simplews.testing.recorder: frames cut out of a byte stream as they were on the wire."""
from __future__ import annotations

from simplews.frames import Opcode
from simplews.testing.recorder import Frame, serialize_frame
from simplews.testing.recorder import FrameSplitter, RecordedFrame


def test_frames_come_out_whole_however_the_bytes_are_cut():
    wire = (serialize_frame(Frame(Opcode.TEXT, b"hello", fin=False), mask=True)
            + serialize_frame(Frame(Opcode.CONT, b"x" * 300, rsv1=True))
            + serialize_frame(Frame(Opcode.BINARY, b"y" * 70000), mask=True, mask_key=b"abcd"))
    splitter = FrameSplitter()
    frames = []
    for index in range(len(wire)):
        frames += splitter.feed(wire[index:index + 1], float(index))
    assert splitter.pending == 0
    assert [(f.opcode, f.fin, f.rsv1, f.payload, f.masked) for f in frames] == [
        (Opcode.TEXT, False, False, b"hello", True),
        (Opcode.CONT, True, True, b"x" * 300, False),
        (Opcode.BINARY, True, False, b"y" * 70000, True),
    ]
    assert frames[2].time == len(wire) - 1  # the time of the read that completed it


def test_anything_is_recorded_even_what_rfc_6455_forbids():
    wire = serialize_frame(Frame(0x3, b"\xff\xfe", rsv2=True, rsv3=True)) + b"\x89\x7e\x00"
    splitter = FrameSplitter()
    (frame,) = splitter.feed(wire, 1.0)
    assert frame == RecordedFrame(3, True, False, b"\xff\xfe", False, 1.0, True, True)
    assert frame.text == "\ufffd\ufffd"
    assert splitter.pending == 3  # a ping with a 16-bit length: waits for the rest
