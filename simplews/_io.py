"""Socket helpers shared by connect(), serve() and Connection: the handshake's bounded
reads and writes, waits on a socket."""
from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import ssl
import sys
import threading
from time import monotonic
from typing import Any, Callable, List, Optional, Tuple, TypeVar

T = TypeVar("T")
_HAS_POLL = hasattr(select, "poll")
_TCP_INFO = getattr(socket, "TCP_INFO", 0) if sys.platform.startswith("linux") else 0  # (its layout: Linux's)
LONGEST_WAIT = 2_147_483.0  # s (24.8 days): poll() takes at most 2**31 - 1 ms (no wait is longer)


def read_head(sock: socket.socket, parse: Callable[[bytearray], Optional[Tuple[T, int]]],
              deadline: float, *, sent: bool = False) -> Tuple[T, bytes]:
    """Read until ``parse`` finds a complete HTTP head; return it and the bytes after it.
    The socket is not shared yet: a plain one is waited for with poll and read without
    blocking, a TLS one (whose records may come in parts) read under a timeout.
    ``sent``: the head is likely there already (a request, as a server accepts): read
    before waiting, one syscall less."""
    tls = isinstance(sock, ssl.SSLSocket)
    buffer = bytearray()
    while True:
        remaining = deadline - monotonic()
        try:
            if remaining <= 0:
                raise socket.timeout
            if tls:
                sock.settimeout(remaining)
                data = sock.recv(65536)
            elif sent or wait_readable(sock, remaining):
                sent = False  # (nothing there: BlockingIOError, then wait)
                data = sock.recv(65536, socket.MSG_DONTWAIT)
            else:
                raise socket.timeout
        except socket.timeout:  # not a TimeoutError subclass before Python 3.10
            raise TimeoutError("timed out during the opening handshake") from None
        except (BlockingIOError, InterruptedError):
            continue
        if not data:
            raise EOFError("connection closed during the opening handshake")
        buffer += data
        parsed = parse(buffer)
        if parsed is not None:
            head, size = parsed
            return head, bytes(buffer[size:])


def send_head(sock: socket.socket, data: bytes, deadline: Optional[float]) -> None:
    """Write an HTTP head before ``deadline`` (None: no limit), like read_head(): a plain
    socket without blocking, waiting with poll only if its buffer is full (one syscall
    in the usual case), a TLS one under a timeout."""
    remaining = None if deadline is None else deadline - monotonic()
    try:
        if remaining is not None and remaining <= 0:
            raise socket.timeout
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(remaining)
            sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view, socket.MSG_DONTWAIT):]
            except (BlockingIOError, InterruptedError):
                remaining = None if deadline is None else deadline - monotonic()
                if not wait_writable(sock, LONGEST_WAIT if remaining is None else remaining):
                    raise socket.timeout from None
    except socket.timeout:
        raise TimeoutError("timed out during the opening handshake") from None


class Flag:
    """A one-shot event, lighter than threading.Event (one lock, no Condition): the
    lock is held from creation until set() releases it for good."""

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._hold()

    @classmethod
    def make(cls) -> Flag:
        """Flag(), one C stack level shallower (Python 3.11 runs a class's __init__ in a
        nested call, Python functions inline): for Connection.__init__, which is nested
        already; there the lock's acquire() would touch one more page of each server
        thread's stack, 4 KiB resident per connection."""
        flag = object.__new__(cls)
        flag._hold()
        return flag

    def _hold(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Set the flag; call it once (the caller serializes)."""
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._lock.release()
        return self._set


class Deadline:
    """A point in monotonic time, or none (wait forever: also for LONGEST_WAIT or more,
    which no wait takes); ``Deadline(0)`` has passed already: whoever gets it must not block."""

    __slots__ = ("at",)

    def __init__(self, timeout: Optional[float]) -> None:
        self.at = None if timeout is None or timeout >= LONGEST_WAIT else monotonic() + timeout

    def remaining(self) -> Optional[float]:
        """Seconds left (0 or more), or None for no limit."""
        return None if self.at is None else max(0.0, self.at - monotonic())

    def passed(self) -> bool:
        return self.at is not None and monotonic() >= self.at

    def lock_timeout(self) -> float:
        """For Lock.acquire(timeout=...): -1 for no limit."""
        remaining = self.remaining()
        return -1 if remaining is None else remaining


NOW = Deadline(0)


def data_ready(sock: socket.socket, deadline: Deadline) -> bool:
    """Would reading ``sock`` return data or EOF without waiting past ``deadline``?
    TLS-aware: decrypted bytes already pending count; once the deadline has passed, a
    TLS socket counts only when a whole record (or EOF) waits in the kernel, peeked on
    the raw socket, so that a peer sending half a record cannot block the caller (valid
    while the raw stream is at a record boundary: see Transport._recv_now).
    Raises the socket's error, if a peek finds one (a peek consumes it)."""
    tls = False
    if isinstance(sock, ssl.SSLSocket):
        if sock.pending():
            return True
        tls = True
    remaining = deadline.remaining()
    if remaining is None:
        return True  # the caller may block
    if remaining > 0 or not tls:
        return wait_readable(sock, remaining)
    flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
    try:
        head = socket.socket.recv(sock, 5, flags)
        if len(head) < 5:
            return not head  # b"" is EOF: reading returns at once
        size = 5 + int.from_bytes(head[3:5], "big")
        return len(socket.socket.recv(sock, size, flags)) >= size
    except BlockingIOError:
        return False


def recv_now(sock: socket.socket, buffer: Any) -> Optional[int]:
    """Read what is there without waiting; None if nothing is. A TLS socket is made
    non-blocking for the read: the caller makes sure no other thread does I/O on it
    meanwhile."""
    try:
        if not isinstance(sock, ssl.SSLSocket):
            return sock.recv_into(buffer, 0, socket.MSG_DONTWAIT)
        sock.setblocking(False)
        try:
            return sock.recv_into(buffer)
        finally:
            sock.setblocking(True)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return None


def wait_readable(sock: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds (LONGEST_WAIT at most) for ``sock`` to be readable
    (no fd limit with poll)."""
    fd = sock.fileno()
    if fd < 0:
        return True  # closed meanwhile: the I/O call that follows reports it
    if _HAS_POLL:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    return bool(select.select([sock], [], [], max(0.0, timeout))[0])  # pragma: no cover


def wait_writable(sock: socket.socket, timeout: float) -> bool:
    """Could ``sock`` take a small write within ``timeout`` seconds without blocking?"""
    fd = sock.fileno()
    if fd < 0:
        return True  # closed meanwhile: the I/O call that follows reports it
    if _HAS_POLL:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    return bool(select.select([], [sock], [], max(0.0, timeout))[1])  # pragma: no cover


def bytes_acked(sock: socket.socket) -> Optional[int]:
    """How many bytes the peer's TCP has acknowledged (Linux: tcp_info's tcpi_bytes_acked,
    since 4.1); None where that is not known (a Unix socket, another system)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 128) if _TCP_INFO else b""
    except OSError:
        return None
    return int.from_bytes(info[120:128], sys.byteorder) if len(info) == 128 else None


def peer_address(sock: socket.socket) -> Any:
    """The peer's address, or None once TCP is reset (getpeername(): ENOTCONN)."""
    try:
        return sock.getpeername()
    except OSError:
        return None


def socket_addresses(sock: socket.socket) -> Tuple[Any, Any]:
    """(local, peer) addresses. CPython formats each with getnameinfo(), which takes a few
    KiB of C stack: a server calls this where its thread's stack is shallow (not in an
    __init__), or the page it touches stays resident for the connection's life. What
    connections have in common is shared (a connection keeps its addresses): the host
    strings, and the local address equal to the last one (a server's, usually)."""
    local = sock.getsockname()
    last = _last_local[0]
    if local != last:
        _last_local[0] = last = _shared_host(local)
    return last, _shared_host(peer_address(sock))


_last_local: List[Any] = [None]


def _shared_host(address: Any) -> Any:
    return (sys.intern(address[0]), *address[1:]) if isinstance(address, tuple) else address


_TCP_CLOSE = 7  # Linux's tcpi_state once an RST ended the connection (CLOSE_WAIT, 8, after a FIN)


def reset_by_peer(sock: socket.socket) -> Optional[OSError]:
    """ECONNRESET if the peer reset TCP, else None; for an end of stream that ssl reports
    as a plain EOF (Python 3.10+ reads with SSL_read_ex and loses the reset's errno). The
    kernel's TCP state tells a reset from a FIN (Linux's TCP_INFO; elsewhere: None)."""
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]  # tcpi_state
    except (AttributeError, OSError):  # no TCP_INFO here, or not TCP (a Unix socket)
        return None
    if state != _TCP_CLOSE:
        return None
    return ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))


def nothing_unread(sock: socket.socket) -> bool:
    """Has the peer sent nothing that waits unread (or reset the connection)?"""
    try:
        return not socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # BlockingIOError: nothing pending; else reset: nothing to wait for
        return True


def format_address(address: Any) -> str:
    """``host:port`` (``[host]:port`` for IPv6) for logs; a Unix socket's path (a client's
    is empty: "unix socket"); None: a peer gone already."""
    if address is None:
        return "a peer gone already"
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address) or "unix socket"


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY: small frames go out at once. Not a TCP socket (Unix): nothing to do."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def open_tcp_socket(host: str, port: int, timeout: Optional[float]) -> socket.socket:
    """socket.create_connection(), without its name lookup when ``host`` is an IP
    address: getaddrinfo() costs more than a connect on loopback."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):  # not an address of this family (or NUL inside)
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection((host, port), timeout=timeout)


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
