"""Raw-TCP floor for the WebSocket benchmark (scripts/bench.py).

The same workloads as the WebSocket libraries, over plain blocking sockets
with a 5-byte prefix (1-byte type + 4-byte big-endian length), written to be
as fast as Python allows: TCP_NODELAY, ``recv_into`` one reusable buffer,
payloads handed out as memoryview slices (copied once into the ``bytes`` /
``str`` the caller gets, like a WebSocket ``recv()`` does), small frames sent
with one ``sendall`` of header + payload, large ones with two ``sendall``
calls and no concatenation copy.

The receive buffer is an anonymous mmap: its pages cost memory only once
touched, so an idle connection costs little more than its thread (the floor
of the idle row).

The "deflate" variant compresses every message like permessage-deflate with
the settings simplews negotiates by default between its client and server
(read from simplews.extensions.DeflateConfig(): raw deflate, 32 KiB window (15
bits) each way, level 2, memLevel 8, context takeover both ways, Z_SYNC_FLUSH
with the 4-byte tail stripped), on both sides: the deflate row's zlib floor.

The server is thread-per-connection and echoes each message as it is
parsed, straight out of the receive buffer (no copy, no UTF-8 decoding).
"""
from __future__ import annotations

import contextlib
import mmap
import socket
import struct
import threading
import zlib
from typing import Any, Callable, Optional, Tuple, Union

HDR = struct.Struct("!BI")
T_TEXT = 1
T_BIN = 2
F_Z = 0x40          # payload is deflated
BUFSIZE = 256 * 1024
SMALL = 64 * 1024   # below this, header + payload go out in one sendall
TAIL = b"\x00\x00\xff\xff"


def simplews_deflate() -> Tuple[int, int, int]:
    """(level, window bits, memLevel) of simplews' default permessage-deflate: a
    client's default offer ("client_max_window_bits" without a value) accepted by a
    server's default DeflateConfig leaves both windows at 15 bits."""
    try:
        from simplews.extensions import DeflateConfig
    except ImportError:
        return 2, 15, 8
    c = DeflateConfig()
    return c.compress_level, c.server_max_window_bits or 15, c.mem_level


LEVEL, WBITS, MEMLEVEL = simplews_deflate()


Data = Union[bytes, bytearray, memoryview]


class EOF(Exception):
    """The peer closed the connection."""


class FloorConn:
    """One framed connection. ``recv``/``send_*`` may run in two threads."""

    def __init__(self, sock: socket.socket, deflate: bool = False) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.sendall = sock.sendall
        self.recv_into = sock.recv_into
        self.buf = mmap.mmap(-1, BUFSIZE)
        self.mv = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.deflate = deflate
        if deflate:
            self.comp = zlib.compressobj(LEVEL, zlib.DEFLATED, -WBITS, MEMLEVEL)
            self.decomp = zlib.decompressobj(-15)

    # -- reading ---------------------------------------------------------
    def _fill(self, need: int) -> None:
        """Make sure ``need`` bytes are buffered from self.start on."""
        start, end, mv = self.start, self.end, self.mv
        if start + need > BUFSIZE:          # compact (need <= BUFSIZE here)
            n = end - start
            mv[:n] = mv[start:end]
            start, end = 0, n
        recv_into = self.recv_into
        while end - start < need:
            n = recv_into(mv[end:])
            if not n:
                self.start, self.end = start, end
                raise EOF()
            end += n
        self.start, self.end = start, end

    def _read_frame(self) -> Tuple[int, Union[memoryview, bytearray]]:
        """Return (type, payload) with payload a memoryview into the buffer
        (valid until the next read) or a fresh bytearray for large frames."""
        if self.end - self.start < 5:
            self._fill(5)
        start = self.start
        t, n = HDR.unpack_from(self.buf, start)
        total = n + 5
        if total <= BUFSIZE:
            if self.end - start < total:
                self._fill(total)
                start = self.start
            self.start = start + total
            return t, self.mv[start + 5:start + total]
        # large frame: read it straight into its own buffer
        payload = bytearray(n)
        pmv = memoryview(payload)
        have = self.end - start - 5
        pmv[:have] = self.mv[start + 5:self.end]
        self.start = self.end = 0
        recv_into = self.recv_into
        while have < n:
            k = recv_into(pmv[have:])
            if not k:
                raise EOF()
            have += k
        return t, payload

    def recv(self) -> Union[str, bytes, bytearray]:
        """The next message: str for text, bytes (bytearray if large) for binary."""
        t, payload = self._read_frame()
        if t & F_Z:
            d = self.decomp
            data = d.decompress(payload) + d.decompress(TAIL)
            return data.decode() if t & 3 == T_TEXT else data
        if t == T_TEXT:
            return str(payload, "utf-8")
        return payload if type(payload) is bytearray else bytes(payload)

    # -- writing ---------------------------------------------------------
    def _send(self, t: int, data: Data) -> None:
        if self.deflate:
            c = self.comp
            data = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
            data = memoryview(data)[:-4]
            t |= F_Z
        n = len(data)
        if n < SMALL:
            self.sendall(HDR.pack(t, n) + data)
        else:
            self.sendall(HDR.pack(t, n))
            self.sendall(data)

    def send_text(self, s: str) -> None:
        self._send(T_TEXT, s.encode())

    def send_bin(self, b: Data) -> None:
        self._send(T_BIN, b)

    def send(self, msg: Union[str, Data]) -> None:
        if isinstance(msg, str):
            self._send(T_TEXT, msg.encode())
        else:
            self._send(T_BIN, msg)

    def close(self) -> None:
        """Clean close: half-close, wait for the peer's EOF, close."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()


def connect(host: str, port: int, deflate: bool = False) -> FloorConn:
    """A client connection to a floor server."""
    sock = socket.create_connection((host, port))
    return FloorConn(sock, deflate)


# -- server ---------------------------------------------------------------
def _echo(sock: socket.socket, deflate: bool) -> None:
    """Serve one connection: echo each frame as it is parsed."""
    conn = FloorConn(sock, deflate)
    try:
        if deflate:
            recv, send = conn.recv, conn.send
            while True:
                send(recv())
        sendall = conn.sendall
        read_frame = conn._read_frame
        mv = conn.mv
        while True:
            t, payload = read_frame()
            if type(payload) is bytearray:
                sendall(HDR.pack(t, len(payload)))
                sendall(payload)
            else:
                # header + payload are contiguous in the receive buffer
                sendall(mv[conn.start - len(payload) - 5:conn.start])
    except (EOF, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def serve(host: str = "127.0.0.1", port: int = 0, deflate: bool = False,
          ready: Optional[Callable[[int], Any]] = None) -> None:
    """Listen, call ready(port), then serve each connection in a thread, forever."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(1024)
    if ready:
        ready(lsock.getsockname()[1])
    while True:
        sock, _ = lsock.accept()
        threading.Thread(target=_echo, args=(sock, deflate), daemon=True).start()
