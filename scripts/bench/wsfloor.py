"""The floor of the scale and idle-cpu rows: a thread-per-connection echo server
over raw sockets speaking minimal WebSocket (RFC 6455 handshake and frames, a
4 KiB receive buffer, no validation, no keepalive): the cheapest a Python
thread-per-connection WebSocket server can be. Frames are unmasked with one
integer XOR and echoed with one sendall; a ping gets its pong, a close frame
its echo and the end of the connection. With ``ping_interval``, the cheapest
keepalive too (the idle-cpu row's "floor pinging"): one thread pings every
connection every ``ping_interval`` seconds, woken every 10 ms like simplews',
with one non-blocking send of a 4-byte ping; the connection's thread reads the
pong and drops it."""
from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import socket
import threading
import time
from typing import Any, Callable, Deque, Optional, Tuple

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BUFSIZE = 4096
PING = b"\x89\x04ping"


def handshake(sock: socket.socket) -> bytes:
    """Answer the upgrade request; return the bytes read past it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(BUFSIZE)
        if not chunk:
            raise EOFError
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    key = b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return rest


def echo(sock: socket.socket) -> None:
    """Serve one connection until EOF or a close frame."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rest = handshake(sock)
        buf = bytearray(max(BUFSIZE, len(rest)))
        mv = memoryview(buf)
        have = len(rest)
        buf[:have] = rest
        sendall, recv_into, from_bytes = sock.sendall, sock.recv_into, int.from_bytes
        while True:
            i = 0
            while have - i >= 6:
                b0, size, h = buf[i], buf[i + 1] & 0x7F, 6
                if size == 126:
                    if have - i < 8:
                        break
                    size, h = from_bytes(buf[i + 2:i + 4], "big"), 8
                elif size == 127:
                    if have - i < 14:
                        break
                    size, h = from_bytes(buf[i + 2:i + 10], "big"), 14
                if have - i < h + size:
                    if h + size > len(buf):         # a frame larger than the buffer
                        buf.extend(bytes(h + size - len(buf)))
                        mv = memoryview(buf)
                    break
                mask = bytes(buf[i + h - 4:i + h]) * (size // 4 + 1)
                payload = (from_bytes(mv[i + h:i + h + size], "big")
                           ^ from_bytes(mask[:size], "big")).to_bytes(size, "big")
                i += h + size
                op = b0 & 0x0F
                if op == 9:
                    b0 = 0x8A                       # pong
                elif op == 10:
                    continue
                head = (bytes((b0, size)) if size < 126 else
                        bytes((b0, 126)) + size.to_bytes(2, "big") if size < 65536 else
                        bytes((b0, 127)) + size.to_bytes(8, "big"))
                sendall(head + payload)
                if op == 8:
                    return
            if i:
                mv[:have - i] = mv[i:have]
                have -= i
            n = recv_into(mv[have:])
            if not n:
                return
            have += n
    except (EOFError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def pinger(interval: float) -> Callable[[socket.socket], None]:
    """Start the pinging thread; returns the function that hands it a new connection.
    One interval for all: the queue stays in the order the pings fall due."""
    due: Deque[Tuple[float, socket.socket]] = collections.deque()

    def run() -> None:
        while True:
            time.sleep(0.01)
            now = time.monotonic()
            while due and due[0][0] <= now:
                at, sock = due.popleft()
                try:
                    sock.send(PING, socket.MSG_DONTWAIT)
                except OSError:  # closed, or no room: dropped (a floor, not a keepalive)
                    continue
                due.append((at + interval, sock))

    threading.Thread(target=run, daemon=True).start()
    return lambda sock: due.append((time.monotonic() + interval, sock))


def serve(host: str, ready: Optional[Callable[[int], Any]] = None,
          ping_interval: Optional[float] = None) -> None:
    """Listen on a free port, call ready(port), serve each connection in a thread, forever."""
    add = pinger(ping_interval) if ping_interval else None
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, 0))
    lsock.listen(1024)
    if ready:
        ready(lsock.getsockname()[1])
    while True:
        sock, _ = lsock.accept()
        if add:
            add(sock)
        threading.Thread(target=echo, args=(sock,), daemon=True).start()
