"""The one background thread of the process (DESIGN §2), started lazily.

Every tick (~50 ms) it sends the periodic pings, fails connections whose pong
is late, and finishes aborted or closing connections. Between ticks it waits in
a selector over the connections that nobody is reading, and reads those when
data arrives: pings are answered within a tick even if the application never
calls recv(). A connection whose read lock is taken leaves the selector until
the next tick, so a connection that is being read costs it nothing.
"""
from __future__ import annotations

import contextlib
import logging
import selectors
import threading
import time
from time import monotonic
from typing import Dict, Optional, Protocol

__all__ = ["Keepable", "register", "unregister", "TICK"]

TICK = 0.05
logger = logging.getLogger("simplews.keepalive")


class Keepable(Protocol):
    """What the keepalive thread needs of a connection. None of these may block: they
    take only free locks and write only what the socket takes at once."""

    ping_interval: Optional[float]
    ping_timeout: Optional[float]

    def keepalive_fileno(self) -> int:
        """The socket's descriptor, to wait for data on; -1 once closed."""

    def keepalive_tick(self, now: float) -> bool:
        """Closing chores (pending replies, a close deadline); False once the
        connection is closing or closed: no more pings."""

    def keepalive_ping(self) -> Optional[threading.Event]:
        """Send a ping now if the writer is free and the socket has room, else None;
        the Event is set when its pong arrives."""

    def keepalive_timeout(self) -> None:
        """The pong is late: fail the connection with 1011."""

    def wants_idle_reads(self) -> bool:
        """Should the thread read this connection's socket when data arrives (nobody
        else reads it, and its read-ahead queue has room)?"""

    def read_idle(self) -> bool:
        """Read and handle what arrived; False: stop watching until the next tick."""


class _Schedule:
    """A connection's keepalive pings: when the next is due, the one awaiting its pong."""

    __slots__ = ("next_ping", "waiter", "sent_at")

    def __init__(self, interval: Optional[float], now: float) -> None:
        self.next_ping = None if not interval else now + interval
        self.waiter: Optional[threading.Event] = None
        self.sent_at = 0.0


_lock = threading.Lock()
_connections: Dict[Keepable, _Schedule] = {}
_thread: Optional[threading.Thread] = None


def register(connection: Keepable) -> None:
    """Watch ``connection`` until it is unregistered; start the thread if needed."""
    global _thread
    schedule = _Schedule(connection.ping_interval, monotonic())
    with _lock:
        _connections[connection] = schedule
        if _thread is None:
            _thread = threading.Thread(target=_run, name="simplews-keepalive", daemon=True)
            _thread.start()


def unregister(connection: Keepable) -> None:
    with _lock:
        _connections.pop(connection, None)


def _tick(connection: Keepable, schedule: _Schedule, now: float) -> None:
    """One connection's turn: its closing chores, then the ping schedule (RFC 6455
    §5.5.2: a ping, and the connection failed with 1011 if its pong is late)."""
    if not connection.keepalive_tick(now):
        return
    waiter = schedule.waiter
    if waiter is not None and not waiter.is_set():
        timeout = connection.ping_timeout
        if timeout is not None and now - schedule.sent_at > timeout:
            connection.keepalive_timeout()
        return
    if schedule.next_ping is not None and now >= schedule.next_ping:
        waiter = connection.keepalive_ping()
        if waiter is not None:  # else the writer is busy: try again next tick
            schedule.waiter, schedule.sent_at = waiter, now
            schedule.next_ping = now + (connection.ping_interval or 0)


def _run() -> None:
    global _thread
    selector = selectors.DefaultSelector()
    watched: Dict[Keepable, int] = {}  # connection -> registered file descriptor
    try:
        while True:
            with _lock:
                if not _connections:
                    _thread = None
                    return
                connections = list(_connections.items())
            now = monotonic()
            for connection in list(watched):
                if connection not in _connections or not connection.wants_idle_reads():
                    _unwatch(selector, watched, connection)
            for connection, schedule in connections:
                try:
                    _tick(connection, schedule, now)
                    if connection not in watched and connection.wants_idle_reads():
                        _watch(selector, watched, connection)
                except Exception:  # one broken connection must not stop the others
                    logger.exception("keepalive failed on %r", connection)
            deadline = now + TICK
            while True:
                remaining = deadline - monotonic()
                if remaining <= 0 or not watched:
                    break
                for key, _ in selector.select(remaining):
                    connection = key.data
                    try:
                        if not connection.read_idle():
                            _unwatch(selector, watched, connection)
                    except Exception:
                        logger.exception("keepalive read failed on %r", connection)
                        _unwatch(selector, watched, connection)
            if not watched:
                # Nothing to watch: sleep the rest of the tick on a private event.
                time.sleep(max(0.0, deadline - monotonic()))
    finally:
        selector.close()


def _watch(selector: selectors.BaseSelector, watched: Dict[Keepable, int],
           connection: Keepable) -> None:
    try:
        fd = connection.keepalive_fileno()
    except OSError:
        return
    if fd < 0:
        return
    stale = selector.get_map().get(fd)
    if stale is not None:  # a closed connection's descriptor, now reused
        _unwatch(selector, watched, stale.data)
    try:
        selector.register(fd, selectors.EVENT_READ, connection)
    except OSError:  # EBADF: the connection closed its socket since fileno() above
        return
    watched[connection] = fd


def _unwatch(selector: selectors.BaseSelector, watched: Dict[Keepable, int],
             connection: Keepable) -> None:
    fd = watched.pop(connection, None)
    if fd is not None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            selector.unregister(fd)
