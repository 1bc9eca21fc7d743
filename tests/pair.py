"""Test helpers: a client and a server Protocol piping bytes to each other."""
from __future__ import annotations

import zlib
from typing import List, Optional

from simplews.extensions import DeflateConfig, client_accept, client_offer, server_accept
from simplews.protocol import Event, Protocol, Side


def make_pair(config: Optional[DeflateConfig] = None, server_config: Optional[DeflateConfig] = None,
              max_size: Optional[int] = 2 ** 20):
    """A (client, server) pair, with permessage-deflate negotiated through the real
    offer/accept functions when ``config`` is given."""
    client_params = server_params = None
    if config is not None:
        agreed = server_accept(client_offer(config), server_config or DeflateConfig())
        assert agreed is not None
        header, server_params = agreed
        client_params = client_accept(header, config)
    client = Protocol(Side.CLIENT, max_size=max_size, deflate=client_params)
    server = Protocol(Side.SERVER, max_size=max_size, deflate=server_params)
    return client, server


def feed(receiver: Protocol, data: bytes, chunk: Optional[int] = None) -> List[Event]:
    """Feed ``data`` (in chunks of ``chunk`` bytes if given) and collect every event."""
    events: List[Event] = []
    step = chunk or max(1, len(data))
    for start in range(0, len(data), step):
        receiver.receive_data(data[start:start + step])
        while True:
            event = receiver.next_event()
            if event is None:
                break
            events.append(event)
    if not data:
        event = receiver.next_event()
        while event is not None:
            events.append(event)
            event = receiver.next_event()
    return events


def frames_of(protocol: Protocol, opcode: int, data: bytes, fin: bool = True) -> bytes:
    return b"".join(bytes(b) for b in protocol.send_data(opcode, data, fin))


def replies(protocol: Protocol) -> bytes:
    out = b""
    while True:
        frame = protocol.next_reply()
        if frame is None:
            return out
        out += frame


def deflate_bomb(inflated_size: int) -> bytes:
    """A permessage-deflate payload (tail stripped) that inflates to ``inflated_size``
    zero bytes. Sync-flushed segments from a fresh compressor refer only to themselves,
    so one segment repeated is a valid stream; it costs one 1 MiB compression."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return segment * (inflated_size >> 20) + b"\x00"  # a final empty stored block start
