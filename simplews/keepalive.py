"""The one background thread of the process (DESIGN §2), started lazily.

It sends the periodic pings, fails connections whose pong is late, finishes aborted
or closing ones, and reads the sockets nobody reads (pings are answered within a tick
even if the application never calls recv()). Its cost grows with what happens, not
with the number of connections: a timer heap says which connection needs a look next
(a ping, a pong deadline, a close deadline); a selector watches the sockets whose read
lock is free, and a connection whose reader holds it calls watch() as the reader lets
go, so a connection being read costs the thread nothing.
"""
from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import selectors
import threading
import time
from time import monotonic
from typing import Deque, Dict, List, Optional, Protocol, Tuple, cast

from ._io import Flag

__all__ = ["Keepable", "register", "unregister", "watch", "wake", "TICK"]

TICK = 0.05
BATCH = 0.01  # the thread sleeps at least this long: a ping or deadline is this late at most
NEVER = float("inf")
logger = logging.getLogger("simplews.keepalive")


class Keepable(Protocol):
    """What the keepalive thread needs of a connection. None of these may block: they
    take only free locks and write only what the socket takes at once."""

    ping_interval: Optional[float]
    ping_timeout: Optional[float]

    def keepalive_fileno(self) -> int:
        """The socket's descriptor; -1 once closed."""

    def keepalive_tick(self, now: float) -> Optional[float]:
        """Closing chores: None while open with nothing pending, else when to look again."""

    def keepalive_ping(self) -> Optional[Flag]:
        """A ping now if the writer and the socket have room, else None; the Event is
        set by its pong."""

    def bytes_taken(self) -> Optional[int]:
        """While the socket is full, the bytes the peer's TCP has acknowledged so far;
        None while it has room, or where that is not known."""

    def keepalive_timeout(self) -> None:
        """The pong is late: fail the connection with 1011."""

    def wants_idle_reads(self) -> bool:
        """Watch the socket? False if someone reads or the queue is full (then the
        connection calls watch() when that ends)."""

    def read_idle(self) -> bool:
        """Read and handle what arrived; False: stop watching."""


class _Schedule:
    """A connection's keepalive pings, and the time of its live entry in the heap
    (the connection is None once unregistered: stale entries keep no connection)."""

    __slots__ = ("connection", "at", "next_ping", "waiter", "sent_at", "taken", "stuck_since")

    def __init__(self, connection: Keepable, interval: Optional[float], now: float) -> None:
        self.connection: Optional[Keepable] = connection
        self.at = NEVER
        self.next_ping = NEVER if not interval else now + interval
        self.waiter: Optional[Flag] = None
        self.sent_at = 0.0
        self.taken: Optional[int] = None  # while a ping finds the socket full: what TCP
        self.stuck_since = 0.0  # saw the peer take, and since when (_stuck)


_lock = threading.Lock()  # guards the four below; held for a few steps, never across I/O
_schedules: Dict[Keepable, _Schedule] = {}
_heap: List[Tuple[float, int, _Schedule]] = []  # (when, tie-breaker, schedule); stale ones skipped
_order = itertools.count()
_thread: Optional[threading.Thread] = None
_to_watch: Deque[Keepable] = collections.deque()  # appended from any thread without a lock
_gone: Deque[Keepable] = collections.deque()


def register(connection: Keepable) -> None:
    """Look after ``connection`` until it is unregistered; start the thread if needed."""
    global _thread
    schedule = _Schedule(connection, connection.ping_interval, monotonic())
    with _lock:
        _schedules[connection] = schedule
        _push(schedule, schedule.next_ping)
        if _thread is None:
            _thread = threading.Thread(target=_run, name="simplews-keepalive", daemon=True)
            _thread.start()
    _to_watch.append(connection)


def unregister(connection: Keepable) -> None:
    with _lock:
        schedule = _schedules.pop(connection, None)
        if schedule is not None:
            schedule.connection = None
        if len(_heap) > 2 * len(_schedules) + 64:  # mostly stale: rebuild it
            _heap[:] = [e for e in _heap if e[2].connection is not None and e[2].at == e[0]]
            heapq.heapify(_heap)
    _gone.append(connection)


def watch(connection: Keepable) -> None:
    """Watch ``connection``'s socket again (its reader let go); takes effect within a tick."""
    _to_watch.append(connection)


def wake(connection: Keepable, at: float) -> None:
    """Look at ``connection`` at ``at`` (monotonic) at the latest: a close deadline."""
    with _lock:
        schedule = _schedules.get(connection)
        if schedule is not None:
            _push(schedule, at)


def _push(schedule: _Schedule, at: float) -> None:
    if at < schedule.at:  # (_lock held) the entry it replaces becomes stale
        schedule.at = at
        heapq.heappush(_heap, (at, next(_order), schedule))


def _due(connection: Keepable, schedule: _Schedule, now: float) -> float:
    """One connection's turn: its closing chores, then the ping schedule (RFC 6455
    §5.5.2: a ping, and the connection failed with 1011 if its pong is late). Returns
    when to look again."""
    later = connection.keepalive_tick(now)
    if later is not None:
        return later
    timeout, waiter = connection.ping_timeout, schedule.waiter
    if waiter is not None and not waiter.is_set() and timeout is not None:
        if now < schedule.sent_at + timeout:
            return schedule.sent_at + timeout
        connection.keepalive_timeout()
        return now + TICK
    if now < schedule.next_ping:
        return schedule.next_ping
    waiter = connection.keepalive_ping()
    if waiter is None:  # the writer is busy or the socket full: again next tick
        _stuck(connection, schedule, now)
        return now + TICK
    schedule.waiter, schedule.sent_at, schedule.taken = waiter, now, None
    schedule.next_ping = now + (connection.ping_interval or NEVER)
    return min(schedule.next_ping, now + (timeout or NEVER))


def _stuck(connection: Keepable, schedule: _Schedule, now: float) -> None:
    """A ping that finds the socket full while TCP sees the peer take no byte for
    ping_timeout is as late as a pong that does not come: 1011 (a peer reading nothing
    would otherwise keep the connection, and its sender, for ever)."""
    timeout = connection.ping_timeout  # (None: no rule, and no syscalls for it each tick)
    taken = None if timeout is None else connection.bytes_taken()
    if taken is None or taken != schedule.taken:
        schedule.taken, schedule.stuck_since = taken, now
    elif now - schedule.stuck_since >= cast(float, timeout):
        connection.keepalive_timeout()


def _run() -> None:
    global _thread
    selector = selectors.DefaultSelector()
    watched: Dict[Keepable, int] = {}  # connection -> registered file descriptor
    try:
        while True:
            now = monotonic()
            with _lock:
                if not _schedules:
                    _thread = None
                    _to_watch.clear()
                    _gone.clear()
                    return
                due = _pop_due(now)
                # At least BATCH: what falls due meanwhile waits for one wake-up (10,000
                # connections pinged every 20 s: 500 pings/s, 100 wake-ups at most).
                wait = max(BATCH, min(TICK, _heap[0][0] - now)) if _heap else TICK
            while _gone:
                _unwatch(selector, watched, _gone.popleft())
            _run_due(due, watched, now)
            del due  # (no reference to a connection outlives the turn)
            for _ in range(len(_to_watch)):
                _watch(selector, watched, _to_watch.popleft(), read=True)
            if watched:  # (no wait while a connection has input left from its last turn)
                _read_ready(selector, watched, 0.0 if _to_watch else wait)
            else:
                time.sleep(wait)
    finally:
        selector.close()


def _pop_due(now: float) -> List[_Schedule]:
    due = []
    while _heap and _heap[0][0] <= now:  # (_lock held)
        at, _, schedule = heapq.heappop(_heap)
        if schedule.connection is not None and schedule.at == at:
            schedule.at = NEVER
            due.append(schedule)
    return due


def _run_due(due: List[_Schedule], watched: Dict[Keepable, int], now: float) -> None:
    for schedule in due:
        connection = schedule.connection
        if connection is None:
            continue
        try:
            at = _due(connection, schedule, now)
        except Exception:  # one broken connection must not stop the others
            logger.exception("keepalive failed on %r", connection)
            at = now + TICK
        with _lock:
            if schedule.connection is not None:
                _push(schedule, at)
        if connection not in watched:
            _to_watch.append(connection)


def _read_ready(selector: selectors.BaseSelector, watched: Dict[Keepable, int],
                wait: float) -> None:
    for key, _ in selector.select(wait):
        _read(selector, watched, key.data)


def _read(selector: selectors.BaseSelector, watched: Dict[Keepable, int],
          connection: Keepable) -> None:
    try:
        if connection.read_idle():
            return
    except Exception:
        logger.exception("keepalive read failed on %r", connection)
    _unwatch(selector, watched, connection)


def _watch(selector: selectors.BaseSelector, watched: Dict[Keepable, int],
           connection: Keepable, read: bool = False) -> None:
    """Watch the socket; ``read``: and read at once what may be buffered already (a
    reader handing the connection back may leave unparsed input: a ping behind the
    message it returned, say), even if watched already (the socket may not be readable)."""
    if connection in watched:
        if read:
            _read(selector, watched, connection)
        return
    if connection not in _schedules or not connection.wants_idle_reads():
        return
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
    if read:
        _read(selector, watched, connection)


def _unwatch(selector: selectors.BaseSelector, watched: Dict[Keepable, int],
             connection: Keepable) -> None:
    fd = watched.pop(connection, None)
    if fd is not None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            selector.unregister(fd)
