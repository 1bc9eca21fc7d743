"""The server's threads: they take turns accepting (leader/follower). The thread whose
turn it is waits for a connection, passes the turn on as soon as it has one, and runs
that connection itself: the handshake starts in the thread that accepted it, with no
hand-off between threads in its way. A thread whose connection ended waits for its
next turn instead of exiting (starting a thread costs more than a handshake); each
connection still has one thread of its own while it lives."""
from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional, Set, Tuple

__all__ = ["Workers"]

Accept = Callable[[], Optional[Tuple[Any, str]]]


class Workers:
    """Threads that call ``accept()`` in turn, one at a time, and ``serve(item)`` on
    what it returns (an ``(item, thread name)`` pair; None ends that thread). At most
    ``max_idle`` threads wait for a turn, each for ``idle_timeout`` seconds at most;
    there is always one that accepts until stop()."""

    def __init__(self, accept: Accept, serve: Callable[[Any], None], max_idle: int = 8,
                 idle_timeout: float = 5.0) -> None:
        self._accept = accept
        self._serve = serve
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._turn = threading.Lock()  # held by the thread in accept()
        self._lock = threading.Lock()
        self._waiting = 0  # threads waiting for the turn, or about to
        self._accepting = False  # a thread holds the turn
        self._threads: Set[threading.Thread] = set()
        self._stopping = False

    def start(self) -> None:
        """Start the first thread, which takes the turn."""
        with self._lock:
            if not self._stopping:
                self._spawn()

    def threads(self) -> List[threading.Thread]:
        """The live threads (serving, accepting or waiting for a turn)."""
        with self._lock:
            return list(self._threads)

    def stop(self, timeout: Optional[float] = None) -> None:
        """No more turns: the thread in accept() (whose ``accept`` must return None
        soon) and the waiting threads exit; the serving ones when their item is done.
        Returns once nobody is in accept(), or after ``timeout``."""
        with self._lock:
            self._stopping = True
        if self._turn.acquire(timeout=-1 if timeout is None else timeout):
            self._turn.release()  # the waiting threads take it in turn, and leave

    def _spawn(self) -> None:
        """A new thread, counted as waiting from now on (``_lock`` held)."""
        thread = threading.Thread(target=self._run, name="simplews-worker", daemon=True)
        self._threads.add(thread)
        self._waiting += 1
        thread.start()

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                task = self._take_turn()
                if task is None:
                    return
                item, me.name = task
                self._serve(item)
                me.name = "simplews-worker"
                with self._lock:
                    if self._stopping or self._waiting >= self.max_idle:
                        return
                    self._waiting += 1
        finally:
            with self._lock:
                self._threads.discard(me)

    def _take_turn(self) -> Optional[Tuple[Any, str]]:
        """Wait for the turn (counted in ``_waiting``), accept, pass the turn on; None
        when this thread should exit."""
        if not self._turn.acquire(timeout=self.idle_timeout):
            with self._lock:
                # Leave unless the turn was passed on counting on this thread.
                if self._stopping or self._waiting > 1 or self._accepting:
                    self._waiting -= 1
                    return None
            self._turn.acquire()  # free, or about to be
        task = None
        try:
            with self._lock:
                self._waiting -= 1
                if self._stopping:
                    return None
                self._accepting = True
            task = self._accept()
        finally:
            with self._lock:
                self._accepting = False
                if task is not None and self._waiting == 0 and not self._stopping:
                    self._spawn()  # the next turn needs a thread
            self._turn.release()
        return task
