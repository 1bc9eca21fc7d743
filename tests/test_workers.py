"""Workers (simplews/_workers.py): one thread per item at a time, threads reused."""
from __future__ import annotations

import threading
import time

from simplews._workers import Workers
from conftest import TIMEOUT


class Recorder:
    def __init__(self) -> None:
        self.done = threading.Semaphore(0)
        self.threads = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, item) -> None:
        self.threads.append((item, threading.get_ident(), threading.current_thread().name))
        assert self.release.wait(TIMEOUT)
        self.done.release()


def wait_done(recorder: Recorder, count: int) -> None:
    for _ in range(count):
        assert recorder.done.acquire(timeout=TIMEOUT)


def stop_and_join(workers: Workers) -> None:
    workers.stop()
    for thread in workers.threads():
        thread.join(TIMEOUT)
    assert workers.threads() == []


def wait_until(predicate) -> None:
    """Poll internal state (no event to wait on) within TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def idle_count(workers: Workers) -> int:
    with workers._lock:
        return workers._idle


def wait_idle(workers: Workers, count: int) -> None:
    """Until ``count`` threads are waiting for work (they go idle after the item is done)."""
    wait_until(lambda: idle_count(workers) == count)


def test_a_finished_thread_takes_the_next_item_under_its_new_name():
    recorder = Recorder()
    workers = Workers(recorder, idle_timeout=TIMEOUT)
    assert workers.submit("a", "simplews-a")
    wait_done(recorder, 1)
    wait_idle(workers, 1)
    assert workers.submit("b", "simplews-b")
    wait_done(recorder, 1)
    (_, first, name_a), (_, second, name_b) = recorder.threads
    assert first == second and (name_a, name_b) == ("simplews-a", "simplews-b")
    stop_and_join(workers)
    assert not workers.submit("c", "simplews-c")


def test_concurrent_items_each_get_their_own_thread():
    recorder = Recorder()
    recorder.release.clear()
    workers = Workers(recorder, idle_timeout=TIMEOUT)
    for i in range(5):
        assert workers.submit(i, f"simplews-{i}")
    assert len(workers.threads()) == 5
    recorder.release.set()
    wait_done(recorder, 5)
    assert len({ident for _, ident, _ in recorder.threads}) == 5
    stop_and_join(workers)


def test_at_most_max_idle_threads_wait():
    recorder = Recorder()
    recorder.release.clear()
    workers = Workers(recorder, max_idle=2, idle_timeout=TIMEOUT)
    for i in range(5):
        workers.submit(i, f"simplews-{i}")
    recorder.release.set()
    wait_done(recorder, 5)
    wait_idle(workers, 2)
    wait_until(lambda: len(workers.threads()) == 2)  # the three others exit at once
    assert idle_count(workers) == 2
    stop_and_join(workers)


def test_idle_threads_leave_after_idle_timeout():
    recorder = Recorder()
    workers = Workers(recorder, idle_timeout=0.05)
    workers.submit("a", "simplews-a")
    wait_done(recorder, 1)
    for thread in workers.threads():
        thread.join(TIMEOUT)
    assert workers.threads() == [] and idle_count(workers) == 0
    assert workers.submit("b", "simplews-b")  # a new thread then
    assert len(workers.threads()) == 1
    wait_done(recorder, 1)
    stop_and_join(workers)


def test_stop_ends_idle_threads_at_once():
    recorder = Recorder()
    workers = Workers(recorder, idle_timeout=60)
    for i in range(3):
        workers.submit(i, f"simplews-{i}")
    wait_done(recorder, 3)
    wait_idle(workers, len(workers.threads()))
    stop_and_join(workers)  # would take 60 s if the idle threads did not get the stop
