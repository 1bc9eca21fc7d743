"""The server's threads. Idle threads all wait for the next connection; the one that gets
it serves it itself (no hand-off between threads), and run() starts another if none is
left waiting. A thread whose connection ended waits for the next one instead of exiting
(starting a thread costs more than a handshake). A serving thread hands its waiter (an
epoll: a descriptor and three syscalls to make) to the next thread that waits; at most
``max_idle`` are kept so, the rest closed."""
from __future__ import annotations

import enum
import errno
import logging
import threading
from types import FunctionType
from typing import Any, Callable, Dict, List, Literal, Optional, Protocol, Set, Tuple, Union

__all__ = ["Workers", "Waiter", "Task", "STOP"]


class _Stop(enum.Enum):
    STOP = "stop"


STOP = _Stop.STOP  # what a Waiter returns once the server stops
_SHORT_OF = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}  # a waiter may open later
Task = Union[Tuple[Any, str], None, Literal[_Stop.STOP]]


class Waiter(Protocol):
    """One thread's wait for work: ``(item, thread name)``, None after ``timeout``
    seconds without any, or STOP."""

    def wait(self, timeout: float) -> Task: ...

    def close(self) -> None: ...


_STARTED = threading.Event()  # a started thread's start event: set for good
_STARTED.set()
_SHARED: Dict[str, Any] = {"_started": _STARTED}  # by attribute: what every thread shares


def _share_thread_constants(thread: threading.Thread) -> None:
    """A started threading.Thread keeps two things of its own for life that are the same
    for every started thread: the Event start() waited on (a Condition, a lock and a
    deque, ~1.2 KiB), set for good and only read after (is_alive(), join(), repr()), and
    the function that calls threading.excepthook if run() raises (~430 B; it looks the
    hook up when called). Every worker thread shares one of each. They are CPython's
    private attributes: one is left as it is unless it has the type expected."""
    for name, kind in (("_started", threading.Event), ("_invoke_excepthook", FunctionType)):
        own = getattr(thread, name, None)
        if type(own) is kind:
            setattr(thread, name, _SHARED.setdefault(name, own))


class Workers:
    """Threads that each wait with their own ``open_waiter()`` and ``serve(item)`` what
    it returns. At most ``max_idle`` threads stay waiting once done, and a thread idle
    for ``idle_timeout`` seconds leaves, but one always waits until stop()."""

    def __init__(self, open_waiter: Callable[[], Waiter], serve: Callable[[Any], None],
                 max_idle: int = 8, idle_timeout: float = 5.0) -> None:
        self._open_waiter = open_waiter
        self._serve = serve
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work, or about to
        self._threads: Set[threading.Thread] = set()
        self._spare: List[Waiter] = []  # waiters of serving threads, for the next to wait
        self._wanted = threading.Event()  # run() should start a thread
        self._stopped = threading.Event()  # stop() was called (set under _lock)

    def run(self) -> None:
        """Start the first thread, then a new one whenever no thread is left waiting,
        until stop(). Threads are started here, from one long-lived thread (serve_forever's):
        a thread started from another short-lived one costs ~4 KiB more memory."""
        while True:
            with self._lock:
                if self._stopped.is_set():
                    return
                if self._idle == 0:
                    self._spawn()
            self._wanted.wait()
            self._wanted.clear()

    def threads(self) -> List[threading.Thread]:
        """The live threads, serving or waiting."""
        with self._lock:
            return list(self._threads)

    def stop(self) -> None:
        """No new threads, run() returns; each thread exits once its waiter returns STOP
        (the caller makes them do so) or its item is served."""
        with self._lock:
            self._stopped.set()
            spare, self._spare = self._spare, []
        for waiter in spare:
            waiter.close()
        self._wanted.set()

    def _spawn(self) -> None:
        """A new thread, counted as idle from now on (``_lock`` held)."""
        # The target a plain function, not the bound method self._run: Python 3.13 runs a
        # bound method given to Thread in a nested C call (an extra 4 KiB page of stack
        # resident per thread, for life), a function in the same one.
        thread = threading.Thread(target=Workers._run, args=(self,), name="simplews-worker",
                                  daemon=True)
        self._threads.add(thread)
        self._idle += 1
        thread.start()
        _share_thread_constants(thread)

    def _take_waiter(self) -> Waiter:
        with self._lock:
            if self._spare:
                return self._spare.pop()
        return self._open_waiter()

    def _give_back(self, waiter: Waiter) -> None:
        with self._lock:
            if not self._stopped.is_set() and len(self._spare) < self.max_idle:
                self._spare.append(waiter)
                return
        waiter.close()

    def _run(self) -> None:
        me = threading.current_thread()
        waiter: Optional[Waiter] = None
        try:
            while True:
                if waiter is None:
                    try:
                        waiter = self._take_waiter()
                    except (OSError, ValueError) as exc:  # the listening socket is closed already,
                        if getattr(exc, "errno", None) in _SHORT_OF and not self._stopped.is_set():
                            # or no descriptor is free for now (the last waiting thread would
                            # leave none): no traceback (TRY400), the cause is all there is
                            logging.getLogger("simplews.server").error(  # noqa: TRY400
                                "cannot wait for connections: %s; again in 0.1 s", exc)
                            self._stopped.wait(0.1)
                            continue
                        with self._lock:
                            self._idle -= 1
                        return
                task = waiter.wait(self.idle_timeout)
                if task is STOP:
                    return
                with self._lock:
                    if task is None:  # idle for idle_timeout: leave if another waits
                        if self._idle > 1 or self._stopped.is_set():
                            self._idle -= 1
                            return
                        continue
                    self._idle -= 1
                    if self._idle == 0:
                        self._wanted.set()  # the next connection needs a waiting thread
                self._give_back(waiter)  # a serving thread holds no descriptor but its connection's
                waiter = None
                item, me.name = task
                self._serve(item)
                me.name = "simplews-worker"
                with self._lock:
                    if self._stopped.is_set() or self._idle >= self.max_idle:
                        return
                    self._idle += 1
        finally:
            if waiter is not None:
                waiter.close()
            with self._lock:
                self._threads.discard(me)
