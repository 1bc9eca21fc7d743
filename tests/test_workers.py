"""Workers (simplews/_workers.py): idle threads wait together, the one that gets an
item serves it itself; one thread per item at a time, threads reused."""
from __future__ import annotations

import errno
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from simplews._workers import STOP, Workers, _share_thread_constants
from conftest import TIMEOUT


class Pool:
    """Workers whose waiters share a queue (the "listening socket"), recording who
    served what."""

    def __init__(self, **options) -> None:
        self.items: "queue.Queue" = queue.Queue()
        self.done = threading.Semaphore(0)
        self.served = []  # (item, thread ident, thread name)
        self.taken_by = []  # the thread whose waiter returned each item
        self.waiters_closed = 0
        self.waiters_opened = 0
        self.release = threading.Event()
        self.release.set()
        self.workers = Workers(self.open_waiter, self.serve, **options)
        self.spawned_from = []  # the thread that started each worker thread
        spawn = self.workers._spawn

        def recording_spawn():
            self.spawned_from.append(threading.get_ident())
            spawn()

        self.workers._spawn = recording_spawn
        self.runner = threading.Thread(target=self.workers.run)  # serve_forever()'s part
        self.runner.start()

    def open_waiter(self):
        pool = self
        pool.waiters_opened += 1

        class QueueWaiter:
            def wait(self, timeout):
                try:
                    item = pool.items.get(timeout=timeout)
                except queue.Empty:
                    return None
                if item is STOP:
                    pool.items.put(STOP)  # for the other waiters too
                    return STOP
                pool.taken_by.append(threading.get_ident())
                return item, f"simplews-{item}"

            def close(self):
                pool.waiters_closed += 1

        return QueueWaiter()

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
        self.workers.stop()
        self.items.put(STOP)  # what the server's wake-up socket does for its waiters
        self.runner.join(TIMEOUT)
        assert not self.runner.is_alive()
        for thread in self.workers.threads():
            thread.join(TIMEOUT)
        assert self.workers.threads() == []


@pytest.fixture
def make_pool():
    """Pool(**options), stopped and joined at the end of the test even if it failed
    (its runner thread is not a daemon: left running, it would hold pytest's exit)."""
    pools = []

    def make(**options) -> Pool:
        pools.append(Pool(**options))
        return pools[-1]

    yield make
    for pool in pools:
        pool.release.set()
        pool.stop_and_join()


def wait_until(predicate) -> None:
    """Poll internal state (no event to wait on) within TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def idle(workers: Workers) -> int:
    with workers._lock:
        return workers._idle


def test_the_thread_that_gets_an_item_serves_it_and_threads_are_reused(make_pool):
    pool = make_pool(idle_timeout=TIMEOUT)
    pool.release.clear()
    pool.feed("a")
    # while a is served, run() starts a thread to wait instead
    wait_until(lambda: pool.served and idle(pool.workers) == 1)
    pool.release.set()
    pool.wait_done(1)
    wait_until(lambda: idle(pool.workers) == 2)  # a's thread waits again
    pool.feed("b")
    pool.wait_done(1)
    (_, first, name_a), (_, second, name_b) = pool.served
    assert pool.taken_by == [first, second]  # no hand-off between waiting and serving
    assert (name_a, name_b) == ("simplews-a", "simplews-b")
    assert len(pool.workers.threads()) == 2  # b found another waiting thread: none started
    pool.stop_and_join()
    # a thread hands its waiter on before it serves (no descriptor held per connection
    # beyond its own): the thread run() started while a was served waited with a's
    # waiter; a's thread opened a second one to wait again. All closed at the end.
    assert pool.waiters_opened == pool.waiters_closed == 2


def test_concurrent_items_each_get_their_own_thread(make_pool):
    pool = make_pool(idle_timeout=TIMEOUT)
    pool.release.clear()
    pool.feed(*range(5))
    wait_until(lambda: len(pool.served) == 5)
    wait_until(lambda: idle(pool.workers) == 1)  # and run() started one more to wait
    assert len(pool.workers.threads()) == 6
    pool.release.set()
    pool.wait_done(5)
    assert len({ident for _, ident, _ in pool.served}) == 5
    pool.stop_and_join()


def test_worker_threads_share_one_start_event_and_still_behave_as_threads(make_pool):
    # threading.Thread keeps the Event that start() waited on (a Condition, a lock and a
    # deque, ~1.2 KiB) and an excepthook caller (~430 B) for the thread's life: one of
    # each per idle connection of a server.
    pool = make_pool(idle_timeout=TIMEOUT)
    pool.release.clear()
    pool.feed("a", "b")
    wait_until(lambda: len(pool.served) == 2 and idle(pool.workers) == 1)
    threads = pool.workers.threads()
    assert len(threads) == 3 and len({id(thread._started) for thread in threads}) == 1
    assert len({id(thread._invoke_excepthook) for thread in threads}) == 1
    for thread in threads:  # what reads the start event works as before
        assert thread.is_alive() and "started" in repr(thread)
        with pytest.raises(RuntimeError):
            thread.daemon = False  # "cannot set daemon status of active thread"
    pool.release.set()
    pool.wait_done(2)
    pool.stop_and_join()  # join() each, and none is alive after
    assert not any(thread.is_alive() for thread in threads)
    assert "stopped" in repr(threads[0])


def test_a_worker_thread_that_raises_reaches_threading_excepthook(make_pool, monkeypatch):
    caught = queue.Queue()
    monkeypatch.setattr(threading, "excepthook", lambda args: caught.put(args))
    pool = make_pool(idle_timeout=TIMEOUT)
    serve = pool.serve

    def serve_or_raise(item):
        serve(item)
        if item == "boom":
            raise KeyError(item)

    pool.workers._serve = serve_or_raise
    pool.release.clear()
    pool.feed("a", "boom")  # two threads: the second shares the first's excepthook caller
    wait_until(lambda: len(pool.served) == 2)
    pool.release.set()
    args = caught.get(timeout=TIMEOUT)
    served_by = {item: ident for item, ident, _ in pool.served}
    assert args.exc_type is KeyError and args.thread.ident == served_by["boom"]
    assert args.thread.name == "simplews-boom"


FORK_WHILE_SERVING = """
import os, threading, simplews
server = simplews.serve(lambda ws: [ws.send(m) for m in ws], "127.0.0.1", 0)
threading.Thread(target=server.serve_forever, daemon=True).start()
clients = [simplews.connect(f"ws://127.0.0.1:{server.port}/") for _ in range(3)]
workers = [t for t in threading.enumerate() if t.name.startswith("simplews-1")]
assert len(workers) == 3, workers
pid = os.fork()
if pid == 0:  # the child: threading's after-fork reset goes through the shared event
    ok = not any(t.is_alive() for t in workers) and "stopped" in repr(workers[0])
    fresh = threading.Thread(target=lambda: None)
    fresh.start()
    fresh.join(10)
    os._exit(0 if ok and not fresh.is_alive() and fresh._started is not workers[0]._started else 1)
_, status = os.waitpid(pid, 0)
echoed = []
for ws in clients:
    ws.send("after fork")
    echoed.append(ws.recv(timeout=10))
    ws.close()
server.shutdown()
print(os.waitstatus_to_exitcode(status), echoed == ["after fork"] * 3)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")
def test_a_process_forked_while_serving_resets_its_threads_and_serves_on():
    # In a fresh interpreter (fork() in this one, with its threads, is unsafe).
    result = subprocess.run([sys.executable, "-c", FORK_WHILE_SERVING], capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.split() == ["0", "True"], result.stderr


def test_what_threading_did_not_make_as_expected_is_left_alone():
    thread = threading.Thread(target=lambda: None)
    thread._started = marker = object()  # as a later Python might have it
    thread._invoke_excepthook = hook = print
    _share_thread_constants(thread)
    assert thread._started is marker and thread._invoke_excepthook is hook
    plain = threading.Thread(target=lambda: None)
    plain.start()
    own = plain._started
    _share_thread_constants(plain)
    assert plain._started is not own and plain._started.is_set()
    plain.join(TIMEOUT)
    assert not plain.is_alive()


def test_at_most_max_idle_threads_stay(make_pool):
    pool = make_pool(max_idle=2, idle_timeout=TIMEOUT)
    pool.serve_at_once(*range(5))
    wait_until(lambda: len(pool.workers.threads()) == 2)  # the four others exit at once
    assert idle(pool.workers) == 2
    pool.stop_and_join()


def test_serving_threads_hold_no_waiter_and_at_most_max_idle_are_kept_spare(make_pool):
    pool = make_pool(max_idle=2, idle_timeout=TIMEOUT)
    pool.release.clear()
    pool.feed(*range(5))
    wait_until(lambda: len(pool.served) == 5 and idle(pool.workers) == 1)
    # five served, one thread waiting: its waiter and at most two spare ones are open
    assert pool.waiters_opened - pool.waiters_closed <= 1 + 2
    pool.release.set()
    pool.wait_done(5)
    wait_until(lambda: len(pool.workers.threads()) == 2 and idle(pool.workers) == 2)
    opened = pool.waiters_opened
    for item in range(5, 15):  # one after the other: the waiters go round, none is made
        pool.feed(item)
        pool.wait_done(1)
    assert pool.waiters_opened == opened
    pool.stop_and_join()
    assert pool.waiters_opened == pool.waiters_closed


def test_stop_closes_the_spare_waiter_of_a_thread_still_serving(make_pool):
    pool = make_pool(idle_timeout=TIMEOUT)
    pool.serve_at_once("first")
    wait_until(lambda: idle(pool.workers) == 2)  # two threads wait, each with its waiter
    pool.release.clear()
    pool.feed("slow")  # its thread hands its waiter on: the other thread has one already
    wait_until(lambda: len(pool.served) == 2)
    assert pool.waiters_opened - pool.waiters_closed == 2  # one waiting, one spare
    pool.workers.stop()
    pool.items.put(STOP)
    pool.release.set()  # the slow item ends after stop(): its thread exits
    pool.wait_done(1)
    pool.stop_and_join()
    assert pool.waiters_opened == pool.waiters_closed


def test_idle_threads_leave_after_idle_timeout_but_one_always_waits(make_pool):
    pool = make_pool(idle_timeout=0.05)
    pool.serve_at_once(1, 2, 3)
    wait_until(lambda: len(pool.workers.threads()) == 1)
    assert idle(pool.workers) == 1
    pool.feed("late")
    pool.wait_done(1)
    assert pool.served[-1][0] == "late"
    pool.stop_and_join()


def test_stop_ends_waiting_threads_at_once(make_pool):
    pool = make_pool(idle_timeout=60)
    pool.serve_at_once(1, 2, 3)
    wait_until(lambda: idle(pool.workers) >= 3)  # all waiting (a fourth, if run() was quick)
    started = time.monotonic()
    pool.stop_and_join()  # would take 60 s if the waiting threads did not get the stop
    assert time.monotonic() - started < TIMEOUT


def test_a_stopped_pool_starts_nothing(make_pool):
    pool = make_pool(idle_timeout=TIMEOUT)
    pool.stop_and_join()
    pool.workers.run()  # returns at once
    assert pool.workers.threads() == []


def test_threads_are_started_by_the_thread_in_run(make_pool):
    pool = make_pool(idle_timeout=TIMEOUT)
    pool.serve_at_once(1, 2, 3)
    wait_until(lambda: len(pool.spawned_from) == 4)  # three served, one more to wait
    assert set(pool.spawned_from) == {pool.runner.ident}
    pool.stop_and_join()


def test_a_thread_whose_waiter_cannot_open_leaves_quietly(monkeypatch):
    failures = []
    monkeypatch.setattr(threading, "excepthook", failures.append)

    opened = []

    def open_waiter():
        opened.append(threading.current_thread())
        raise OSError(9, "Bad file descriptor")  # the server closed its socket meanwhile

    workers = Workers(open_waiter, lambda item: None)
    runner = threading.Thread(target=workers.run)
    runner.start()
    wait_until(lambda: opened and not workers.threads())
    assert idle(workers) == 0
    workers.stop()
    runner.join(TIMEOUT)
    assert not runner.is_alive() and failures == []


def test_a_thread_short_of_descriptors_waits_and_tries_again(caplog):
    """EMFILE at the waiter's epoll made the only waiting thread leave without asking for
    another: the server stayed up and accepted nothing, with nothing logged."""
    attempts, served = [], threading.Event()

    class Once:
        def __init__(self):
            self.given = False

        def wait(self, timeout):
            if self.given:
                return STOP if served.wait(TIMEOUT) else None
            self.given = True
            return "item", "simplews-item"

        def close(self):
            pass

    def open_waiter():
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise OSError(errno.EMFILE, "Too many open files")
        return Once()

    workers = Workers(open_waiter, lambda item: served.set())
    runner = threading.Thread(target=workers.run)
    runner.start()
    try:
        assert served.wait(TIMEOUT)  # served once a descriptor was free
        assert len(attempts) >= 3
        assert "cannot wait for connections: [Errno 24]" in caplog.text
    finally:
        workers.stop()
        runner.join(TIMEOUT)
    assert not runner.is_alive()
