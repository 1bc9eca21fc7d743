"""broadcast(): one message to many connections, none of which may stall the others."""
from __future__ import annotations

import logging
from typing import Iterable, List, Union

from .connection import Connection
from .exceptions import ConnectionClosed
from .frames import Opcode, frame_header

__all__ = ["broadcast"]

logger = logging.getLogger("simplews.broadcast")


def broadcast(connections: Iterable[Connection], message: Union[str, bytes, bytearray, memoryview],
              *, write_timeout: float = 1.0) -> List[Connection]:
    """Send ``message`` (str: text, bytes-like: binary) to every connection that can take
    it now, and return those that did not; e.g. ``broadcast(server.connections, "news")``
    (``Server.connections``: a copy of the set of a server's open connections).

    Policy: never wait for one connection. A connection is skipped, left open and
    without this message, when it cannot take the message at once: another thread is
    sending on it, its socket's send buffer is full (a client that reads slowly or not
    at all), or it is closing or closed. A message that has started to go out cannot be
    withdrawn: if its write stalls for ``write_timeout`` seconds, the connection is
    closed (1006). Skipped and closed connections are returned and logged (INFO,
    logger "simplews.broadcast"); the caller may close the ones that keep lagging.

    The message is framed once and the same bytes go to every server connection
    without compression; client connections (masked) and compressed ones (RFC 7692)
    frame it themselves. It is sent in one frame.
    """
    if isinstance(message, str):
        opcode, data = Opcode.TEXT, message.encode("utf-8")
    else:
        opcode, data = Opcode.BINARY, bytes(message)
    frame = [frame_header(opcode, len(data)) + data]  # RFC 6455 §5.2: FIN, not masked
    skipped = []
    for connection in connections:
        try:
            sent = connection._send_now(opcode, data, frame, write_timeout)
        except ConnectionClosed:
            sent = False
        if not sent:
            skipped.append(connection)
    if skipped:
        logger.info("broadcast skipped %d connection(s): %s", len(skipped),
                    ", ".join(repr(c) for c in skipped[:10]) + (", ..." if len(skipped) > 10 else ""))
    return skipped
