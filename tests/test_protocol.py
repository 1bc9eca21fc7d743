import array
import ast
import pathlib
import random

import tracemalloc
import zlib

import pytest

from simplews.exceptions import ConnectionClosedError, ConnectionClosedOK, PayloadTooBig, ProtocolError
from simplews.extensions import DeflateConfig
from simplews import frames
from simplews.frames import MASK_PIECE, Opcode, apply_mask, serialize_close
from simplews.testing.recorder import Frame, FrameSplitter, serialize_frame
from simplews.protocol import Close, Fragment, Message, Ping, Pong, Protocol, Side, State

from pair import feed, frames_of, make_pair, replies

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG


def client_frame(opcode, payload=b"", fin=True, rsv1=False, rsv2=False, rsv3=False):
    """A frame as a client sends it (masked), for a server Protocol."""
    return serialize_frame(Frame(opcode, payload, fin, rsv1, rsv2, rsv3), mask=True)


def server():
    return Protocol(Side.SERVER)


def fails_with(protocol, data, code):
    with pytest.raises(ProtocolError) as info:
        feed(protocol, data)
    assert info.value.close_code == code
    # The failing close frame is queued (RFC 6455 §7.1.7) and nothing more is parsed.
    reply = replies(protocol)
    payload = apply_mask(reply[6:], reply[2:6]) if reply[1] & 0x80 else reply[2:]
    assert reply[0] == 0x88 and int.from_bytes(payload[:2], "big") == code
    assert protocol.next_event() is None
    assert protocol.state is State.CLOSING
    return info.value


def test_core_modules_import_no_io():
    """The sans-I/O core imports none of socket, ssl, threading, select, time."""
    forbidden = {"socket", "ssl", "threading", "select", "selectors", "time"}
    package = pathlib.Path(__file__).resolve().parent.parent / "simplews"
    for name in ["exceptions", "frames", "http11", "extensions", "protocol", "handshake", "uri"]:
        tree = ast.parse((package / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not imported & forbidden, f"{name}.py imports {imported & forbidden}"


def test_text_and_binary_messages():
    p = server()
    assert feed(p, client_frame(TEXT, "héllo".encode())) == [Message("héllo")]
    assert feed(p, client_frame(BINARY, b"\x00\xff")) == [Message(b"\x00\xff")]
    assert feed(p, client_frame(BINARY, b"")) == [Message(b"")]


@pytest.mark.parametrize("config", [None, DeflateConfig()], ids=["plain", "deflate"])
@pytest.mark.parametrize("size", [4, 40, 40000])  # the small frame path, and the large one
def test_a_memoryview_of_wide_items_is_framed_by_its_bytes(config, size):
    """RFC 6455 §5.2: the payload length counts bytes; len() of a memoryview counts items
    (a 4-byte header for 16 bytes split the stream into garbage frames)."""
    client, server = make_pair(config)
    items = array.array("I", range(size))
    view = memoryview(items)
    wire = frames_of(client, BINARY, view) + frames_of(client, BINARY, view[:1], fin=False) \
        + frames_of(client, Opcode.CONT, memoryview(b"ab").cast("B", (1, 2)))
    assert feed(server, wire) == [Message(items.tobytes()), Message(items[:1].tobytes() + b"ab")]
    with pytest.raises(TypeError):  # not contiguous: no frame at all
        client.send_data(BINARY, view[::2])


@pytest.mark.parametrize("config", [None, DeflateConfig()], ids=["plain", "deflate"])
@pytest.mark.parametrize("size", [4, 40000])
def test_a_memoryview_that_is_not_contiguous_is_refused_on_both_sides(config, size):
    """Of bytes ("B" items), it went out or not depending on the side, the size and the
    C extension: TypeError (a server's small frame), BufferError (a client's, in C),
    sent (in Python, or a large frame)."""
    for sender in make_pair(config):
        with pytest.raises(TypeError):
            sender.send_data(BINARY, memoryview(bytes(2 * size))[::2])


def test_rfc_examples_parsed_by_client():
    client = Protocol(Side.CLIENT)
    assert feed(client, bytes([0x81, 0x05]) + b"Hello") == [Message("Hello")]
    assert feed(client, bytes([0x01, 0x03]) + b"Hel" + bytes([0x80, 0x02]) + b"lo") == [Message("Hello")]
    assert feed(client, bytes([0x82, 0x7E, 0x01, 0x00]) + bytes(256)) == [Message(bytes(256))]
    assert feed(client, bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]) + bytes(65536)) == [Message(bytes(65536))]


def test_rfc_masked_example_parsed_by_server():
    data = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert feed(server(), data) == [Message("Hello")]


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_fail_1002(opcode):
    fails_with(server(), client_frame(opcode, b"x"), 1002)


@pytest.mark.parametrize("bits", [dict(rsv1=True), dict(rsv2=True), dict(rsv3=True)])
def test_rsv_bits_not_negotiated_fail_1002(bits):
    fails_with(server(), client_frame(TEXT, b"x", **bits), 1002)


def test_fragmented_control_frame_fails_1002():
    fails_with(server(), client_frame(PING, b"x", fin=False), 1002)


def test_control_frame_over_125_bytes_fails_1002():
    fails_with(server(), client_frame(PING, bytes(126)), 1002)


def test_unmasked_client_frame_fails_1002():
    fails_with(server(), serialize_frame(Frame(TEXT, b"x")), 1002)


def test_masked_server_frame_fails_1002():
    fails_with(Protocol(Side.CLIENT), serialize_frame(Frame(TEXT, b"x"), mask=True), 1002)


def test_64_bit_length_with_top_bit_fails_1002():
    fails_with(Protocol(Side.CLIENT), bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]), 1002)


def test_continuation_without_start_fails_1002():
    fails_with(server(), client_frame(CONT, b"x"), 1002)


def test_new_data_frame_inside_fragmented_message_fails_1002():
    data = client_frame(TEXT, b"a", fin=False) + client_frame(TEXT, b"b")
    fails_with(server(), data, 1002)


def test_control_frames_between_fragments_are_handled_at_once():
    p = server()
    events = feed(p, client_frame(TEXT, b"Hel", fin=False) + client_frame(PING, b"p"))
    assert events == [Ping(b"p")]
    assert replies(p) == bytes([0x8A, 0x01]) + b"p"  # the pong, before the message ends
    assert feed(p, client_frame(CONT, b"lo")) == [Message("Hello")]


def test_invalid_utf8_fails_1007():
    fails_with(server(), client_frame(TEXT, b"\xff"), 1007)


def test_invalid_utf8_fails_fast_in_the_middle_of_a_frame():
    """Autobahn 6.4.3/6.4.4: the first byte that can no longer be valid fails at once,
    though the frame is not complete."""
    payload = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited"
    frame = client_frame(TEXT, payload)
    cut = 6 + len("κόσμε".encode()) + 2  # 6 bytes of header, then up to \x90
    p = server()
    assert feed(p, frame[:cut - 1]) == []  # up to \xf4: still a valid prefix
    with pytest.raises(ProtocolError) as info:
        feed(p, frame[cut - 1:cut])  # \x90 after \xf4 is past U+10FFFF
    assert info.value.close_code == 1007


def test_a_surrogate_fails_at_its_second_byte():
    # ED A0-BF starts a UTF-16 surrogate (U+D800-DFFF), invalid in UTF-8; CPython's
    # incremental decoder would wait for a third byte (found by tests/test_fuzz.py).
    p = server()
    frame = client_frame(TEXT, b"ok\xed\xa0\x80", fin=False)
    assert feed(p, frame[:6 + 3]) == []  # "ok" and \xed: still a valid prefix
    with pytest.raises(ProtocolError) as info:
        feed(p, frame[6 + 3:6 + 4])
    assert info.value.close_code == 1007


def test_invalid_utf8_fails_fast_across_fragments():
    p = server()
    assert feed(p, client_frame(TEXT, "κόσμε".encode(), fin=False)) == []
    with pytest.raises(ProtocolError) as info:
        feed(p, client_frame(CONT, b"\xed\xa0\x80", fin=False))
    assert info.value.close_code == 1007


def test_utf8_split_across_fragments_is_valid():
    p = server()
    data = "€".encode()
    events = feed(p, client_frame(TEXT, data[:1], fin=False) + client_frame(CONT, data[1:2], fin=False)
                  + client_frame(CONT, data[2:]))
    assert events == [Message("€")]


def test_truncated_utf8_at_message_end_fails_1007():
    fails_with(server(), client_frame(TEXT, "€".encode()[:2]), 1007)


def test_close_echoed_once_and_states():
    p = server()
    assert p.state is State.OPEN
    assert feed(p, client_frame(CLOSE, serialize_close(1000, "bye"))) == [Close(1000, "bye")]
    assert p.state is State.CLOSING
    echo = replies(p)
    assert echo == bytes([0x88, 0x02, 0x03, 0xE8])
    assert p.state is State.CLOSED
    assert replies(p) == b""
    assert p.send_close(1000) == b""  # already sent
    assert feed(p, client_frame(TEXT, b"ignored")) == []


def test_close_without_code_is_echoed_empty():
    p = server()
    assert feed(p, client_frame(CLOSE, b"")) == [Close(1005, "")]
    assert replies(p) == bytes([0x88, 0x00])


def test_close_started_by_us():
    p = server()
    assert p.send_close(1001, "going") == bytes([0x88, 0x07, 0x03, 0xE9]) + b"going"
    assert p.state is State.CLOSING
    assert feed(p, client_frame(CLOSE, serialize_close(1001))) == [Close(1001, "")]
    assert replies(p) == b""  # no second close
    assert p.state is State.CLOSED


@pytest.mark.parametrize("payload,code", [
    (b"\x03", 1002), (b"\x03\xed", 1002), (b"\x00\x00", 1002), (b"\x03\xe8\xc3", 1007),
    (b"\x13\x88", 1002),
])
def test_invalid_close_payloads(payload, code):
    fails_with(server(), client_frame(CLOSE, payload), code)


def test_ping_answered_with_same_payload():
    p = server()
    assert feed(p, client_frame(PING, b"abc")) == [Ping(b"abc")]
    assert replies(p) == bytes([0x8A, 0x03]) + b"abc"


def test_pongs_matched_to_outstanding_pings():
    client, srv = make_pair()
    feed(srv, client.send_ping(b"1"))
    assert feed(client, replies(srv)) == [Pong(b"1", (b"1",))]
    for payload in (b"2", b"3"):
        feed(srv, client.send_ping(payload))
    # a pong for b"3" acknowledges b"2" too; an unsolicited pong acknowledges nothing
    assert feed(client, srv.send_pong(b"3")) == [Pong(b"3", (b"2", b"3"))]
    assert feed(client, srv.send_pong(b"zz")) == [Pong(b"zz", ())]


@pytest.mark.parametrize("compression", [None, DeflateConfig()])
def test_frame_buffered_says_whether_a_whole_frame_waits_in_the_buffer(compression):
    # What a reader asks before it lets go: is there a frame (a ping, say) that nobody
    # would parse if the application stopped calling recv()?
    client, srv = make_pair(compression)
    wire = b"".join([*client.send_data(TEXT, b"one"), *client.send_data(BINARY, bytes(300)),
                     client.send_ping(b"p")])
    assert not srv.frame_buffered
    srv.receive_data(wire[:-1])  # all but the ping's last byte
    assert srv.frame_buffered
    assert srv.next_event() == Message("one")
    assert srv.frame_buffered
    assert srv.next_event() == Message(bytes(300))
    assert not srv.frame_buffered  # most of a ping
    srv.receive_data(wire[-1:])
    assert srv.frame_buffered
    assert srv.next_event() == Ping(b"p")
    assert not srv.frame_buffered and srv.next_event() is None
    payload = random.Random(1).randbytes(70000)  # (incompressible)
    big = b"".join(client.send_data(BINARY, payload))  # its header is parsed first
    srv.receive_data(big[:1000])
    assert srv.next_event() is None and not srv.frame_buffered
    srv.receive_data(big[1000:-1])
    assert not srv.frame_buffered
    srv.receive_data(big[-1:] + client_frame(TEXT, b"\xff"))
    assert srv.frame_buffered
    assert srv.next_event() == Message(payload)
    assert srv.frame_buffered  # invalid UTF-8, but a whole frame
    with pytest.raises(ProtocolError):
        srv.next_event()
    srv.receive_data(client.send_ping(b"q"))
    assert not srv.frame_buffered  # failed: input is discarded (RFC 6455 §7.1.7)


def test_max_size_checked_before_the_payload_arrives():
    p = Protocol(Side.SERVER, max_size=10)
    header = client_frame(BINARY, bytes(11))[:6]
    with pytest.raises(PayloadTooBig) as info:
        feed(p, header)
    assert info.value.close_code == 1009


def test_max_size_across_fragments():
    p = Protocol(Side.SERVER, max_size=40)
    feed(p, client_frame(BINARY, bytes(20), fin=False))
    with pytest.raises(PayloadTooBig):
        feed(p, client_frame(CONT, bytes(21)))


def test_pings_queued_behind_a_busy_writer_get_one_pong():
    # §5.5.3: a pong for the most recent ping only; the reply queue stays bounded.
    client, srv = make_pair()
    for i in range(1000):
        feed(srv, client.send_ping(b"%d" % i))
    assert feed(client, replies(srv)) == [Pong(b"999", tuple(b"%d" % i for i in range(1000)))]


@pytest.mark.parametrize("size", [0, 1, 15])
def test_tiny_fragments_count_against_max_size(size):
    # Each fragment costs at least MIN_FRAGMENT_COST bytes: a message that never grows
    # (empty continuation frames) cannot stay open forever.
    p = Protocol(Side.SERVER, max_size=1024)
    data = client_frame(TEXT, b"a" * size, fin=False)
    data += b"".join(client_frame(CONT, b"a" * size, fin=False) for _ in range(1024 // 16))
    with pytest.raises(PayloadTooBig) as info:
        feed(p, data)
    assert info.value.close_code == 1009


def test_compressed_fragments_that_inflate_to_nothing_count_against_max_size():
    """RFC 7692: four empty stored deflate blocks (20 bytes on the wire) inflate to
    nothing; such fragments counted nothing, and one message took 100,000 of them."""
    _, p = make_pair(DeflateConfig(), max_size=1024)
    empty = b"\x00\x00\x00\xff\xff" * 4
    data = client_frame(TEXT, empty, fin=False, rsv1=True)
    data += b"".join(client_frame(CONT, empty, fin=False) for _ in range(1024 // 16))
    with pytest.raises(PayloadTooBig) as info:
        feed(p, data)
    assert info.value.close_code == 1009
    _, p = make_pair(DeflateConfig(), max_size=1024)  # as many as the bound allows: fine
    frames = [client_frame(TEXT, empty, fin=False, rsv1=True)]
    frames += [client_frame(CONT, empty, fin=False) for _ in range(1024 // 16 - 2)]
    assert feed(p, b"".join(frames) + client_frame(CONT, b"\x03\x00")) == [Message("")]


@pytest.mark.parametrize("text, code", [(b"a\xff" + b"a" * 200, 1007), (b"a" * 100 + b"\xff" * 101, 1009),
                                        ("é".encode() * 100, 1009)])
def test_compressed_text_over_max_size_fails_the_same_way_however_it_is_split(text, code):
    """Invalid UTF-8 within max_size is 1007 (§8.1), past it 1009: whole, the frame
    was 1009 before any UTF-8 check, byte by byte 1007 (a helper's differential fuzz)."""
    compressor = zlib.compressobj(wbits=-15)
    payload = (compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = client_frame(TEXT, payload, rsv1=True)
    for chunk in (len(frame), 1, 3):
        _, p = make_pair(DeflateConfig(), max_size=100)
        with pytest.raises(ProtocolError) as info:
            feed(p, frame, chunk=chunk)
        assert info.value.close_code == code, chunk


def test_message_of_16_byte_fragments_up_to_max_size_is_accepted():
    p = Protocol(Side.SERVER, max_size=1024)
    frames = [client_frame(TEXT if i == 0 else CONT, b"\xc3\xa9" * 8, fin=i == 63) for i in range(64)]
    assert feed(p, b"".join(frames)) == [Message("\xe9" * 512)]


def test_fragmented_message_memory_is_bounded_by_max_size():
    # The worst framing for bookkeeping (fragments of MIN_FRAGMENT_COST bytes, arriving
    # one by one) costs about the message's size, not a multiple of it.
    max_size = 1 << 20
    for opcode in (TEXT, BINARY):
        p = Protocol(Side.SERVER, max_size=max_size)
        count = max_size // 16
        frames = [client_frame(opcode if i == 0 else CONT, b"abcdefghijklmnop", fin=i == count - 1)
                  for i in range(count)]
        tracemalloc.start()
        try:
            events = []
            for frame in frames:
                events += feed(p, frame)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(events) == 1 and len(events[0].data) == max_size
        assert peak < 3 * max_size, peak  # it was ~57x for 1-byte fragments


def test_streaming_mode_gives_fragments():
    p = server()
    p.streaming = True
    events = feed(p, client_frame(TEXT, b"ab", fin=False) + client_frame(CONT, b"cd"))
    assert events == [Fragment("ab", False), Fragment("cd", True)]
    assert feed(p, client_frame(TEXT, b"whole")) == [Message("whole")]  # streaming was for one message


def test_take_partial_switches_to_streaming():
    p = server()
    feed(p, client_frame(BINARY, b"ab", fin=False))
    assert p.take_partial() == b"ab"
    assert feed(p, client_frame(CONT, b"cd")) == [Fragment(b"cd", True)]


def test_binary_frame_arriving_in_pieces_comes_out_whole_and_streaming_gets_pieces():
    payload = bytes(range(256)) * 64
    frame = client_frame(BINARY, payload)
    p = server()
    for i in range(0, len(frame) - 1, 1000):
        assert feed(p, frame[i:min(i + 1000, len(frame) - 1)]) == []
    assert not p._parts and len(p._buf) == len(payload) - 1  # kept whole, not copied out
    assert feed(p, frame[len(frame) - 1:]) == [Message(payload)]
    # a text frame is decoded as it arrives (invalid UTF-8 fails fast, §8.1): see above
    p = server()
    p.streaming = True  # recv_streaming(): each piece as it arrives
    pieces = feed(p, frame[:5000]) + feed(p, frame[5000:])
    assert [type(e) for e in pieces] == [Fragment, Fragment] and pieces[-1].last
    assert b"".join(e.data for e in pieces) == payload
    p = server()  # switched to streaming in the middle of the frame: nothing is lost
    assert feed(p, frame[:5000]) == []
    assert not p.take_partial()
    p.streaming = True
    pieces = feed(p, b"") + feed(p, frame[5000:])
    assert b"".join(e.data for e in pieces) == payload and pieces[-1].last


def test_eof_closes():
    p = server()
    p.receive_eof()
    assert p.state is State.CLOSED


def test_client_frames_are_masked_with_fresh_keys():
    client, _ = make_pair()
    a = frames_of(client, TEXT, b"same")
    b = frames_of(client, TEXT, b"same")
    assert a[1] & 0x80 and b[1] & 0x80
    assert a != b or a[2:6] != b[2:6]


def test_large_payload_returned_apart_from_its_header():
    client, srv = make_pair()
    buffers = srv.send_data(BINARY, bytes(100000))
    assert len(buffers) == 2 and len(buffers[1]) == 100000


def test_a_clients_large_payload_is_masked_piece_by_piece_and_arrives_whole():
    client, srv = make_pair(max_size=None)
    payload = random.Random(3).randbytes(2 * MASK_PIECE + 5)
    buffers = iter(client.send_data(BINARY, payload))
    header = next(buffers)  # nothing masked yet: the pieces come as the writer takes them
    pieces = list(buffers)
    assert len(pieces) == 3 and [len(p) for p in pieces] == [MASK_PIECE, MASK_PIECE, 5]
    assert feed(srv, header + b"".join(pieces), chunk=100_000) == [Message(payload)]
    small = client.send_data(BINARY, bytes(MASK_PIECE))  # up to a piece: masked at once
    assert isinstance(small, list) and len(small) == 2


# ---------------------------------------------------------------- pair harness

DEFLATE_CONFIGS = [None] + [
    DeflateConfig(server_no_context_takeover=snct, client_no_context_takeover=cnct,
                  server_max_window_bits=sbits, client_max_window_bits=cbits)
    for snct in (False, True) for cnct in (False, True)
    for sbits in (None, 8, 9, 12, 15) for cbits in (True, None, 8, 10, 15)
]


def random_message(rng):
    size = rng.choice([0, 1, 2, 125, 126, 127, 1000, 65535, 65536, 70000])
    if rng.random() < 0.5:
        alphabet = "ab€😀 κόσμε{}\":,"
        return "".join(rng.choice(alphabet) for _ in range(size // 4))
    if rng.random() < 0.5:
        return bytes(rng.getrandbits(8) for _ in range(min(size, 2000))) + bytes(max(0, size - 2000))
    return (b"compressible " * (size // 13 + 1))[:size]


def send_message(sender, message, fragments=1):
    opcode = TEXT if isinstance(message, str) else BINARY
    data = message.encode() if isinstance(message, str) else message
    step = max(1, -(-len(data) // fragments))
    pieces = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
    out = b""
    for index, piece in enumerate(pieces):
        out += frames_of(sender, opcode if index == 0 else CONT, piece, index == len(pieces) - 1)
    return out


@pytest.mark.parametrize("index", range(len(DEFLATE_CONFIGS)))
def test_seeded_random_round_trips(index):
    """parse(serialize(m)) == m both ways, for every permessage-deflate parameter
    combination, whole and fragmented, fed in random chunk sizes."""
    config = DEFLATE_CONFIGS[index]
    rng = random.Random(index)
    client, srv = make_pair(config, max_size=None)
    for _ in range(12):
        message = random_message(rng)
        sender, receiver = (client, srv) if rng.random() < 0.5 else (srv, client)
        wire = send_message(sender, message, fragments=rng.choice([1, 1, 2, 5]))
        chunk = rng.choice([None, 1, 7, 4096]) if len(wire) < 20000 else rng.choice([None, 4096])
        assert feed(receiver, wire, chunk) == [Message(message)]


def test_pair_in_one_byte_chunks_with_control_frames():
    client, srv = make_pair(DeflateConfig())
    wire = send_message(client, "hello " * 50, fragments=3) + client.send_ping(b"p")
    wire += send_message(client, b"\x00\x01" * 100) + client.send_close(1000, "done")
    events = feed(srv, wire, chunk=1)
    assert events == [Message("hello " * 50), Ping(b"p"), Message(b"\x00\x01" * 100), Close(1000, "done")]
    answers = replies(srv)
    assert feed(client, answers, chunk=1) == [Pong(b"p", (b"p",)), Close(1000, "")]
    assert client.state is State.CLOSED and srv.state is State.CLOSED


# ------------------------------------------------- the closing policy (RFC 6455 §7)

def test_client_initiated_close_both_sides():
    client, srv = make_pair()
    assert not client.closing and not srv.closing
    events = feed(srv, client.send_close(1000, "bye"))
    assert events == [Close(1000, "bye")] and srv.closing
    assert not srv.eof_due  # its echo is not out yet
    echo = replies(srv)
    assert srv.eof_due and srv.handshake_done  # §7.1.1: the server closes TCP now
    assert feed(client, echo) == [Close(1000, "")]
    assert client.handshake_done and not client.eof_due  # a client waits for the server
    for side in (client, srv):
        exc = side.close_exc()
        assert type(exc) is ConnectionClosedOK and exc.__cause__ is None
    assert (client.close_exc().code, srv.close_exc().code) == (1000, 1000)


def test_server_initiated_close_both_sides():
    client, srv = make_pair()
    feed(client, srv.send_close(1001, "going away"))
    assert not srv.eof_due  # the client's answer is not in yet
    feed(srv, replies(client))
    assert srv.eof_due and srv.handshake_done
    first, second = client.close_exc(), client.close_exc()
    assert first is not second  # a new instance each time (a raised one keeps a traceback)
    assert type(first) is ConnectionClosedOK and (first.code, first.reason) == (1001, "going away")


def test_close_with_an_error_code_is_an_error_on_both_sides():
    client, srv = make_pair()
    feed(srv, client.send_close(4001, "no"))
    feed(client, replies(srv))
    for side in (client, srv):
        assert type(side.close_exc()) is ConnectionClosedError and side.close_exc().code == 4001


def test_failure_queues_the_close_discards_input_and_chains_the_violation():
    client, srv = make_pair()
    with pytest.raises(ProtocolError) as info:
        feed(srv, client_frame(TEXT, b"\xff"))  # §8.1: invalid UTF-8
    assert srv.closing and srv.failed == (1007, str(info.value))
    assert not srv.eof_due  # the failing close is not out yet
    assert feed(client, replies(srv)) == [Close(1007, str(info.value))]
    assert srv.eof_due and not srv.handshake_done  # §7.1.7: close TCP after failing
    assert feed(srv, frames_of(client, TEXT, b"later")) == []  # discarded
    exc = srv.close_exc()
    assert type(exc) is ConnectionClosedError and exc.code == 1007
    assert exc.__cause__ is info.value


def test_input_after_the_peers_close_frame_is_discarded():
    client, srv = make_pair()
    data = client.send_close(1000) + frames_of(client, TEXT, b"after close")
    assert feed(srv, data) == [Close(1000, "")]
    assert feed(srv, frames_of(client, TEXT, b"more")) == []


@pytest.mark.parametrize("code, frame", [(1011, True), (1001, True), (1006, False)])
def test_local_failure_sends_its_code_except_1006(code, frame):
    # a keepalive ping timeout (1011), a shutdown (1001), a lost connection (1006)
    client, srv = make_pair()
    srv.fail(code, "local reason")
    srv.fail(1002, "a second failure changes nothing")
    sent = replies(srv)
    assert (sent != b"") is frame
    if frame:
        assert feed(client, sent) == [Close(code, "local reason")]
    assert srv.close_exc().code == code and srv.close_exc().reason == "local reason"
    assert srv.eof_due is frame  # with no close frame there is nothing to wait for: TCP is cut


def test_a_timeout_after_a_completed_handshake_is_still_a_clean_close():
    client, srv = make_pair()
    feed(client, srv.send_close(1000))
    feed(srv, replies(client))
    client.fail(1006, "close timeout")  # the server's TCP close never came
    assert type(client.close_exc()) is ConnectionClosedOK


def test_a_close_timeout_without_the_peers_close_is_1006():
    client, _ = make_pair()
    client.send_close(1000)
    client.fail(1006, "close timeout")
    exc = client.close_exc()
    assert type(exc) is ConnectionClosedError and (exc.code, exc.reason) == (1006, "close timeout")


def read_straight_in(protocol, data, step=100_000):
    """Write ``data`` into ``protocol.direct`` as a socket's recv_into() would, in
    reads of ``step`` bytes; returns what did not fit."""
    while data and protocol.direct is not None:
        size = min(step, len(protocol.direct), len(data))
        protocol.direct[:size] = data[:size]
        protocol.received_direct(size)
        data = data[size:]
    return data


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
def test_a_large_plain_frame_is_read_straight_into_its_buffer(side):
    payload = random.Random(5).randbytes(3 << 20)
    sender = Protocol(Side.CLIENT if side is Side.SERVER else Side.SERVER, max_size=None)
    frame = frames_of(sender, BINARY, payload)
    p = Protocol(side, max_size=None)
    assert p.direct is None
    assert feed(p, frame[:5000]) == []  # the header and the first bytes, the usual way
    assert p.direct is not None and p.direct.nbytes == len(frame) - 5000
    assert read_straight_in(p, frame[5000:]) == b""
    assert p.direct is None
    assert feed(p, b"") == [Message(payload)]
    # Each large frame is read into a buffer of its own, its message's bytes (handed out
    # without a copy by the C accelerator); a following small message is parsed as usual.
    assert feed(p, frame[:300]) == [] and p.direct is not None
    buffer = p.direct.obj
    assert type(buffer) is frames.PayloadBuffer
    assert read_straight_in(p, frame[300:]) == b""
    assert feed(p, b"") == [Message(payload)]
    if frames.PayloadBuffer is not frames._PayloadBuffer:
        with pytest.raises(BufferError):  # its bytes are the message's now
            buffer.take()
    assert feed(p, frame[:300]) == [] and p.direct.obj is not buffer
    assert read_straight_in(p, frame[300:], step=4093) == b""  # reads out of the mask's step
    assert feed(p, b"" + frames_of(sender, TEXT, b"after")) == [Message(payload), Message("after")]


def test_bytes_fed_to_receive_data_fill_the_direct_buffer_then_the_next_frames():
    """A feeder that only knows receive_data (tests/pair.py, a fuzzer) gets the same."""
    client, srv = make_pair(max_size=None)
    big, small = bytes(range(256)) * 4096, b"next"
    wire = frames_of(client, BINARY, big) + frames_of(client, BINARY, small) + frames_of(client, TEXT, b"t")
    assert feed(srv, wire, chunk=70_000) == [Message(big), Message(small), Message("t")]
    assert srv.direct is None


def test_frames_that_need_checking_as_they_arrive_are_not_read_straight_in():
    payload = b"x" * (1 << 20)
    p = Protocol(Side.SERVER, max_size=None)
    frame = client_frame(TEXT, payload)  # UTF-8 is checked as it arrives (§8.1)
    assert feed(p, frame[:5000]) == [] and p.direct is None
    assert feed(p, frame[5000:]) == [Message(payload.decode())]
    client, srv = make_pair(DeflateConfig(), max_size=None)  # compressed: inflated as it arrives
    frame = frames_of(client, BINARY, random.Random(1).randbytes(1 << 20))
    assert feed(srv, frame[:5000]) == [] and srv.direct is None
    p = Protocol(Side.SERVER, max_size=None)
    p.streaming = True  # recv_streaming(): the pieces as they arrive
    frame = client_frame(BINARY, payload)
    assert [type(e) for e in feed(p, frame[:5000])] == [Fragment] and p.direct is None


def test_without_max_size_a_claimed_length_past_the_bound_is_not_allocated_at_once():
    """max_size=None: a header claiming 2**45 bytes had its buffer allocated before any
    of them came (MemoryError out of recv(); 2**33: 8 GiB of address space). Past
    DIRECT_MAX_UNLIMITED, memory follows the bytes that arrive."""
    from simplews.protocol import DIRECT_MAX_UNLIMITED
    header = client_frame(BINARY, b"")[:1] + bytes([0xFF]) + (1 << 45).to_bytes(8, "big") + bytes(4)
    p = Protocol(Side.SERVER, max_size=None)
    tracemalloc.start()
    try:
        assert feed(p, header + bytes(300_000)) == [] and p.direct is None
        assert tracemalloc.get_traced_memory()[1] < 2_000_000
    finally:
        tracemalloc.stop()
    size = DIRECT_MAX_UNLIMITED  # up to the bound, read straight in as before
    header = client_frame(BINARY, b"")[:1] + bytes([0xFF]) + size.to_bytes(8, "big") + bytes(4)
    p = Protocol(Side.SERVER, max_size=None)
    assert feed(p, header + bytes(300_000)) == [] and p.direct is not None


def test_switching_to_streaming_during_a_direct_read_loses_nothing():
    payload = random.Random(2).randbytes(1 << 20)
    p = Protocol(Side.SERVER, max_size=None)
    frame = client_frame(BINARY, payload)
    assert feed(p, frame[:5000]) == [] and p.direct is not None
    assert not p.take_partial()  # nothing assembled yet: the frame is still arriving
    p.streaming = True
    assert read_straight_in(p, frame[5000:]) == b""
    assert feed(p, b"") == [Fragment(payload, True)]


def test_a_failure_during_a_direct_read_discards_the_rest():
    p = Protocol(Side.SERVER, max_size=None)
    frame = client_frame(BINARY, bytes(1 << 20))
    assert feed(p, frame[:5000]) == [] and p.direct is not None
    p.fail(1001, "going away")
    assert feed(p, frame[5000:]) == [] and p.next_event() is None
    assert replies(p)[:2] == b"\x88\x0c"


def test_nothing_of_a_large_frame_is_kept_once_its_message_is_out():
    """Bounded memory: a large frame is read into its message's bytes; once the message
    is out, the connection keeps nothing of it (at most max_size while it arrives)."""
    client, srv = make_pair(max_size=None)
    frame = frames_of(client, BINARY, bytes(4 << 20))
    tracemalloc.start()
    try:
        for _ in range(2):
            before = tracemalloc.get_traced_memory()[0]
            assert feed(srv, frame[:5000]) == []
            read_straight_in(srv, frame[5000:])
            arriving = tracemalloc.get_traced_memory()[0] - before  # (the pure-Python buffer is
            assert arriving > 4 << 20 or len(srv._big) == 4 << 20  # a mapping, unseen by tracemalloc)
            assert [type(e) for e in feed(srv, b"")] == [Message]  # (the message is dropped)
            assert tracemalloc.get_traced_memory()[0] - before < 64 * 1024, "kept"
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("seed", range(6))
def test_seeded_streams_with_large_frames_read_any_way(seed):
    """Large and small frames, fragments and control frames, fed through receive_data
    and through ``direct`` in random-sized reads, on both sides: the same events."""
    rng = random.Random(seed)
    for receiving in (Side.SERVER, Side.CLIENT):
        sender = Protocol(Side.CLIENT if receiving is Side.SERVER else Side.SERVER, max_size=None)
        receiver = Protocol(receiving, max_size=None)
        wire, expected = bytearray(), []
        for _ in range(12):
            kind = rng.choice(["large", "small", "fragmented", "ping", "text"])
            size = rng.choice([300_000, 700_000, 1 << 20]) if kind != "small" else rng.randrange(300)
            payload = rng.randbytes(size)
            if kind == "ping":
                wire += sender.send_ping(payload[:8])
                expected.append(Ping(payload[:8]))
            elif kind == "text":
                wire += frames_of(sender, TEXT, b"t" * size)
                expected.append(Message("t" * size))
            elif kind == "fragmented":  # a large first fragment, a pong, a small last one
                wire += frames_of(sender, BINARY, payload, fin=False) + sender.send_pong(b"p")
                wire += frames_of(sender, CONT, b"end")
                expected += [Pong(b"p", ()), Message(payload + b"end")]
            else:
                wire += frames_of(sender, BINARY, payload)
                expected.append(Message(payload))
        events, data = [], bytes(wire)
        while data:
            size = rng.choice([1, 7, 4096, 65536, 262144])
            if receiver.direct is not None and rng.random() < 0.8:
                size = min(size, len(receiver.direct))
                read_straight_in(receiver, data[:size])
            else:
                receiver.receive_data(data[:size])
            data = data[size:]
            event = receiver.next_event()
            while event is not None:
                events.append(event)
                event = receiver.next_event()
        assert events == expected, seed


def _random_wire(rng, client_side):
    """Frames a peer of ``client_side`` might send, good and bad: small messages,
    fragments, control frames, compressed-looking and reserved bits, invalid UTF-8,
    the wrong masking, 16- and 64-bit lengths; sometimes a stray byte."""
    masked = not client_side
    out = b""
    for _ in range(rng.randrange(1, 12)):
        kind = rng.random()
        payload = rng.choice([b"", b"hi", "é😀".encode() * rng.randrange(40), bytes(rng.randrange(300)),
                              b"\xed\xa0\x80", b"\xff\xfe", b"abc\xe2\x82"])
        if kind < 0.45:
            first = rng.choice([0x81, 0x82])
        elif kind < 0.6:
            first = rng.choice([0x01, 0x02, 0x00, 0x80])
        elif kind < 0.75:
            first, payload = rng.choice([0x89, 0x8A]), payload[:125]
        elif kind < 0.8:
            first, payload = 0x88, (1000).to_bytes(2, "big") + payload[:50]
        else:
            first = rng.choice([0xC1, 0xA2, 0x83, 0x09, 0x81, 0x82])
        frame = serialize_frame(Frame(first & 0x0F, payload, fin=bool(first & 0x80), rsv1=bool(first & 0x40),
                                      rsv2=bool(first & 0x20), rsv3=bool(first & 0x10)),
                                mask=masked if rng.random() < 0.95 else not masked)
        out += frame
        if rng.random() < 0.03:
            out += bytes([rng.randrange(256)])
    return out


def _events_of(protocol, wire, chunks):
    """Every event, error (type, close code) and reply of feeding ``wire`` in ``chunks``."""
    seen, at = [], 0
    for size in chunks + [len(wire)]:
        protocol.receive_data(wire[at:at + size])
        at += size
        while True:
            try:
                event = protocol.next_event()
            except ProtocolError as exc:
                seen.append(("error", type(exc).__name__, exc.close_code))
                break
            if event is None:
                break
            seen.append(event)
    # (a client's replies are masked with random keys: compared unmasked)
    sent = [(f.opcode, f.fin, f.rsv1, f.payload) for f in FrameSplitter().feed(replies(protocol), 0.0)]
    return seen, sent, protocol.state


@pytest.mark.parametrize("seed", range(8))
def test_the_c_parser_changes_nothing_a_peer_can_see(seed, monkeypatch):
    """Seeded streams of good and bad frames, in random chunks, through a Protocol with
    the C take_message and one with the Python one: the same events, errors, close
    codes and replies (the C code decides no error: it passes anything odd on)."""
    speedups = pytest.importorskip("simplews._speedups")
    import simplews.frames
    import simplews.protocol
    rng = random.Random(seed)
    for _ in range(150):
        side = rng.choice([Side.CLIENT, Side.SERVER])
        config = rng.choice([None, DeflateConfig()])
        max_size = rng.choice([None, 64, 2 ** 20])
        wire = _random_wire(rng, side is Side.CLIENT)
        chunks = [rng.randrange(1, 40) for _ in range(rng.randrange(4))]
        results = []
        for take in (speedups.take_message, simplews.frames._take_message):
            monkeypatch.setattr(simplews.protocol, "take_message", take)
            client, srv = make_pair(config, max_size=max_size)
            results.append(_events_of(client if side is Side.CLIENT else srv, wire, chunks))
        assert results[0] == results[1], (seed, side, wire[:80])


def test_whole_messages_behind_a_whole_message_come_in_one_call_up_to_room():
    client, srv = make_pair()
    burst = [frames_of(client, TEXT, b"m%d" % i) for i in range(5)]
    ping = client.send_ping(b"p")
    after = [frames_of(client, BINARY, b"a"), frames_of(client, BINARY, b"b" * 300)]
    cut = frames_of(client, TEXT, b"cut")
    srv.receive_data(b"".join(burst) + ping + b"".join(after) + cut[:-1])
    more = []
    assert srv.next_event(more, 3) == Message("m0") and more == [Message("m1"), Message("m2"), Message("m3")]
    more = []
    assert srv.next_event(more, 9) == Message("m4") and more == []  # a control frame stops it
    assert srv.next_event(more, 9) == Ping(b"p") and more == []
    assert srv.next_event(more, 9) == Message(b"a") and more == [Message(b"b" * 300)]
    assert srv.next_event(more, 9) is None and more == [Message(b"b" * 300)]  # half a frame: left
    srv.receive_data(cut[-1:] + frames_of(client, TEXT, b"x") + frames_of(client, TEXT, b"w"))
    more = []
    assert srv.next_event(more, 9) == Message("cut") and more == []  # (the general parser's)
    assert srv.next_event(more, 9) == Message("x") and more == [Message("w")]
    srv.receive_data(frames_of(client, TEXT, b"s") + frames_of(client, TEXT, b"t"))
    more = []
    srv.streaming = True  # recv_streaming(): one event at a time
    assert srv.next_event(more, 9) == Fragment("s", True) and more == []
    srv.streaming = False
    assert srv.next_event(more, 9) == Message("t") and more == []
    srv.send_close(1000)  # closing: one message at a time
    srv.receive_data(frames_of(client, TEXT, b"y") + frames_of(client, TEXT, b"z"))
    assert srv.next_event(more, 9) == Message("y") and more == []
