"""The one background thread of the process (DESIGN §2), started lazily.

Every tick (~50 ms) it sends the periodic pings, fails connections whose pong
is late, and finishes aborted or closing connections. Between ticks it waits in
a selector over the connections that nobody is reading, and reads those when
data arrives: pings are answered within a tick even if the application never
calls recv(). A connection whose read lock is taken leaves the selector until
the next tick, so a connection that is being read costs it nothing.
"""
from __future__ import annotations

import logging
import selectors
import threading
import time
from time import monotonic
from typing import TYPE_CHECKING, Dict, Optional, Set

if TYPE_CHECKING:  # pragma: no cover
    from .connection import Connection

__all__ = ["register", "unregister", "TICK"]

TICK = 0.05
logger = logging.getLogger("simplews.keepalive")

_lock = threading.Lock()
_connections: Set["Connection"] = set()
_thread: Optional[threading.Thread] = None


def register(connection: "Connection") -> None:
    """Watch ``connection`` until it is unregistered; start the thread if needed."""
    global _thread
    with _lock:
        _connections.add(connection)
        if _thread is None:
            _thread = threading.Thread(target=_run, name="simplews-keepalive", daemon=True)
            _thread.start()


def unregister(connection: "Connection") -> None:
    with _lock:
        _connections.discard(connection)


def _run() -> None:
    global _thread
    selector = selectors.DefaultSelector()
    watched: Dict["Connection", int] = {}  # connection -> registered file descriptor
    try:
        while True:
            with _lock:
                if not _connections:
                    _thread = None
                    return
                connections = list(_connections)
            now = monotonic()
            for connection in list(watched):
                if connection not in _connections or not connection.wants_idle_reads():
                    _unwatch(selector, watched, connection)
            for connection in connections:
                try:
                    connection.keepalive_tick(now)
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


def _watch(selector: selectors.BaseSelector, watched: Dict["Connection", int],
           connection: "Connection") -> None:
    try:
        fd = connection.socket.fileno()
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


def _unwatch(selector: selectors.BaseSelector, watched: Dict["Connection", int],
             connection: "Connection") -> None:
    fd = watched.pop(connection, None)
    if fd is not None:
        try:
            selector.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass
