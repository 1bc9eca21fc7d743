"""Socket helpers shared by connect() and serve(): the handshake's bounded reads."""
from __future__ import annotations

import socket
from time import monotonic
from typing import Callable, Optional, Tuple, TypeVar

T = TypeVar("T")


def read_head(sock: socket.socket, parse: Callable[[bytearray], Optional[Tuple[T, int]]],
              deadline: float) -> Tuple[T, bytes]:
    """Read until ``parse`` finds a complete HTTP head; return it and the bytes after it.
    The socket is not shared yet, so a per-call timeout is safe here."""
    buffer = bytearray()
    while True:
        parsed = parse(buffer)
        if parsed is not None:
            head, size = parsed
            return head, bytes(buffer[size:])
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out during the opening handshake")
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:  # not a TimeoutError subclass before Python 3.10
            raise TimeoutError("timed out during the opening handshake") from None
        if not data:
            raise EOFError("connection closed during the opening handshake")
        buffer += data


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY: small frames go out at once. Not a TCP socket (Unix): nothing to do."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def open_unix_socket(path: str, *, listen_backlog: Optional[int] = None,
                timeout: Optional[float] = None) -> socket.socket:
    """A Unix stream socket connected to ``path`` or, with ``listen_backlog``, listening there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if listen_backlog is None:
            sock.settimeout(timeout)
            sock.connect(path)
        else:
            sock.bind(path)
            sock.listen(listen_backlog)
    except BaseException:
        sock.close()
        raise
    return sock
