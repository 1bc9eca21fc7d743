"""Threads for the server's connections, reused: a thread whose connection ended waits a
little for the next one instead of exiting, since starting a thread costs more than a
handshake. Each connection still has one thread of its own while it lives."""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, List, Optional, Set, Tuple

__all__ = ["Workers"]


class Workers:
    """Run ``target(item)`` in a thread per item, reusing up to ``max_idle`` idle threads
    for ``idle_timeout`` seconds."""

    def __init__(self, target: Callable[[Any], None], max_idle: int = 8,
                 idle_timeout: float = 5.0) -> None:
        self._target = target
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        # Invariant: threads waiting (or about to wait) on _queue == _idle + items in _queue.
        self._idle = 0
        self._queue: "queue.SimpleQueue[Optional[Tuple[Any, str]]]" = queue.SimpleQueue()
        self._threads: Set[threading.Thread] = set()
        self._stopping = False

    def submit(self, item: Any, name: str) -> bool:
        """Hand ``item`` to an idle thread, or start one; False once stop() was called."""
        with self._lock:
            if self._stopping:
                return False
            if self._idle > 0:
                self._idle -= 1
                thread = None
            else:
                thread = threading.Thread(target=self._run, args=(item,), name=name, daemon=True)
                self._threads.add(thread)
        if thread is None:
            self._queue.put((item, name))
        else:
            thread.start()
        return True

    def threads(self) -> List[threading.Thread]:
        """The live threads (busy or idle)."""
        with self._lock:
            return list(self._threads)

    def stop(self) -> None:
        """Idle threads exit now, busy ones when their item is done; submit() refuses."""
        with self._lock:
            self._stopping = True
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._queue.put(None)

    def _run(self, item: Any) -> None:
        me = threading.current_thread()
        try:
            while True:
                self._target(item)
                task = self._next()
                if task is None:
                    return
                item, me.name = task
        finally:
            with self._lock:
                self._threads.discard(me)

    def _next(self) -> Optional[Tuple[Any, str]]:
        """The next item for this thread, or None if it should exit."""
        with self._lock:
            if self._stopping or self._idle >= self.max_idle:
                return None
            self._idle += 1
        try:
            return self._queue.get(timeout=self.idle_timeout)
        except queue.Empty:
            with self._lock:
                if self._idle > 0:  # nobody claimed a waiting thread: this one leaves
                    self._idle -= 1
                    return None
            return self._queue.get()  # claimed just now: the item is on its way
