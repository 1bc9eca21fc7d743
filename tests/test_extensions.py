import threading
import time
import zlib

import pytest

import simplews

from simplews.exceptions import NegotiationError, PayloadTooBig, ProtocolError
from simplews.extensions import (DeflateConfig, DeflateParams, Deflater, Inflater, client_accept,
                                 client_offer, compression_config, parse_extensions, server_accept)
from simplews.frames import Opcode
from simplews.protocol import Message, Protocol, Side
from simplews.testing import FakeServer, RawClient

from support import scaled
from pair import deflate_bomb, feed, frames_of, make_pair


def test_parse_extensions_with_quoted_values():
    header = 'permessage-deflate; client_max_window_bits="10"; server_no_context_takeover, x-foo'
    assert parse_extensions(header) == [
        ("permessage-deflate", [("client_max_window_bits", "10"), ("server_no_context_takeover", None)]),
        ("x-foo", []),
    ]


@pytest.mark.parametrize("header", ["permessage-deflate; =1", "per message", 'pmd; a="b c"'])
def test_malformed_extension_headers(header):
    with pytest.raises(NegotiationError):
        parse_extensions(header)


def test_a_padded_parameter_is_refused_in_linear_time():
    """Two \\s* side by side in the parameter pattern: a failing match tried every split
    of a run of spaces (60,000 spaces: 15 s holding the GIL, the server's other
    connections stalled; a 64 KiB header block allows it, before any authentication)."""
    for header in ("permessage-deflate; a" + " " * 60_000 + "x",
                   "permessage-deflate; a =" + " " * 60_000 + '"x'):
        started = time.monotonic()
        with pytest.raises(NegotiationError) as info:
            parse_extensions(header)
        assert time.monotonic() - started < scaled(1)  # (linear: ~10 ms)
        assert len(str(info.value)) < 100  # (the HTTP 400's body quotes a little of it)


def test_default_client_offer():
    assert client_offer(DeflateConfig()) == "permessage-deflate; client_max_window_bits"


def test_full_client_offer():
    config = DeflateConfig(True, True, 10, 11)
    assert client_offer(config) == ("permessage-deflate; server_no_context_takeover; "
                                    "client_no_context_takeover; server_max_window_bits=10; "
                                    "client_max_window_bits=11")


@pytest.mark.parametrize("offer,response,params", [
    ("permessage-deflate", "permessage-deflate", DeflateParams(False, False, 15, 15)),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate", DeflateParams(False, False, 15, 15)),
    ("permessage-deflate; server_no_context_takeover",
     "permessage-deflate; server_no_context_takeover", DeflateParams(True, False, 15, 15)),
    ("permessage-deflate; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover", DeflateParams(False, True, 15, 15)),
    ("permessage-deflate; server_max_window_bits=10",
     "permessage-deflate; server_max_window_bits=10", DeflateParams(False, False, 10, 15)),
    ("permessage-deflate; client_max_window_bits=9", "permessage-deflate",
     DeflateParams(False, False, 15, 9)),
])
def test_server_accepts(offer, response, params):
    assert server_accept(offer, DeflateConfig()) == (response, params)


def test_server_config_asks_for_limits():
    config = DeflateConfig(server_no_context_takeover=True, client_no_context_takeover=True,
                           server_max_window_bits=12, client_max_window_bits=10)
    header, params = server_accept("permessage-deflate; client_max_window_bits", config)
    assert header == ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                      "server_max_window_bits=12; client_max_window_bits=10")
    assert params == DeflateParams(True, True, 12, 10)


@pytest.mark.parametrize("offer", [
    "permessage-deflate; foo", "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; server_max_window_bits", "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16", "permessage-deflate; client_max_window_bits=08",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
])
def test_server_declines_bad_offers(offer):
    assert server_accept(offer, DeflateConfig()) is None


def test_server_takes_the_first_acceptable_offer():
    header = "permessage-deflate; foo, permessage-deflate; server_max_window_bits=9, permessage-deflate"
    assert server_accept(header, DeflateConfig())[0] == "permessage-deflate; server_max_window_bits=9"


@pytest.mark.parametrize("config,response", [
    (DeflateConfig(), "permessage-deflate; client_max_window_bits=16"),
    (DeflateConfig(), "permessage-deflate; client_max_window_bits"),
    (DeflateConfig(client_max_window_bits=None), "permessage-deflate; client_max_window_bits=10"),
    (DeflateConfig(client_max_window_bits=10), "permessage-deflate; client_max_window_bits=11"),
    (DeflateConfig(server_max_window_bits=10), "permessage-deflate"),
    (DeflateConfig(server_max_window_bits=10), "permessage-deflate; server_max_window_bits=11"),
    (DeflateConfig(server_no_context_takeover=True), "permessage-deflate"),
    (DeflateConfig(), "permessage-deflate; foo"),
    (DeflateConfig(), "permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
    (DeflateConfig(), "x-other"),
    (DeflateConfig(), "permessage-deflate, permessage-deflate"),
    (None, "permessage-deflate"),
])
def test_client_refuses_bad_answers(config, response):
    with pytest.raises(NegotiationError):
        client_accept(response, config)


def test_client_accepts_answers():
    assert client_accept(None, DeflateConfig()) is None
    params = client_accept("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                           "server_max_window_bits=10; client_max_window_bits=9", DeflateConfig())
    assert params == DeflateParams(True, True, 9, 10)


# RFC 7692 §7.2.3 examples, as frames received by a client
@pytest.mark.parametrize("wire", [
    bytes([0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]),  # §7.2.3.1
    bytes([0x41, 0x03, 0xF2, 0x48, 0xCD, 0x80, 0x04, 0xC9, 0xC9, 0x07, 0x00]),  # §7.2.3.1 fragmented
    bytes([0xC1, 0x0B, 0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00]),  # §7.2.3.3
    bytes([0xC1, 0x08, 0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00]),  # §7.2.3.4 BFINAL
    bytes([0xC1, 0x0D, 0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xCA, 0xC9, 0xC9,
           0x07, 0x00]),  # §7.2.3.5 two blocks
])
def test_rfc7692_examples(wire):
    client = Protocol(Side.CLIENT, deflate=DeflateParams())
    assert feed(client, wire) == [Message("Hello")]
    # a second message still decodes (after BFINAL, with a fresh context)
    assert feed(client, bytes([0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])) == [Message("Hello")]


def test_rfc7692_shared_window_example():
    """§7.2.3.2: the second "Hello" refers back to the first one."""
    client = Protocol(Side.CLIENT, deflate=DeflateParams())
    wire = bytes([0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00,
                  0xC1, 0x05, 0xF2, 0x00, 0x11, 0x00, 0x00])
    assert feed(client, wire) == [Message("Hello"), Message("Hello")]
    deflater = Deflater(DeflateParams())
    assert deflater.compress(b"Hello", True) == bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
    assert deflater.compress(b"Hello", True) == bytes([0xF2, 0x00, 0x11, 0x00, 0x00])


def test_rfc7692_empty_message():
    """§7.2.3.6: an empty message compresses to a single 0x00 byte."""
    assert Deflater(DeflateParams()).compress(b"", True) == b"\x00"
    client = Protocol(Side.CLIENT, deflate=DeflateParams())
    assert feed(client, bytes([0xC1, 0x01, 0x00])) == [Message("")]


def test_no_context_takeover_resets_the_compressor():
    deflater = Deflater(DeflateParams(local_no_context_takeover=True))
    assert deflater.compress(b"Hello", True) == deflater.compress(b"Hello", True)


def test_window_of_8_bits_sends_uncompressed():
    client, server = make_pair(DeflateConfig(server_max_window_bits=8))
    buffers = server.send_data(1, b"Hello")
    assert not buffers[0][0] & 0x40  # RSV1 clear: not compressed
    assert feed(client, b"".join(buffers)) == [Message("Hello")]


def test_rsv1_on_continuation_fails_1002():
    client = Protocol(Side.CLIENT, deflate=DeflateParams())
    with pytest.raises(ProtocolError) as info:
        feed(client, bytes([0x41, 0x01, 0xF2, 0xC0, 0x01, 0x00]))
    assert info.value.close_code == 1002


def test_invalid_compressed_data_fails_1007():
    client = Protocol(Side.CLIENT, deflate=DeflateParams())
    with pytest.raises(ProtocolError) as info:
        feed(client, bytes([0xC1, 0x03, 0xFF, 0xFF, 0xFF]))
    assert info.value.close_code == 1007


def test_decompression_bomb_refused_with_bounded_memory():
    """A small message that inflates to 1 GiB is refused with 1009 having produced
    no more than max_size + 1 bytes."""
    bomb = deflate_bomb(1 << 30)
    assert len(bomb) < 2 << 20  # ~1 MiB of wire for 1 GiB of output
    assert len(zlib.decompressobj(-15).decompress(bomb[:len(bomb) // 64] + b"\x00\x00\xff\xff")) >= 15 << 20
    inflater = Inflater(DeflateParams())
    assert len(inflater.decompress(bomb, True, 1 << 20)) == (1 << 20) + 1  # too big: the Protocol raises
    client = Protocol(Side.CLIENT, max_size=1 << 20, deflate=DeflateParams())
    frame = bytes([0xC2, 0x7F]) + len(bomb).to_bytes(8, "big") + bomb
    with pytest.raises(PayloadTooBig) as info:
        feed(client, frame, chunk=65536)
    assert info.value.close_code == 1009


BFINAL_HELLO = bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00])  # RFC 7692 §7.2.3.4


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_a_final_block_decodes_however_the_message_is_split(chunk):
    """The §7.2.3.4 example was refused (1007) when its last octet came in a read of
    its own, or a fragment of its own: only one read of the whole frame decoded it."""
    whole = bytes([0xC1, 0x08]) + BFINAL_HELLO
    fragments = bytes([0x41, 0x07]) + BFINAL_HELLO[:7] + bytes([0x80, 0x01]) + BFINAL_HELLO[7:]
    for wire in (whole, fragments):
        client = Protocol(Side.CLIENT, deflate=DeflateParams())
        assert feed(client, wire * 2, chunk) == [Message("Hello")] * 2


@pytest.mark.parametrize("chunk", [None, 1])
@pytest.mark.parametrize("payload", [
    BFINAL_HELLO[:7] + b"JUNK",  # after a final block: was dropped in one read (delivered "Hello")
    bytes([0x00, 0x64, 0x00, 0x9B, 0xFF]) + b"abc",  # a stored block of 100 bytes, 3 of them
    bytes.fromhex("f248cdc9c957f04022cbf3"),  # fixed Huffman codes, cut short
], ids=["more after a final block", "a stored block cut short", "Huffman codes cut short"])
def test_compressed_data_cut_short_or_followed_by_more_fails_1007(payload, chunk):
    """Was: the stored block delivered as b"abc" and the tail we append (00 00 ff ff),
    the cut Huffman data as whatever its codes gave (b"Hello Hel")."""
    client = Protocol(Side.CLIENT, deflate=DeflateParams())
    with pytest.raises(ProtocolError) as info:
        feed(client, bytes([0xC2, len(payload)]) + payload, chunk)
    assert info.value.close_code == 1007


def test_inflater_after_a_final_block_in_an_earlier_fragment():
    # RFC 7692 §7.2.3.4: a stream may end with a BFINAL block; an empty last fragment
    # may follow it. The next message starts a new stream (found by tests/test_fuzz.py).
    params = DeflateParams()
    final = zlib.compressobj(6, zlib.DEFLATED, -15)
    one = final.compress(b"one") + final.flush(zlib.Z_FINISH)
    inflater = Inflater(params)
    assert inflater.decompress(one, False, None) == b"one"
    assert inflater.decompress(b"", True, None) == b""
    fresh = zlib.compressobj(6, zlib.DEFLATED, -15)
    two = fresh.compress(b"two") + fresh.flush(zlib.Z_SYNC_FLUSH)
    assert inflater.decompress(two[:-4], True, None) == b"two"
    # compressed bytes after the final block, within the same message, are invalid (1007)
    assert inflater.decompress(one, False, None) == b"one"
    with pytest.raises(zlib.error):
        inflater.decompress(two[:-4], True, None)


def _threshold_pair(threshold):
    header, server_params = server_accept(client_offer(DeflateConfig()), DeflateConfig())
    client_params = client_accept(header, DeflateConfig())
    return (Protocol(Side.CLIENT, deflate=client_params, compress_threshold=threshold),
            Protocol(Side.SERVER, deflate=server_params, compress_threshold=threshold))


@pytest.mark.parametrize("threshold, size, compressed", [
    (128, 20, False), (128, 127, False), (128, 128, True), (128, 5000, True),
    (0, 1, True), (1024, 500, False), (1024, 1024, True)])
def test_messages_under_the_threshold_go_out_uncompressed(threshold, size, compressed):
    """RFC 7692 §6.1: the sender chooses, message by message; RSV1 says which."""
    client, server = _threshold_pair(threshold)
    for sender, receiver in ((client, server), (server, client)):
        text = "ab" * (size // 2) + "c" * (size % 2)
        wire = frames_of(sender, Opcode.TEXT, text.encode())
        assert bool(wire[0] & 0x40) is compressed
        if size >= 100:
            assert (len(wire) < size) is compressed  # "abab..." compresses well
        assert feed(receiver, wire) == [Message(text)]


def test_a_fragmented_message_is_compressed_whatever_its_first_frame():
    client, server = _threshold_pair(128)
    first = frames_of(client, Opcode.TEXT, b"ab", fin=False)
    assert first[0] & 0x40  # its size is not known yet
    assert feed(server, first + frames_of(client, Opcode.CONT, b"cd")) == [Message("abcd")]


def test_connect_and_serve_send_small_messages_uncompressed_by_default():
    """Over real sockets, both directions: the defaults (DeflateConfig().threshold = 128)
    send a short message without RSV1 and a long one compressed; both arrive intact."""
    long_text = "x" * 300
    with FakeServer(compression="deflate") as fake, simplews.connect(fake.uri, close_timeout=2) as ws:
        peer = fake.accept(timeout=5)
        ws.send("hi")
        ws.send(long_text)
        assert [peer.recv(timeout=5) for _ in range(2)] == ["hi", long_text]
        assert [f.rsv1 for f in peer.frames[:2]] == [False, True]
    server = simplews.serve(lambda ws: [ws.send(m) for m in ws])
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with RawClient(f"ws://127.0.0.1:{server.port}/", compression="deflate") as client:
            client.send("hi")
            client.send(long_text)
            assert [client.recv(timeout=5) for _ in range(2)] == ["hi", long_text]
            assert [f.rsv1 for f in client.frames if f.opcode == Opcode.TEXT] == [False, True]
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.parametrize("config", [
    DeflateConfig(server_max_window_bits=16),  # was: offered / answered on the wire, then 1011
    DeflateConfig(server_max_window_bits=7),
    DeflateConfig(client_max_window_bits=3),
    DeflateConfig(compress_level=12),  # was: 1011 at the first compressed send
    DeflateConfig(mem_level=0),
    DeflateConfig(threshold=-1),
    DeflateConfig(client_max_window_bits=10.0),
])
def test_a_deflate_config_no_peer_could_take_is_refused_at_once(config):
    with pytest.raises(ValueError, match="DeflateConfig"):
        simplews.serve(lambda ws: None, compression=config)
    with pytest.raises(ValueError, match="DeflateConfig"):
        simplews.connect("ws://127.0.0.1:9/", compression=config)  # (before any connection)


def test_the_edges_of_a_deflate_config_are_taken():
    for config in (DeflateConfig(server_max_window_bits=8, client_max_window_bits=8, compress_level=-1,
                                 mem_level=9, threshold=0),
                   DeflateConfig(server_max_window_bits=15, client_max_window_bits=None, compress_level=9,
                                 mem_level=1)):
        assert compression_config(config) is config
