"""Workers (simplews/_workers.py): threads take turns accepting and serve what they
accepted themselves; one thread per item at a time, threads reused."""
from __future__ import annotations

import queue
import threading
import time

from simplews._workers import Workers
from conftest import TIMEOUT

STOP = object()


class Pool:
    """Workers fed from a queue (the "listening socket"), recording who served what."""

    def __init__(self, **options) -> None:
        self.items: "queue.Queue" = queue.Queue()
        self.done = threading.Semaphore(0)
        self.served = []  # (item, thread ident, thread name)
        self.accepted_by = []  # thread ident of each accept() that returned an item
        self.release = threading.Event()
        self.release.set()
        self.workers = Workers(self.accept, self.serve, **options)
        self.workers.start()

    def accept(self):
        item = self.items.get()
        if item is STOP:
            return None
        self.accepted_by.append(threading.get_ident())
        return item, f"simplews-{item}"

    def serve(self, item) -> None:
        self.served.append((item, threading.get_ident(), threading.current_thread().name))
        assert self.release.wait(TIMEOUT)
        self.done.release()

    def feed(self, *items) -> None:
        for item in items:
            self.items.put(item)

    def wait_done(self, count: int) -> None:
        for _ in range(count):
            assert self.done.acquire(timeout=TIMEOUT)

    def serve_at_once(self, *items) -> None:
        """Serve ``items`` concurrently: each has its thread until all are served."""
        self.release.clear()
        self.feed(*items)
        wait_until(lambda: len(self.served) == len(items))
        self.release.set()
        self.wait_done(len(items))

    def stop_and_join(self) -> None:
        self.items.put(STOP)  # what the server's wake-up socket does for its accept()
        self.workers.stop(TIMEOUT)
        for thread in self.workers.threads():
            thread.join(TIMEOUT)
        assert self.workers.threads() == []


def wait_until(predicate) -> None:
    """Poll internal state (no event to wait on) within TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def waiting(workers: Workers) -> int:
    with workers._lock:
        return workers._waiting


def test_the_thread_that_accepts_serves_and_a_finished_thread_is_reused():
    pool = Pool(idle_timeout=TIMEOUT)
    pool.feed("a")
    pool.wait_done(1)
    wait_until(lambda: waiting(pool.workers) == 1)  # the other thread holds the turn
    pool.feed("b")
    pool.wait_done(1)
    (_, first, name_a), (_, second, name_b) = pool.served
    assert pool.accepted_by == [first, second]  # no hand-off between accept and serve
    assert (name_a, name_b) == ("simplews-a", "simplews-b")
    assert len(pool.workers.threads()) == 2  # a took the turn back after b's accept
    pool.stop_and_join()


def test_concurrent_items_each_get_their_own_thread():
    pool = Pool(idle_timeout=TIMEOUT)
    pool.release.clear()
    pool.feed(*range(5))
    wait_until(lambda: len(pool.served) == 5)
    assert len(pool.workers.threads()) == 6  # five serving, one accepting
    pool.release.set()
    pool.wait_done(5)
    assert len({ident for _, ident, _ in pool.served}) == 5
    pool.stop_and_join()


def test_at_most_max_idle_threads_wait_for_a_turn():
    pool = Pool(max_idle=2, idle_timeout=TIMEOUT)
    pool.serve_at_once(*range(5))
    # two wait for the turn, one holds it; the three others exit at once
    wait_until(lambda: len(pool.workers.threads()) == 3)
    assert waiting(pool.workers) == 2
    pool.stop_and_join()


def test_idle_threads_leave_after_idle_timeout_but_one_always_accepts():
    pool = Pool(idle_timeout=0.05)
    pool.serve_at_once(1, 2, 3)
    wait_until(lambda: len(pool.workers.threads()) == 1)  # the one in accept()
    assert waiting(pool.workers) == 0
    pool.feed("late")
    pool.wait_done(1)
    assert pool.served[-1][0] == "late"
    pool.stop_and_join()


def test_stop_ends_waiting_threads_at_once():
    pool = Pool(idle_timeout=60)
    pool.serve_at_once(1, 2, 3)
    wait_until(lambda: waiting(pool.workers) == 3)
    started = time.monotonic()
    pool.stop_and_join()  # would take 60 s if the waiting threads did not get the stop
    assert time.monotonic() - started < TIMEOUT


def test_a_stopped_pool_starts_nothing():
    pool = Pool(idle_timeout=TIMEOUT)
    pool.stop_and_join()
    pool.workers.start()
    assert pool.workers.threads() == []
